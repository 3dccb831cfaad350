"""The Ray Tune trainable: one trial, on one worker or data-parallel on several. The top
of ``trainables``: the only module of the package that imports Ray.

The trial's hyperparameters are resolved once, here, from the sampler's suggestion; the
loop and the method receive them checked.

With one worker the Tune function trains in its own process. With several, it is a
coordinator: it fits a Ray Train ``TorchTrainer`` (the Train V2 pattern of a trainer
launched from inside a Tune function) whose workers run the same generic loop under
DistributedDataParallel, NCCL on GPUs and gloo on CPUs, and ``TuneReportCallback`` passes
rank 0's reports back to Tune, so the scheduler and the searcher see one trial.

Either way a trial writes one MLflow run: its id travels with every checkpoint, and a
retried or resumed trial continues that run (or finds it by trial id if it failed before
its first checkpoint) instead of starting another.
"""

from __future__ import annotations

import tempfile
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import ray
import torch

from search_spaces import CrossMethodSpace
from tracking import schema
from tracking.runs import TrialRun, find_trial_run
from trainables.data import ImageDataset
from trainables.distributed import Collective
from trainables.hyperparameters import Hyperparameters, resolve_trial
from trainables.logs import quiet_ray_logs
from trainables.loop import EpochResult
from trainables.pretrain import pretrain
from trainables.recording import (
    TrialSettings,
    create_run,
    pretrain_recorded,
    record_epoch,
    reopen_run,
)

CHECKPOINT_FILE = "state.pt"
RUN_ID_KEY = "mlflow_run_id"


@dataclass(frozen=True)
class DatasetHandle:
    """The study's dataset in Ray's object store: put once by the driver, read by every
    trial and every worker without reloading or copying it.

    Ray maps numpy arrays of the object store into every process of a node (zero-copy
    deserialisation) but deserialises a torch tensor into a private copy per process, so
    N concurrent trials would hold N copies. The tensors therefore travel as numpy arrays,
    each distinct tensor once (the labelled train split is usually the pretraining set
    itself), and become tensors again over the shared, read-only memory; the core never
    writes into a dataset's tensors (batches are gathered copies).
    """

    ref: ray.ObjectRef

    @classmethod
    def put(cls, dataset: ImageDataset) -> DatasetHandle:
        arrays: list[np.ndarray] = []
        positions: dict[int, int] = {}
        parts: dict[str, Any] = {}
        for field in fields(dataset):
            value = getattr(dataset, field.name)
            if isinstance(value, torch.Tensor):
                if id(value) not in positions:
                    positions[id(value)] = len(arrays)
                    arrays.append(value.numpy())
                value = _Stored(positions[id(value)])
            parts[field.name] = value
        return cls(ray.put((parts, arrays)))

    def get(self) -> ImageDataset:
        parts, arrays = ray.get(self.ref)
        with warnings.catch_warnings():
            # The arrays are read-only views of the object store; torch warns that writing
            # through them is undefined, and nothing writes through them.
            warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
            tensors = [torch.from_numpy(array) for array in arrays]
        return ImageDataset(**{
            name: tensors[value.position] if isinstance(value, _Stored) else value
            for name, value in parts.items()
        })


@dataclass(frozen=True)
class _Stored:
    """Where a dataset field's tensor is among the arrays of a ``DatasetHandle``."""

    position: int


def _load_checkpoint(checkpoint: Any) -> tuple[dict[str, Any] | None, str | None]:
    if checkpoint is None:
        return None, None
    with checkpoint.as_directory() as directory:
        state = torch.load(Path(directory) / CHECKPOINT_FILE, weights_only=True)
    return state, state.pop(RUN_ID_KEY)


