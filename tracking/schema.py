"""The names under which a study is recorded in MLflow.

Trials write these; ``sslstudy analyze`` and the MLflow UI read them. Runs of other tools
lack most of them and the analysis infers what it needs (see ``analysis.runs``). Params
are the trial's hyperparameters under their plain names (``search_spaces`` declares
them), nothing else.

Only the standard library is imported here, so that every layer, the torch core included,
can share these names without pulling in MLflow.
"""

from __future__ import annotations

import re

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
#: On a parent run that the user stopped (Ctrl-C): what was left and how to continue it;
#: removed when a resumed command reopens the run.
TAG_STUDY_INTERRUPTED = "sslstudy.interrupted"
#: Params of a study's parent run (its settings, as ``<section>.<key>``) that the
#: analysis reads: which sampler chose the trials (absent before there was a choice:
#: TPE), and TPE's random start against the trials per method.
STUDY_PARAM_SAMPLER = "search.sampler"
STUDY_PARAM_STARTUP = "search.n_startup_trials"
STUDY_PARAM_SAMPLES = "search.num_samples"
SAMPLER_TPE = "tpe"

# Run statuses (tag ``status``).
RUNNING = "running"
COMPLETED = "completed"
STOPPED_EARLY = "stopped_early"
FAILED = "failed"
#: A run whose trial a dead driver never recorded; the resumed study has no such trial.
ORPHANED = "orphaned"
#: A run whose trial the user stopped (Ctrl-C) before it finished; ``--resume`` continues
#: it from its last checkpoint, in the same run.
INTERRUPTED = "interrupted"
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

# Metrics of the evaluation protocols (the config's ``evaluation:`` section), logged at a
# trial's final evaluation on the test split; a search objective among them is also
# logged in its ``val_`` form, on the validation part, at every evaluation.
#: ``finetune_<mode>_<labels>_acc``: a head on the frozen encoder, or the whole network
#: fine-tuned, on a label subset (../shared/seeds/003_c80d734d47a8bbd6.txt, Table 2).
FINETUNE_PREFIX = "finetune_"
FINETUNE_MODES = ("frozen", "unfrozen")
#: ``supervised_<labels>_acc``: the same network from random initialisation.
SUPERVISED_PREFIX = "supervised_"
#: ``pruned<S>_<labels>_acc``: fine-tuned while pruned to S% sparsity, then quantized.
PRUNED_PREFIX = "pruned"
ACC_SUFFIX = "_acc"
#: ``retrieval_p<k>`` (precision at k) and ``retrieval_map<k>`` (mean average precision).
RETRIEVAL_PREFIX = "retrieval_"
#: Suffix of a label budget given per class (``400pc``) rather than as a percentage.
PER_CLASS_SUFFIX = "pc"
_PROTOCOL_METRIC = re.compile(
    rf"^(?:{VAL_PREFIX})?(?:"
    rf"{FINETUNE_PREFIX}(?P<mode>{'|'.join(FINETUNE_MODES)})_(?P<f_labels>[0-9.]+(?:pc)?)"
    rf"|{SUPERVISED_PREFIX}(?P<s_labels>[0-9.]+(?:pc)?)"
    rf"|{PRUNED_PREFIX}(?P<sparsity>[0-9.]+)_(?P<p_labels>[0-9.]+(?:pc)?)"
    rf"){ACC_SUFFIX}$"
)


def percent(value: float) -> str:
    """A fraction as the percentage a metric name carries: 0.1 -> ``10``, 0.999 -> ``99.9``."""
    return f"{round(value * 100, 6):g}"


def label_budget(fraction: float | None = None, per_class: int | None = None) -> str:
    """How a metric names its label subset: the percentage of the labelled train split
    (``10``) or the labels per class (``400pc``)."""
    if per_class is not None:
        return f"{per_class}{PER_CLASS_SUFFIX}"
    if fraction is None:
        raise ValueError("label_budget needs a fraction or labels per class")
    return percent(fraction)


def finetune_metric(mode: str, labels: str) -> str:
    return f"{FINETUNE_PREFIX}{mode}_{labels}{ACC_SUFFIX}"


def supervised_metric(labels: str) -> str:
    return f"{SUPERVISED_PREFIX}{labels}{ACC_SUFFIX}"


def pruned_metric(sparsity: float, labels: str) -> str:
    return f"{PRUNED_PREFIX}{percent(sparsity)}_{labels}{ACC_SUFFIX}"


def retrieval_precision(k: int) -> str:
    return f"{RETRIEVAL_PREFIX}p{k}"


def retrieval_map(k: int) -> str:
    return f"{RETRIEVAL_PREFIX}map{k}"


def parse_label_metric(metric: str) -> tuple[str, str] | None:
    """(row, labels) of a fine-tuning, supervised or pruning metric's test form, the way
    the source's Table 2 lays it out: row ``frozen``, ``unfrozen``, ``supervised`` or
    ``pruned<S>``; None for any other metric (validation forms included)."""
    found = _PROTOCOL_METRIC.match(metric)
    if found is None or metric.startswith(VAL_PREFIX):
        return None
    if found["mode"]:
        return found["mode"], found["f_labels"]
    if found["s_labels"]:
        return "supervised", found["s_labels"]
    return f"{PRUNED_PREFIX}{found['sparsity']}", found["p_labels"]


def is_test_score(metric: str) -> bool:
    """Whether ``metric`` is one of the platform's scores on the held-out test split: an
    evaluation measure or a protocol's metric, in its test form. Decided by name: another
    tool's ``acc`` is not one, its ``knn_acc`` would be."""
    if metric.startswith(VAL_PREFIX):
        return False
    return (metric in SEARCH_METRICS or metric.startswith(RETRIEVAL_PREFIX)
            or parse_label_metric(metric) is not None)


#: Artifacts of the protocols, in a trial's run.
RETRIEVAL_EXAMPLES = "retrieval/examples.png"
EMBEDDINGS_DIR = "embeddings"
#: How a map is made (``evaluation.embedding.method``), which names its files.
EMBEDDING_METHODS = ("tsne", "umap", "pca")
#: The embedding map of the same network at its random initialisation, for comparison.
RANDOM_INIT_SUFFIX = "_random_init"


def embedding_artifact(method: str, extension: str, random_init: bool = False) -> str:
    """``embeddings/<method>.<extension>`` (``png`` or ``parquet``), or the random-init
    network's ``embeddings/<method>_random_init.<extension>``."""
    suffix = RANDOM_INIT_SUFFIX if random_init else ""
    return f"{EMBEDDINGS_DIR}/{method}{suffix}.{extension}"

# Artifacts of a study's parent run.
RESOLVED_CONFIG = "resolved_config.yaml"
SEARCH_SPACES = "search_spaces.json"
SUMMARY = "summary.json"
CONFIRM_SUMMARY = "confirm_summary.json"
#: Of a sweep's parent run: what was swept, around what, with how many seeds.
SWEEP_SPEC = "sweep.json"
#: Where ``sslstudy analyze`` puts the report among a study's artifacts.
REPORT_DIR = "report"
