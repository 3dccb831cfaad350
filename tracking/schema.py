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
#: configuration with a fresh seed), ``sweep`` (a cell of a paper-style sweep), ``train``
#: (one configuration run by ``sslstudy train``).
TAG_RUN_KIND = "run_kind"
KIND_SEARCH, KIND_CONFIRM, KIND_SWEEP, KIND_TRAIN = "search", "confirm", "sweep", "train"
#: Kinds of run that choose among configurations, of which ``sslstudy export`` picks the
#: best (confirmation and sweep runs re-run fixed configurations).
SELECTING_KINDS = (KIND_SEARCH, KIND_TRAIN)

# MLflow's own tags, which its UI reads: the Source column, and the git commit.
TAG_SOURCE_NAME = "mlflow.source.name"
TAG_SOURCE_TYPE = "mlflow.source.type"
TAG_GIT_COMMIT = "mlflow.source.git.commit"
TAG_USER = "mlflow.user"
#: A run's description (markdown), shown on its page.
TAG_NOTE = "mlflow.note.content"
#: The dataset input's context (which use of the data a run logged).
TAG_DATASET_CONTEXT = "mlflow.data.context"

# Tags of an experiment.
#: The experiment's kind, which MLflow 3's UI reads to choose between its GenAI (traces)
#: and its model-training (runs) views where its GenAI / Model training switch does not
#: decide (the runs view's URL sets the switch: ``tracking.uris.runs_view_url``).
TAG_EXPERIMENT_KIND = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"
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
#: The learning rate of the schedule at the end of the epoch (the param ``lr`` is its
#: peak; a metric of the same name would show both in one column of the MLflow UI).
LR = "lr_schedule"
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


#: Reference scores, on trial runs of ``sslstudy train`` and, per method, on a study's
#: parent run: the same evaluation of the encoder at its random initialisation (prefix +
#: metric), and the accuracy of always answering the most frequent class.
RANDOM_INIT_PREFIX = "random_init_"
CHANCE_ACC = "chance_acc"


def validation(metric: str) -> str:
    """The validation form of a measure: what a search optimises for it."""
    return metric if metric.startswith(VAL_PREFIX) else VAL_PREFIX + metric


def selectable(metric: str) -> bool:
    """Whether a metric may reach the scheduler and the searcher: training statistics and
    validation scores only, never a test-split score."""
    return metric in TRAINING_METRICS or metric.startswith(VAL_PREFIX)

def method_key(method: str, name: str) -> str:
    """A per-method metric or tag of a study's parent run, e.g. ``simclr.trials``."""
    return f"{method}.{name}"


# Per-method summary of a study on its parent run (see ``method_key``).
SUMMARY_TRIALS = "trials"
SUMMARY_COMPLETED = "completed"
SUMMARY_BEST_PREFIX = "best_"
SUMMARY_BEST_RUN = "best_run_id"

# A trial's model: its final encoder (images in [0, 1] to the evaluated features), with
# the dataset's normalisation and the evaluated layer inside, logged as an MLflow PyTorch
# model under this name and linked to the run.
MODEL_NAME = "encoder"
#: Tags of the logged model.
MODEL_TAG_EVAL_LAYER = "eval_layer"
MODEL_TAG_FEATURE_DIM = "feature_dim"

# Artifacts of a study's parent run.
RESOLVED_CONFIG = "resolved_config.yaml"
SEARCH_SPACES = "search_spaces.json"
SUMMARY = "summary.json"
CONFIRM_SUMMARY = "confirm_summary.json"
#: Of a sweep's parent run: what was swept, around what, with how many seeds.
SWEEP_SPEC = "sweep.json"
#: Where ``sslstudy analyze`` puts the report among a study's artifacts.
REPORT_DIR = "report"
