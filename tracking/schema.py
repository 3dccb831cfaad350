"""The names under which a study is recorded in MLflow.

Trials write these; ``sslstudy analyze`` and the MLflow UI read them. Runs of other tools
lack most of them and the analysis infers what it needs (see ``analysis.runs``). Params
are the trial's hyperparameters under their plain names (``search_spaces`` declares
them), nothing else.
"""

from __future__ import annotations

# Tags of a trial's run.
TAG_METHOD = "method"
TAG_DATASET = "dataset"
TAG_BACKBONE = "backbone"
TAG_STUDY = "study"
#: The Ray Tune trial id; ``local`` for a run of ``sslstudy train``.
TAG_TRIAL_ID = "trial_id"
#: One of the run statuses below.
TAG_STATUS = "status"
TAG_FAILURE_REASON = "failure_reason"
#: The last epoch the trial logged, updated at every epoch.
TAG_BUDGET = "budget"
#: The full budget (train.epochs) of the study.
TAG_MAX_BUDGET = "max_budget"
#: The Ray node that ran (or resumed) the trial.
TAG_RAY_NODE = "ray_node"
#: MLflow's own link from a child run to its parent.
TAG_PARENT_RUN = "mlflow.parentRunId"

#: Why a run exists: ``search`` (a trial of a search), ``confirm`` (a re-run of a
#: configuration with a fresh seed), ``sweep`` (a cell of a paper-style sweep).
TAG_RUN_KIND = "run_kind"
KIND_SEARCH, KIND_CONFIRM, KIND_SWEEP = "search", "confirm", "sweep"
#: On a confirmation run: the trial id of the run whose configuration it repeats.
TAG_REPLICATE_OF = "replicate_of"
#: On a sweep's run: its cell, the swept values as JSON (``{"temperature": 0.1}``).
TAG_SWEEP_CELL = "sweep_cell"

# Params.
#: The seed a run trained with (when the runs of one configuration differ in it). Runs
#: whose params are identical apart from it are replicates of one configuration: the
#: analysis measures seed-to-seed noise from them and never treats it as a
#: hyperparameter.
PARAM_SEED = "seed"

# Tags of a study's parent run.
TAG_ROLE = "sslstudy.role"
ROLE_STUDY = "study"
ROLE_SWEEP = "sweep"
#: What the study optimised: the analysis reports on it unless told otherwise.
TAG_STUDY_METRIC = "sslstudy.metric"
TAG_STUDY_MODE = "sslstudy.mode"

# Run statuses (tag ``status``).
RUNNING = "running"
COMPLETED = "completed"
STOPPED_EARLY = "stopped_early"
FAILED = "failed"
#: A run whose trial a dead driver never recorded; the resumed study has no such trial.
ORPHANED = "orphaned"
#: Statuses a finished trial can end with.
FINAL_STATUSES = (COMPLETED, STOPPED_EARLY, FAILED, ORPHANED)

# Metrics, logged at step = epoch.
EPOCH = "epoch"
LOSS = "loss"
IMAGES_PER_SEC = "images_per_sec"
#: The learning rate of the schedule at the end of the epoch.
LR = "lr"
#: Evaluation metrics: unprefixed on the held-out test split; with ``VAL_PREFIX`` on the
#: validation part of the labelled train split, which is all a search may see.
KNN_ACC = "knn_acc"
LINEAR_ACC = "linear_acc"
MLP_ACC = "mlp_acc"
VAL_PREFIX = "val_"
#: The measures a search may optimise (it always optimises their ``val_`` form), with
#: the probe setting each needs at every evaluation (None: always computed).
SEARCH_METRICS = {KNN_ACC: None, LINEAR_ACC: "linear_probe", MLP_ACC: "mlp_probe"}
#: Training statistics, which any scheduler may read.
TRAINING_METRICS = (EPOCH, LOSS, IMAGES_PER_SEC, LR)


def validation(metric: str) -> str:
    """The validation form of a measure: what a search optimises for it."""
    return metric if metric.startswith(VAL_PREFIX) else VAL_PREFIX + metric


def selectable(metric: str) -> bool:
    """Whether a metric may reach the scheduler and the searcher: training statistics and
    validation scores only, never a test-split score."""
    return metric in TRAINING_METRICS or metric.startswith(VAL_PREFIX)

# Artifacts of a study's parent run.
RESOLVED_CONFIG = "resolved_config.yaml"
SEARCH_SPACES = "search_spaces.json"
SUMMARY = "summary.json"
CONFIRM_SUMMARY = "confirm_summary.json"
#: Of a sweep's parent run: what was swept, around what, with how many seeds.
SWEEP_SPEC = "sweep.json"