def _open_run(
    settings: TrialSettings,
    dataset: ImageDataset,
    hyperparameters: Hyperparameters,
    trial_id: str,
    run_id: str | None,
    extra_tags: Mapping[str, str] | None = None,
) -> TrialRun:
    """This trial's MLflow run: the checkpoint's, else one an earlier attempt created,
    else a new one."""
    run_id = run_id or find_trial_run(settings.tracking, trial_id)
    if run_id is not None:
        run = reopen_run(settings, dataset, hyperparameters, run_id)
    else:
        run = create_run(settings, dataset, hyperparameters, trial_id,
                         name=f"{settings.method}-{trial_id}", extra_tags=extra_tags)
    # Which Ray node ran (or resumed) the trial, for debugging a cluster.
    run.set_tag(schema.TAG_RAY_NODE, ray.get_runtime_context().get_node_id())
    return run


def _checkpointing_report(
    run: TrialRun | None, send: Callable[[dict[str, float], Any], None], is_writer: bool,
    dataset: ImageDataset, settings: TrialSettings,
) -> Callable[[EpochResult], None]:
    """A loop reporter that logs every epoch (and the final encoder) to MLflow and, at
    evaluations, hands the metrics a scheduler may see (training statistics and validation
    scores, never a test-split score) and, from the writing rank only, a checkpoint to
    ``send``."""
    from ray import tune

    def report(result: EpochResult) -> None:
        if run is not None:
            record_epoch(run, result, dataset, settings)
        if not result.evaluated:
            return
        with tempfile.TemporaryDirectory() as directory:
            checkpoint = None
            if is_writer:
                state = {**result.state(), RUN_ID_KEY: run.run_id if run else ""}
                torch.save(state, Path(directory) / CHECKPOINT_FILE)
                checkpoint = tune.Checkpoint.from_directory(directory)
            send({k: v for k, v in result.metrics.items() if schema.selectable(k)}, checkpoint)

    return report


def run_trial(
    settings: TrialSettings,
    data: DatasetHandle,
    hyperparameters: Hyperparameters,
    extra_tags: Mapping[str, str] | None = None,
) -> None:
    """One trial from resolved values and its seed (in ``settings``), inside a Tune
    function: in this process, or data-parallel on several workers."""
    from ray import tune

    quiet_ray_logs()
    if settings.workers > 1:
        _fit_data_parallel(settings, data, hyperparameters, extra_tags)
        return
    torch.set_num_threads(settings.threads)
    _share_gpu(settings.gpus_per_worker)
    dataset = data.get()
    resume_state, run_id = _load_checkpoint(tune.get_checkpoint())
    run = _open_run(settings, dataset, hyperparameters, tune.get_context().get_trial_id(),
                    run_id, extra_tags)
    report = _checkpointing_report(
        run, lambda metrics, checkpoint: tune.report(metrics, checkpoint=checkpoint), True,
        dataset, settings,
    )
    pretrain_recorded(run, settings, dataset, hyperparameters, report, resume_state)


def _share_gpu(fraction: float) -> None:
    """A trial given a fraction of a GPU (several trials packed on one) may allocate that
    fraction of its memory: one trial that grows beyond its share then fails with an
    out-of-memory error of its own instead of starving the trials beside it."""
    if 0 < fraction < 1 and torch.cuda.is_available():
        torch.cuda.set_per_process_memory_fraction(fraction)


def method_trial(
    config: dict[str, Any],
    *,
    settings_by_method: Mapping[str, TrialSettings],
    space: CrossMethodSpace,
    data: DatasetHandle,
) -> None:
    """The Ray Tune function trainable of a search: ``config`` holds the sampler's
    suggestion, which names the method (every method's search runs in one Tuner, or one
    search chooses the method); the rest is that method's trial."""
    from ray import tune

    method, own = space.split(config)
    settings = settings_by_method[method]
    hyperparameters = resolve_trial(method, settings.space.decode(own))
    settings = settings.with_seed(settings.seed_for(tune.get_context().get_trial_id()))
    run_trial(settings, data, hyperparameters)


def cross_method_trial(
    config: dict[str, Any],
    *,
    settings_by_method: Mapping[str, TrialSettings],
    space: CrossMethodSpace,
    data: DatasetHandle,
) -> None:
    """The Tune function of a cross-method search: :func:`method_trial` under the name
    such searches have had from the start, because Tune resumes a study only with a
    function of the name it saved."""
    method_trial(config, settings_by_method=settings_by_method, space=space, data=data)


