"""Pretrain and evaluate one configuration: as a Ray Tune trial or as a local run.

Both entry points build the same method over the same generic loop and log the same MLflow
run; they differ only in who receives the per-epoch results (Tune's ``report`` with a
checkpoint, or a progress bar).
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from search_spaces import SearchSpace
from study.tracking import COMPLETED, FAILED, TrackingTarget, TrialRun
from trainables.backbones import build_encoder
from trainables.data import ImageDataset
from trainables.distributed import LOCAL, Collective
from trainables.hparams import TRAINING_HPARAMS, HParam, resolve
from trainables.loop import EpochResult, LoopSettings, TrainingHParams, train
from trainables.methods import method_class
from trainables.methods.base import SSLMethod

logger = logging.getLogger(__name__)
CHECKPOINT_FILE = "state.pt"


def declared_hparams(method: str) -> dict[str, HParam]:
    """Every hyperparameter a trial of ``method`` accepts: the loop's and the method's."""
    return {**TRAINING_HPARAMS, **method_class(method).hyperparameters}


def resolve_device(device: str) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


@dataclass(frozen=True)
class TrialSettings:
    """Everything about a trial that the search does not choose (plain, picklable data)."""

    study: str
    method: str
    backbone: str
    loop: LoopSettings
    space: SearchSpace
    tracking: TrackingTarget
    threads: int = 1


def build_method(
    name: str,
    backbone: str,
    dataset: ImageDataset,
    method_hparams: Mapping[str, Any],
    comm: Collective = LOCAL,
) -> SSLMethod:
    encoder, feature_dim = build_encoder(backbone, dataset.channels, dataset.mean, dataset.std)
    return method_class(name)(encoder, feature_dim, method_hparams, comm)


def run_configuration(
    settings: TrialSettings,
    dataset: ImageDataset,
    hparams: Mapping[str, Any],
    report: Callable[[EpochResult], None],
    resume_state: Mapping[str, Any] | None = None,
) -> dict[str, float]:
    """Build the method from ``hparams`` (checked against their declared domains) and train."""
    values = resolve(declared_hparams(settings.method), hparams, owner=settings.method)
    training = TrainingHParams(**{k: values[k] for k in TRAINING_HPARAMS})
    method_values = {k: v for k, v in values.items() if k not in TRAINING_HPARAMS}
    torch.manual_seed(settings.loop.seed)
    method = build_method(settings.method, settings.backbone, dataset, method_values)
    loop = replace(settings.loop, device=resolve_device(settings.loop.device))
    return train(method, dataset, training, loop, report, resume_state)


def _run_tags(settings: TrialSettings, dataset: ImageDataset, trial_id: str) -> dict[str, str]:
    return {
        "method": settings.method,
        "dataset": dataset.name,
        "backbone": settings.backbone,
        "trial_id": trial_id,
        "study": settings.study,
        "max_budget": str(settings.loop.epochs),
    }


def _run_to_end(
    run: TrialRun,
    settings: TrialSettings,
    dataset: ImageDataset,
    hparams: Mapping[str, Any],
    report: Callable[[EpochResult], None],
    resume_state: Mapping[str, Any] | None,
) -> dict[str, float]:
    """Train, then close the MLflow run as completed, or as failed with the reason before
    the exception propagates (it is recorded, never swallowed).

    Only ``Exception`` marks a failure: Ray ends a trial that the scheduler stops (or that
    reached its budget while blocked in ``tune.report``) with ``SystemExit``, and the
    driver closes those runs with the right status.
    """
    try:
        metrics = run_configuration(settings, dataset, hparams, report, resume_state)
    except Exception as exc:
        run.finish(FAILED, reason=f"{type(exc).__name__}: {exc}")
        raise
    run.finish(COMPLETED)
    return metrics


def tune_trial(config: dict[str, Any], *, settings: TrialSettings, dataset: ImageDataset) -> None:
    """The Ray Tune function trainable: ``config`` holds the sampler's suggestion."""
    from ray import tune

    # Ray logs every persisted checkpoint at INFO level in the worker; one line per epoch
    # per trial would drown the progress lines on the driver.
    logging.getLogger("ray.train").setLevel(logging.WARNING)
    torch.set_num_threads(settings.threads)
    hparams = resolve(
        declared_hparams(settings.method), settings.space.decode(config), owner=settings.method
    )
    checkpoint = tune.get_checkpoint()
    resume_state = None
    run_id = None
    if checkpoint is not None:
        with checkpoint.as_directory() as directory:
            resume_state = torch.load(Path(directory) / CHECKPOINT_FILE, weights_only=True)
        run_id = resume_state.pop("mlflow_run_id")
    trial_id = tune.get_context().get_trial_id()
    run = TrialRun(
        settings.tracking,
        run_name=f"{settings.method}-{trial_id}",
        tags=_run_tags(settings, dataset, trial_id),
        params=hparams,
        run_id=run_id,
    )

    def report(result: EpochResult) -> None:
        run.log_metrics(result.metrics, step=result.epoch)
        if not result.evaluated:
            return
        with tempfile.TemporaryDirectory() as directory:
            state = {**result.state(), "mlflow_run_id": run.run_id}
            torch.save(state, Path(directory) / CHECKPOINT_FILE)
            tune.report(
                dict(result.metrics),
                checkpoint=tune.Checkpoint.from_directory(directory),
            )

    _run_to_end(run, settings, dataset, hparams, report, resume_state)


def local_run(
    settings: TrialSettings,
    dataset: ImageDataset,
    hparams: Mapping[str, Any],
    on_epoch: Callable[[EpochResult], None],
) -> tuple[str, dict[str, float]]:
    """One configuration in this process, as a single MLflow run (``sslstudy train``)."""
    torch.set_num_threads(settings.threads)
    hparams = resolve(declared_hparams(settings.method), hparams, owner=settings.method)
    run = TrialRun(
        settings.tracking,
        run_name=f"{settings.method}-train",
        tags=_run_tags(settings, dataset, "local"),
        params=hparams,
    )

    def report(result: EpochResult) -> None:
        run.log_metrics(result.metrics, step=result.epoch)
        on_epoch(result)

    try:
        return run.run_id, _run_to_end(run, settings, dataset, hparams, report, None)
    except KeyboardInterrupt:
        run.finish(FAILED, reason="interrupted by the user")
        raise
