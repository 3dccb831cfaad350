"""Pretrain and evaluate one configuration: the pieces shared by the Ray trials
(``trainables.ray_trial``) and by a local run (``sslstudy train``).

Every entry point builds the same method over the same generic loop and logs the same
MLflow run; they differ only in who receives the per-epoch results (Tune or Train's
``report`` with a checkpoint, or a progress bar).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
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
    workers: int = 1
    cpus_per_worker: float = 1.0
    gpus_per_worker: float = 0.0
    max_failures: int = 0
    #: Where multi-worker trials keep their Ray Train runs (checkpoints).
    storage_path: str = ""


def build_method(
    name: str,
    backbone: str,
    dataset: ImageDataset,
    method_hparams: Mapping[str, Any],
    comm: Collective = LOCAL,
) -> SSLMethod:
    cls = method_class(name)
    encoder = build_encoder(
        method_backbone(name, backbone), dataset.channels, dataset.mean, dataset.std,
        **cls.encoder_options(method_hparams),
    )
    return cls(encoder, encoder.feature_dim, method_hparams, comm)


def method_backbone(method: str, study_backbone: str) -> str:
    """The backbone a trial of ``method`` really uses: its own, if it fixes one."""
    return method_class(method).backbone or study_backbone


def run_configuration(
    settings: TrialSettings,
    dataset: ImageDataset,
    hparams: Mapping[str, Any],
    report: Callable[[EpochResult], None],
    resume_state: Mapping[str, Any] | None = None,
    comm: Collective = LOCAL,
) -> dict[str, float]:
    """Build the method from ``hparams`` (checked against their declared domains) and train
    it; ``comm`` is the process group when the trial is data-parallel."""
    values = resolve(declared_hparams(settings.method), hparams, owner=settings.method)
    training = TrainingHParams(**{k: values[k] for k in TRAINING_HPARAMS})
    method_values = {k: v for k, v in values.items() if k not in TRAINING_HPARAMS}
    torch.manual_seed(settings.loop.seed)
    method = build_method(settings.method, settings.backbone, dataset, method_values, comm)
    loop = replace(settings.loop, device=resolve_device(settings.loop.device))
    return train(method, dataset, training, loop, report, resume_state)


def run_tags(settings: TrialSettings, dataset: ImageDataset, trial_id: str) -> dict[str, str]:
    return {
        "method": settings.method,
        "dataset": dataset.name,
        "backbone": method_backbone(settings.method, settings.backbone),
        "trial_id": trial_id,
        "study": settings.study,
        "max_budget": str(settings.loop.epochs),
    }


def run_to_end(
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
        tags=run_tags(settings, dataset, "local"),
        params=hparams,
    )

    def report(result: EpochResult) -> None:
        run.log_result(result.metrics, result.epoch, result.artifacts)
        on_epoch(result)

    try:
        return run.run_id, run_to_end(run, settings, dataset, hparams, report, None)
    except KeyboardInterrupt:
        run.finish(FAILED, reason="interrupted by the user")
        raise