def fixed_trial(
    config: dict[str, Any],
    *,
    settings_by_method: Mapping[str, TrialSettings],
    data: DatasetHandle,
) -> None:
    """The Tune function of a grid of fixed configurations (confirmation runs, sweeps):
    ``config["run"]`` names the method, its values, the seed and the run's extra tags."""
    run = config["run"]
    settings = settings_by_method[run["method"]].with_seed(int(run["seed"]))
    hyperparameters = resolve_trial(run["method"], run["values"])
    run_trial(settings, data, hyperparameters, extra_tags=run["tags"])


def _fit_data_parallel(
    settings: TrialSettings,
    data: DatasetHandle,
    hyperparameters: Hyperparameters,
    extra_tags: Mapping[str, str] | None,
) -> None:
    """Coordinate one multi-worker trial: create its MLflow run, fit a TorchTrainer whose
    rank-0 reports reach Tune, and close the run once the trainer is done."""
    from ray import train, tune
    from ray.train.torch import TorchConfig, TorchTrainer
    from ray.tune.integration.ray_train import TuneReportCallback

    trial_id = tune.get_context().get_trial_id()
    dataset = data.get()
    run = _open_run(settings, dataset, hyperparameters, trial_id, None, extra_tags)
    use_gpu = settings.gpus_per_worker > 0
    resources = {"CPU": settings.cpus_per_worker}
    if use_gpu:
        resources["GPU"] = settings.gpus_per_worker
    trainer = TorchTrainer(
        _train_worker,
        train_loop_config={
            "settings": settings, "data": data, "hyperparameters": hyperparameters,
            "run_id": run.run_id,
        },
        scaling_config=train.ScalingConfig(
            num_workers=settings.workers, use_gpu=use_gpu, resources_per_worker=resources
        ),
        torch_config=TorchConfig(backend="nccl" if use_gpu else "gloo"),
        run_config=train.RunConfig(
            # The same name on a retried or resumed trial lets Train continue from its
            # checkpoint. A failed worker ends this attempt and Tune retries the whole
            # trial, this process included (``study.tuner.failure_config``). Train keeps
            # retrying, without limit, only what is not a failure of the trial: a worker
            # group that cannot start yet (waiting for resources or an autoscaler) and
            # preempted nodes.
            name=f"{settings.method}-{trial_id}",
            storage_path=settings.storage_path,
            failure_config=train.FailureConfig(
                max_failures=0, controller_failure_limit=-1, max_preemption_failures=-1),
            callbacks=[TuneReportCallback()],
        ),
    )
    try:
        trainer.fit()
    except ray.exceptions.RayActorError:
        # The trainer's controller died with the trial's placement group: Tune is stopping
        # this trial (budget reached or ASHA), or its node is gone. The driver knows which
        # and closes the run accordingly.
        raise
    except Exception as exc:
        run.finish(schema.FAILED, reason=f"{type(exc).__name__}: {exc}")
        raise
    run.finish(schema.COMPLETED)


def _train_worker(config: dict[str, Any]) -> None:
    """One data-parallel worker: the generic loop with a process-group collective."""
    from ray import train
    from ray.train.torch import get_device

    quiet_ray_logs()
    settings: TrialSettings = config["settings"]
    torch.set_num_threads(settings.threads)
    dataset = config["data"].get()
    comm = Collective.from_process_group()
    resume_state, _ = _load_checkpoint(train.get_checkpoint())
    run = TrialRun.attach(settings.tracking, config["run_id"]) if comm.rank == 0 else None
    loop = replace(settings.loop, device=str(get_device()))
    report = _checkpointing_report(
        run, lambda metrics, checkpoint: train.report(metrics, checkpoint=checkpoint),
        comm.rank == 0, dataset, settings,
    )
    pretrain(settings.method, settings.backbone, dataset, config["hyperparameters"], loop,
             report, resume_state, comm)

