"""A validated study config in the terms the layers below take: where the study lives,
the loop's settings and each trial's settings."""

from __future__ import annotations

from pathlib import Path

from search_spaces import SearchSpace
from study.config import StudyConfig
from tracking.runs import TrackingTarget
from trainables.loop import LoopSettings
from trainables.recording import TrialSettings

OPTUNA_DB = "optuna.db"
#: The study's resolved config and MLflow ids, for ``--resume``.
STUDY_STATE = "study.json"


def study_root(config: StudyConfig) -> Path:
    """``<storage_path>/<study name>``: Ray results per method and the Optuna database."""
    return (Path(config.storage_path).expanduser() / config.name).resolve()


def optuna_storage_url(config: StudyConfig) -> str:
    return f"sqlite:///{study_root(config) / OPTUNA_DB}"


def loop_settings(config: StudyConfig) -> LoopSettings:
    train = config.train
    return LoopSettings(
        epochs=train.epochs,
        eval_every=train.eval_every,
        optimizer=train.optimizer,
        warmup_epochs=train.warmup_epochs,
        device=train.device,
        seed=config.seed,
        knn_k=train.knn_k,
        knn_temperature=train.knn_temperature,
        linear_probe=train.linear_probe,
        mlp_probe=train.mlp_probe,
        eval_layer=train.eval_layer,
        sync_bn=train.sync_bn,
        precision=train.precision,
        channels_last=train.channels_last,
        compile=train.compile,
    )


def trial_settings(
    config: StudyConfig, method: str, space: SearchSpace, target: TrackingTarget
) -> TrialSettings:
    resources = config.resources
    return TrialSettings(
        study=config.name,
        method=method,
        backbone=config.train.backbone,
        loop=loop_settings(config),
        space=space,
        tracking=target,
        threads=max(1, int(resources.cpus_per_worker)),
        workers=resources.workers_per_trial,
        cpus_per_worker=resources.cpus_per_worker,
        gpus_per_worker=resources.gpus_per_worker,
        max_failures=config.search.max_failures,
        storage_path=str(study_root(config) / method / "train_runs"),
    )
