"""A trial recorded in MLflow: what every entry point (the Ray trainable, ``sslstudy
train``) shares above the torch core. Settings of a trial, its run (tags, params, the
dataset input), each epoch's results with the final encoder as an MLflow model, and
training to the end with the run closed as completed or failed."""

from __future__ import annotations

import copy
import tempfile
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, replace
from importlib.metadata import version
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from search_spaces import SearchSpace
from tracking import schema
from tracking.runs import TrackingTarget, TrialRun, source_tags
from trainables.data import ImageDataset, dataset_digest, dataset_profile
from trainables.hyperparameters import Hyperparameters
from trainables.loop import EpochResult, LoopSettings, Reporter
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
        **source_tags(settings.run_kind),
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
    """The run of a trial: its hyperparameters and its seed as params, the data as a
    dataset input."""
    run = TrialRun.create(
        settings.tracking,
        name=name,
        tags={**run_tags(settings, dataset, trial_id), **(extra_tags or {})},
        params=_params(settings, hyperparameters),
    )
    _log_dataset(run, dataset)
    return run


def reopen_run(
    settings: TrialSettings,
    dataset: ImageDataset,
    hyperparameters: Hyperparameters,
    run_id: str,
) -> TrialRun:
    """The run an earlier attempt of the trial opened, completed with what that attempt
    may not have logged before it was killed (params, the dataset input)."""
    run = TrialRun.resume(settings.tracking, run_id, _params(settings, hyperparameters))
    _log_dataset(run, dataset)
    return run


def _params(settings: TrialSettings, hyperparameters: Hyperparameters) -> dict[str, Any]:
    return {**hyperparameters.as_dict(), schema.PARAM_SEED: settings.loop.seed}


def _log_dataset(run: TrialRun, dataset: ImageDataset) -> None:
    run.log_dataset(dataset.name, dataset_digest(dataset), {"dataset": dataset.name},
                    dataset_profile(dataset))


def record_epoch(run: TrialRun, result: EpochResult, dataset: ImageDataset,
                 settings: TrialSettings) -> None:
    """Log an epoch's metrics and files; after the last epoch, the encoder as the run's
    model."""
    run.log_result(result.metrics, result.epoch, result.artifacts)
    if result.encoder is not None:
        log_encoder(run, result.encoder, dataset, settings.loop.eval_layer, result.epoch)


def log_encoder(run: TrialRun, encoder: torch.nn.Module, dataset: ImageDataset,
                eval_layer: int | None, step: int) -> str:
    """The evaluated encoder (normalisation inside, images in [0, 1] to features) as an
    MLflow PyTorch model of the run, in eval mode, in PyTorch's exported-program format
    (``pt2``): ``mlflow.pytorch.load_model`` gives it back without this project's code
    and without unpickling, the format MLflow loads by default. Returns the model id."""
    import mlflow.pytorch
    from mlflow.models import ModelSignature
    from mlflow.types import Schema, TensorSpec

    # A copy on the CPU: the trial's own module stays where it trains, as it is.
    module = copy.deepcopy(encoder).cpu().eval()
    example = dataset.test_images[:2].float().div(255.0)
    with torch.no_grad():
        features = module(example)
    image_shape = (-1, *example.shape[1:])
    signature = ModelSignature(
        inputs=Schema([TensorSpec(np.dtype(np.float32), image_shape, "images")]),
        outputs=Schema([TensorSpec(np.dtype(np.float32), (-1, features.shape[1]),
                                   "features")]),
    )
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / schema.MODEL_NAME
        mlflow.pytorch.save_model(
            module, str(path), signature=signature, input_example=example.numpy(),
            serialization_format="pt2", pip_requirements=[f"torch=={version('torch')}"],
        )
        return run.log_model(path, schema.MODEL_NAME, step, {
            schema.MODEL_TAG_EVAL_LAYER: "last" if eval_layer is None else str(eval_layer),
            schema.MODEL_TAG_FEATURE_DIM: str(features.shape[1]),
        })


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
