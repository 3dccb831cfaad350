"""A validated study config in the terms the layers below take: where the study lives,
the loop's settings and each trial's settings."""

from __future__ import annotations

from pathlib import Path

from search_spaces import SearchSpace
from study.config import SOURCE_FRACTIONS, StudyConfig
from tracking import schema
from tracking.runs import TrackingTarget
from trainables.loop import LoopSettings
from trainables.protocols import (
    EmbeddingSettings,
    FinetuneSettings,
    FitSettings,
    LabelBudget,
    ProtocolSettings,
    PruningSettings,
    RetrievalSettings,
)
from trainables.recording import TrialSettings

OPTUNA_DB = "optuna.db"
#: The study's resolved config and MLflow ids, for ``--resume``.
STUDY_STATE = "study.json"


def study_root(config: StudyConfig) -> Path:
    """``<storage_path>/<study name>``: the study's Ray results and the Optuna database."""
    return (Path(config.storage_path).expanduser() / config.name).resolve()


def with_absolute_storage(config: StudyConfig) -> StudyConfig:
    """``config`` with ``storage_path`` resolved here: a Ray Client study's fit runs as a
    task on the cluster (``study.tuner.fit_tuner``), whose working directory and home
    are not the command's."""
    return config.model_copy(update={"storage_path": study_root(config).parent})


def optuna_storage_url(config: StudyConfig) -> str:
    return f"sqlite:///{study_root(config) / OPTUNA_DB}"


def protocol_settings(config: StudyConfig, run_kind: str) -> ProtocolSettings | None:
    """The protocols a run of ``run_kind`` computes: those of ``evaluation:``, in every
    run, or (``evaluation.on: confirm``) in runs of fixed configurations only, never in
    a search's trials; None when there are none."""
    evaluation = config.evaluation
    if evaluation.on == "confirm" and run_kind == schema.KIND_SEARCH:
        return None
    fit = FitSettings()
    finetune = None
    if evaluation.finetune is not None:
        section = evaluation.finetune
        fit = FitSettings(section.epochs, section.lr, section.batch_size, section.head)
        budgets = ((LabelBudget(per_class=section.labels_per_class),)
                   if section.labels_per_class is not None else
                   tuple(LabelBudget(f) for f in section.fractions or SOURCE_FRACTIONS))
        finetune = FinetuneSettings(budgets, tuple(section.modes),
                                    section.supervised_baseline, fit)
    pruning = None
    if evaluation.pruning is not None:
        section_p = evaluation.pruning
        pruning = PruningSettings(tuple(section_p.sparsities), section_p.bits,
                                  tuple(LabelBudget(f) for f in section_p.fractions), fit)
    retrieval = None if evaluation.retrieval is None else RetrievalSettings(
        tuple(evaluation.retrieval.k), evaluation.retrieval.backend)
    embedding = None if evaluation.embedding is None else EmbeddingSettings(
        evaluation.embedding.method, evaluation.embedding.points)
    if finetune is pruning is retrieval is embedding is None:
        return None
    objective = config.search.metric if config.search.metric in evaluation.metrics else None
    return ProtocolSettings(finetune, pruning, retrieval, embedding, subset_seed=config.seed,
                            objective=objective)


def loop_settings(config: StudyConfig, run_kind: str = schema.KIND_SEARCH) -> LoopSettings:
    """The loop's settings for a run of ``run_kind`` (``tracking.schema.KIND_*``)."""
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
        test_metrics=train.test_metrics,
        lr_scaling=train.lr_scaling,
        budget_unit=train.budget_unit,
        protocols=protocol_settings(config, run_kind),
        precision=train.precision,
        channels_last=train.channels_last,
        compile=train.compile,
    )


def trial_settings(
    config: StudyConfig, method: str, space: SearchSpace, target: TrackingTarget,
    run_kind: str = schema.KIND_SEARCH,
) -> TrialSettings:
    resources = config.resources
    return TrialSettings(
        study=config.name,
        method=method,
        backbone=config.train.backbone,
        loop=loop_settings(config, run_kind),
        space=space,
        tracking=target,
        threads=max(1, int(resources.cpus_per_worker)),
        workers=resources.workers_per_trial,
        cpus_per_worker=resources.cpus_per_worker,
        gpus_per_worker=resources.gpus_per_worker,
        seed_policy=config.seed_policy,
        storage_path=str(study_root(config) / method / "train_runs"),
        run_kind=run_kind,
    )
