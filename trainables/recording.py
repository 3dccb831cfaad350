"""A trial recorded in MLflow: what every entry point (the Ray trainable, ``sslstudy
train``) shares above the torch core. Settings of a trial, the tags of its run, and
training to the end with the run closed as completed or failed."""

from __future__ import annotations

import zlib
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any, Literal

from search_spaces import SearchSpace
from tracking import schema
from tracking.runs import TrackingTarget, TrialRun
from trainables.data import ImageDataset
from trainables.hyperparameters import Hyperparameters
from trainables.loop import LoopSettings, Reporter
from trainables.methods import method_backbone
from trainables.pretrain import pretrain


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
    #: ``shared``: every trial uses ``loop.seed``; ``per_trial``: a seed of its own.
    seed_policy: Literal["shared", "per_trial"] = "shared"
    #: Why the runs exist (``tracking.schema.KIND_*``).
    run_kind: str = schema.KIND_SEARCH

    def seed_for(self, trial_id: str) -> int:
        """The seed of a trial: the study's (common random numbers), or one derived from
        the study's seed and the trial id, stable across retries and resumes."""
        if self.seed_policy == "shared":
            return self.loop.seed
        return zlib.crc32(f"{self.loop.seed}:{trial_id}".encode())

    def with_seed(self, seed: int) -> TrialSettings:
        return replace(self, loop=replace(self.loop, seed=seed))


def run_tags(settings: TrialSettings, dataset: ImageDataset, trial_id: str) -> dict[str, str]:
    return {
        schema.TAG_RUN_KIND: settings.run_kind,
        schema.TAG_METHOD: settings.method,
        schema.TAG_DATASET: dataset.name,
        schema.TAG_BACKBONE: method_backbone(settings.method, settings.backbone),
        schema.TAG_TRIAL_ID: trial_id,
        schema.TAG_STUDY: settings.study,
        schema.TAG_MAX_BUDGET: str(settings.loop.epochs),
    }


def create_run(
    settings: TrialSettings,
    dataset: ImageDataset,
    hyperparameters: Hyperparameters,
    trial_id: str,
    name: str,
    extra_tags: Mapping[str, str] | None = None,
) -> TrialRun:
    """The run of a trial: its hyperparameters and its seed as params."""
    return TrialRun.create(
        settings.tracking,
        name=name,
        tags={**run_tags(settings, dataset, trial_id), **(extra_tags or {})},
        params={**hyperparameters.as_dict(), schema.PARAM_SEED: settings.loop.seed},
    )


def pretrain_recorded(
    run: TrialRun,
    settings: TrialSettings,
    dataset: ImageDataset,
    hyperparameters: Hyperparameters,
    report: Reporter,
    resume_state: Mapping[str, Any] | None,
) -> dict[str, float]:
    """Train, then close the MLflow run as completed, or as failed with the reason before
    the exception propagates (it is recorded, never swallowed).

    Only ``Exception`` marks a failure: Ray ends a trial that the scheduler stops (or that
    reached its budget while blocked in ``tune.report``) with ``SystemExit``, and the
    driver closes those runs with the right status.
    """
    try:
        metrics = pretrain(settings.method, settings.backbone, dataset, hyperparameters,
                           settings.loop, report, resume_state)
    except Exception as exc:
        run.finish(schema.FAILED, reason=f"{type(exc).__name__}: {exc}")
        raise
    run.finish(schema.COMPLETED)
    return metrics
