"""The study config: a YAML file validated by a pydantic schema.

Unknown keys, wrong types and out-of-range values are rejected with one line that names
the field and what is allowed; nothing is created before the whole config, including
every method's search space, has been validated.
"""

from __future__ import annotations

import copy
import importlib.util
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from search_spaces import SearchSpace, SearchSpaceError, build_space
from study.errors import ConfigError
from tracking.schema import (
    EMBEDDING_METHODS,
    SEARCH_METRICS,
    finetune_metric,
    label_budget,
    pruned_metric,
    retrieval_map,
    retrieval_precision,
    supervised_metric,
    validation,
)
from trainables.backbones import BACKBONE_STAGES, BACKBONES
from trainables.data import DATASETS
from trainables.hyperparameters import declared_hyperparameters
from trainables.methods import METHODS


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    @field_validator("*", mode="before")
    @classmethod
    def _no_boolean_for_a_number(cls, value: Any, info: ValidationInfo) -> Any:
        """Pydantic's lax mode reads ``true`` as 1 for a number: ``epochs: true`` would
        train one epoch, ``fractions: [true]`` fine-tune on every label. A boolean, alone
        or in a list, is accepted only where the field takes one."""
        given = value if isinstance(value, list) else [value]
        if any(isinstance(v, bool) for v in given) and info.field_name is not None:
            annotation = cls.model_fields[info.field_name].annotation
            if _is_number(annotation) and not _admits_bool(annotation):
                raise PydanticCustomError("bool_for_number",
                                          "Input should be a number, not true or false")
        return value


class DataConfig(_Strict):
    dataset: str = "shapes"
    data_dir: Path | None = None
    download: bool = False
    image_size: int | None = Field(None, ge=8, le=1024)
    num_train: int = Field(4096, ge=64, description="generated datasets only")
    num_test: int = Field(1024, ge=16, description="generated datasets only")
    val_fraction: float = Field(
        0.2, ge=0.0, lt=1.0,
        description="stratified share of the labelled train split that searches score on",
    )

    @model_validator(mode="after")
    def _known_dataset(self) -> DataConfig:
        if self.dataset not in DATASETS:
            raise ValueError(f"dataset: unknown {self.dataset!r}; allowed: {', '.join(DATASETS)}")
        return self


class TrainConfig(_Strict):
    backbone: Literal[BACKBONES] = "small_cnn"  # type: ignore[valid-type]
    epochs: int = Field(10, ge=1, le=100_000)
    eval_every: int = Field(1, ge=1)
    optimizer: Literal["adamw", "sgd", "lars"] = "adamw"
    warmup_epochs: int = Field(0, ge=0)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    knn_k: int = Field(200, ge=1)
    knn_temperature: float = Field(0.1, gt=0)
    linear_probe: Literal["final", "every", "never"] = "final"
    mlp_probe: Literal["final", "every", "never"] = Field(
        "final", description="when the non-linear (MLP) probe on frozen features runs"
    )
    eval_layer: int | None = Field(
        None, ge=1, description="encoder stage (1-based) evaluated; null: the last"
    )
    sync_bn: bool = Field(
        False, description="SyncBatchNorm across the workers of a trial (GPUs only)"
    )
    test_metrics: Literal["final", "every"] = Field(
        "final", description="when test-split metrics are computed (never used to select)"
    )
    lr_scaling: Literal["none", "linear", "sqrt"] = Field(
        "none", description="peak lr times batch/256 (linear) or sqrt(batch/256) (sqrt)"
    )
    budget_unit: Literal["epochs", "steps"] = Field(
        "epochs", description="an epoch of budget is a pass over the data, or as many steps "
        "as a pass at batch size 256 takes"
    )
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field(
        "auto", description="autocast dtype; auto: bf16 on CUDA with native bf16, else fp32"
    )
    channels_last: Literal["auto", True, False] = Field(
        "auto", description="channels-last memory format; auto: on CUDA with bf16 or fp16"
    )
    compile: bool = Field(False, description="torch.compile the encoder")

    @model_validator(mode="after")
    def _eval_layer_exists(self) -> TrainConfig:
        stages = BACKBONE_STAGES[self.backbone]
        if self.eval_layer is not None and self.eval_layer > stages:
            raise ValueError(f"eval_layer: got {self.eval_layer}, allowed: 1 to {stages} "
                             f"(the stages of {self.backbone})")
        return self

    @model_validator(mode="after")
    def _warmup_within_budget(self) -> TrainConfig:
        if self.warmup_epochs >= self.epochs:
            raise ValueError(
                f"warmup_epochs: must be below epochs ({self.epochs}), got {self.warmup_epochs}"
            )
        return self


class SweepConfig(_Strict):
    """A paper-style sweep (``sslstudy sweep``): ``param`` over ``values`` (and ``param2``
    over ``values2``) around a base configuration, ``seeds`` runs per cell. The command's
    flags override these keys."""

    method: str | None = None
    param: str | None = None
    values: list[Any] | None = Field(None, min_length=1)
    param2: str | None = None
    values2: list[Any] | None = Field(None, min_length=1)
    around: str = Field("defaults", description="best, defaults, or a YAML file of values")
    seeds: int = Field(3, ge=1)


#: Validation context of a config read for one run (``sslstudy train``), not a search.
SINGLE_RUN = "single_run"


class ConfirmConfig(_Strict):
    """Re-runs of configurations at the full budget with fresh seeds (``sslstudy
    confirm``): the ``top`` best and ``random`` others of each method, ``seeds`` each."""

    top: int = Field(3, ge=0)
    seeds: int = Field(3, ge=1)
    random: int = Field(2, ge=0)

    @model_validator(mode="after")
    def _something(self) -> ConfirmConfig:
        if self.top + self.random == 0:
            raise ValueError("top: top and random cannot both be 0 (nothing to confirm)")
        return self


class SearchConfig(_Strict):
    num_samples: int = Field(8, ge=1, description="trials per method")
    max_concurrent: int | None = Field(None, ge=1)
    metric: str = Field(
        "knn_acc", description="knn_acc, linear_acc, mlp_acc or a metric the evaluation "
        "section logs; the search optimises its val_ form"
    )
    cross_method: bool = Field(
        False,
        description="one search over all methods (method as a categorical choice with "
        "conditional parameters) instead of one search per method",
    )
    mode: Literal["max", "min"] = "max"
    grace_period: int = Field(1, ge=1, description="ASHA: epochs every trial gets")
    reduction_factor: float = Field(2.0, gt=1.0, description="ASHA: keep 1/eta at each rung")
    sampler: Literal["tpe", "qmc", "random"] = Field(
        "tpe", description="how trials are chosen: tpe (where scores were high: finds good "
        "settings), qmc (scrambled Sobol points that fill the space: the most power for "
        "the sensitivity report) or random"
    )
    n_startup_trials: int = Field(4, ge=0, description="TPE: random trials before modelling")
    max_failures: int = Field(
        1, ge=0, description="retries of a failed trial, each from its last checkpoint"
    )
    confirm: ConfirmConfig | None = Field(
        None, description="confirmation runs at the end of the search"
    )

    @model_validator(mode="after")
    def _qmc_over_one_space(self) -> SearchConfig:
        # Optuna's QMC sampler draws every parameter of the first trial's space at once;
        # a cross-method search's conditional parameters would fall out of its sequence.
        if self.sampler == "qmc" and self.cross_method:
            raise ValueError("sampler: qmc needs one search per method; with cross_method: "
                             "true use tpe or random")
        return self


class ResourcesConfig(_Strict):
    workers_per_trial: int = Field(1, ge=1, le=1024)
    cpus_per_worker: float = Field(1.0, gt=0)
    gpus_per_worker: float = Field(0.0, ge=0)

    @model_validator(mode="after")
    def _whole_or_fractional_gpu(self) -> ResourcesConfig:
        gpus = self.gpus_per_worker
        if gpus > 1 and gpus != int(gpus):
            raise ValueError(f"gpus_per_worker: above 1 it must be a whole number, got {gpus}")
        if self.workers_per_trial > 1 and 0 < gpus < 1:
            raise ValueError(
                f"gpus_per_worker: fractional GPUs ({gpus}) cannot be combined with "
                f"workers_per_trial > 1 (each data-parallel worker needs its own GPU)"
            )
        return self

    @property
    def cpus_per_trial(self) -> float:
        return self.cpus_per_worker * self.workers_per_trial

    @property
    def gpus_per_trial(self) -> float:
        return self.gpus_per_worker * self.workers_per_trial


#: The label fractions of ../shared/seeds/003_c80d734d47a8bbd6.txt (Table 2).
SOURCE_FRACTIONS = (0.01, 0.1, 0.2, 1.0)
#: The sparsities of its "prune S% *" rows.
SOURCE_SPARSITIES = (0.7, 0.9, 0.95, 0.99)


def _check_fractions(key: str, fractions: list[float]) -> None:
    for value in fractions:
        if not 0.0 < value <= 1.0:
            raise ValueError(f"{key}: got {value}, allowed: label fractions in (0, 1]")
    if len(set(fractions)) != len(fractions):
        raise ValueError(f"{key}: lists a fraction twice: {fractions}")


class FinetuneConfig(_Strict):
    """Fine-tuning with few labels, frozen and unfrozen, and the supervised baseline
    (003_c80d734d47a8bbd6.txt, Table 2; 002_a5cbedfbf1372821.txt's 400 labels per class).
    """

    fractions: list[float] | None = Field(
        None, min_length=1, description="label fractions; default 0.01, 0.1, 0.2, 1.0 "
        "unless labels_per_class is given"
    )
    labels_per_class: int | None = Field(None, ge=1, description="instead of fractions")
    modes: list[Literal["frozen", "unfrozen"]] = Field(["frozen", "unfrozen"], min_length=1)
    epochs: int = Field(10, ge=1, description="of unfrozen fine-tuning, baseline, pruning")
    lr: float = Field(1e-3, gt=0)
    batch_size: int = Field(128, ge=1)
    head: Literal["auto", "linear", "mlp"] = "auto"
    supervised_baseline: bool = True

    @model_validator(mode="after")
    def _labels(self) -> FinetuneConfig:
        if self.fractions is not None and self.labels_per_class is not None:
            raise ValueError("fractions: give fractions or labels_per_class, not both")
        _check_fractions("fractions", self.fractions or [])
        if len(set(self.modes)) != len(self.modes):
            raise ValueError(f"modes: lists a mode twice: {self.modes}")
        return self

    @property
    def label_budgets(self) -> list[str]:
        """The label budgets as metric names carry them (``10``, ``400pc``)."""
        if self.labels_per_class is not None:
            return [label_budget(per_class=self.labels_per_class)]
        return [label_budget(f) for f in self.fractions or SOURCE_FRACTIONS]


class PruningConfig(_Strict):
    """Global iterative magnitude pruning during unfrozen fine-tuning (trained as
    ``evaluation.finetune`` says, or with its defaults), then quantization."""

    sparsities: list[float] = Field(list(SOURCE_SPARSITIES), min_length=1)
    bits: int = Field(6, ge=2, le=16, description="per-tensor symmetric quantization")
    fractions: list[float] = Field(list(SOURCE_FRACTIONS), min_length=1)

    @model_validator(mode="after")
    def _ranges(self) -> PruningConfig:
        for value in self.sparsities:
            if not 0.0 <= value < 1.0:
                raise ValueError(f"sparsities: got {value}, allowed: sparsities in [0, 1)")
        if len(set(self.sparsities)) != len(self.sparsities):
            raise ValueError(f"sparsities: lists a sparsity twice: {self.sparsities}")
        _check_fractions("fractions", self.fractions)
        return self


class RetrievalConfig(_Strict):
    """Similarity search: test images against the labelled train split."""

    k: list[int] = Field([1, 10], min_length=1)
    backend: Literal["auto", "faiss", "torch"] = Field(
        "auto", description="auto: FAISS when installed, else exact search in torch"
    )

    @model_validator(mode="after")
    def _valid(self) -> RetrievalConfig:
        if min(self.k) < 1 or len(set(self.k)) != len(self.k):
            raise ValueError(f"k: got {self.k}, allowed: distinct whole numbers >= 1")
        if self.backend == "faiss" and importlib.util.find_spec("faiss") is None:
            raise ValueError("backend: 'faiss' needs faiss-cpu, which is not installed "
                             "(pip install 'sslstudy[faiss]'); allowed without it: auto, torch")
        return self


class EmbeddingConfig(_Strict):
    """2-D maps of held-out images' features."""

    method: Literal[EMBEDDING_METHODS] = "tsne"  # type: ignore[valid-type]
    points: int = Field(2000, ge=10, description="held-out images mapped (at most)")

    @model_validator(mode="after")
    def _installed(self) -> EmbeddingConfig:
        if self.method == "umap" and importlib.util.find_spec("umap") is None:
            raise ValueError("method: 'umap' needs umap-learn, which is not installed "
                             "(pip install 'sslstudy[umap]'); allowed without it: tsne, pca")
        return self


class EvaluationConfig(_Strict):
    """The source documents' evaluation protocols; absent keys are not run."""

    on: Literal["final", "confirm"] = Field(
        "final", description="final: at every trial's final evaluation; confirm: only in "
        "runs of fixed configurations (confirm, sweep, train)"
    )
    finetune: FinetuneConfig | None = None
    pruning: PruningConfig | None = None
    retrieval: RetrievalConfig | None = None
    embedding: EmbeddingConfig | None = None

    @model_validator(mode="before")
    @classmethod
    def _yaml_on(cls, data: Any) -> Any:
        """YAML 1.1 (PyYAML's safe loader) reads the unquoted key ``on`` as the boolean
        true; here it can only mean ``on``."""
        if isinstance(data, dict) and True in data:
            data = {("on" if key is True else key): value for key, value in data.items()}
        return data

    @property
    def metrics(self) -> list[str]:
        """Every metric the protocols log (test forms)."""
        names: list[str] = []
        if self.finetune is not None:
            for labels in self.finetune.label_budgets:
                names += [finetune_metric(mode, labels) for mode in self.finetune.modes]
                if self.finetune.supervised_baseline:
                    names.append(supervised_metric(labels))
        if self.pruning is not None:
            names += [pruned_metric(s, label_budget(f)) for f in self.pruning.fractions
                      for s in self.pruning.sparsities]
        if self.retrieval is not None:
            names += [*map(retrieval_precision, self.retrieval.k),
                      retrieval_map(max(self.retrieval.k))]
        return names


class TrackingConfig(_Strict):
    tracking_uri: str = "sqlite:///mlflow.db"
    experiment: str | None = Field(None, min_length=1, description="defaults to the study name")


class MethodConfig(_Strict):
    space: dict[str, Any] = Field(default_factory=dict)
    replace_space: bool = False


class StudyConfig(_Strict):
    name: str = Field("study", pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length=100)
    seed: int = Field(0, ge=0)
    seed_policy: Literal["shared", "per_trial"] = Field(
        "shared", description="every trial with `seed` (common random numbers), or each "
        "trial with a seed of its own"
    )
    storage_path: Path = Path("ray_results")
    data: DataConfig = DataConfig()
    train: TrainConfig = TrainConfig()
    search: SearchConfig = SearchConfig()
    resources: ResourcesConfig = ResourcesConfig()
    tracking: TrackingConfig = TrackingConfig()
    methods: dict[str, MethodConfig] = Field(min_length=1)
    sweep: SweepConfig | None = None
    evaluation: EvaluationConfig = EvaluationConfig()

    @model_validator(mode="after")
    def _consistent(self, info: ValidationInfo) -> StudyConfig:
        unknown = sorted(set(self.methods) - set(METHODS))
        if unknown:
            raise ValueError(
                f"methods.{unknown[0]}: unknown method; allowed: {', '.join(sorted(METHODS))}"
            )
        # ``sslstudy train`` runs one configuration: the search section does not apply.
        if not (info.context or {}).get(SINGLE_RUN):
            self._search_fits_training()
        if self.train.sync_bn and (
            self.resources.workers_per_trial < 2 or self.resources.gpus_per_worker == 0
        ):
            raise ValueError(
                "train.sync_bn: needs workers_per_trial > 1 on GPUs (SyncBatchNorm has no "
                "CPU implementation)"
            )
        if self.resources.gpus_per_worker > 0 and self.train.device == "cpu":
            raise ValueError("train.device: 'cpu' contradicts resources.gpus_per_worker > 0")
        if self.train.precision == "fp16" and not (
            self.train.device == "cuda" or self.resources.gpus_per_worker > 0
        ):
            raise ValueError(
                "train.precision: fp16 needs a GPU (train.device: cuda or "
                "resources.gpus_per_worker > 0); on CPU use bf16 or fp32"
            )
        return self

    def _search_fits_training(self) -> None:
        self._check_objective()
        if self.search.grace_period > self.train.epochs:
            raise ValueError(
                f"search.grace_period: must be at most train.epochs ({self.train.epochs}), "
                f"got {self.search.grace_period}"
            )

    def _check_objective(self) -> None:
        """``search.metric`` is a measure every evaluation of every search trial logs."""
        metric = self.search.metric
        if metric in SEARCH_METRICS:
            probe = SEARCH_METRICS[metric]
            if probe is not None and getattr(self.train, probe) != "every":
                raise ValueError(
                    f"train.{probe}: must be 'every' when search.metric is {metric} "
                    "(the scheduler needs the metric at every evaluation)"
                )
        elif metric in self.evaluation.metrics:
            if self.evaluation.on != "final":
                raise ValueError(
                    f"evaluation.on: must be 'final' when search.metric is {metric} (every "
                    "search trial must compute it)"
                )
        else:
            logged = self.evaluation.metrics
            raise ValueError(
                f"search.metric: unknown {metric!r}; allowed: {', '.join(SEARCH_METRICS)}"
                + (f", or what the evaluation section logs: {', '.join(logged)}" if logged
                   else ", or a metric of a protocol enabled in the evaluation section")
            )

    @property
    def experiment(self) -> str:
        return self.tracking.experiment or self.name

    @property
    def objective(self) -> str:
        """The metric the search optimises: the validation form of ``search.metric``."""
        return validation(self.search.metric)

    def spaces(self) -> dict[str, SearchSpace]:
        """Each method's validated search space (default merged with the overrides), which
        must not admit values that break the method's constraints."""
        out = {}
        for method, method_cfg in self.methods.items():
            try:
                out[method] = build_space(
                    method,
                    declared_hyperparameters(method),
                    method_cfg.space,
                    constraints=METHODS[method].constraints,
                    replace_defaults=method_cfg.replace_space,
                    where=f"methods.{method}.space",
                )
            except SearchSpaceError as exc:
                raise ConfigError(str(exc)) from None
        return out


def _allowed_keys(loc: tuple[Any, ...]) -> list[str]:
    """The field names allowed where ``loc`` points, for "unknown key" messages."""
    model: type[BaseModel] = StudyConfig
    parts = list(loc[:-1])
    while parts:
        part = parts.pop(0)
        if model is StudyConfig and part == "methods":
            parts = parts[1:]
            model = MethodConfig
            continue
        field = model.model_fields.get(part) if isinstance(part, str) else None
        annotation = field.annotation if field is not None else None
        if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
            # An optional section (``X | None``): its model.
            annotation = next((a for a in typing.get_args(annotation) if a is not type(None)),
                              None)
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return []
        model = annotation
    return list(model.model_fields)


def _is_number(annotation: Any) -> bool:
    """Whether a field of this type takes a number (int or float, or a union with one)."""
    if annotation is int or annotation is float:
        return True
    return any(_is_number(arg) for arg in typing.get_args(annotation))


def _admits_bool(annotation: Any) -> bool:
    """Whether a field of this type takes ``true``/``false``: bool, Any, or a union or
    literal that holds one."""
    if annotation is bool or annotation is Any:
        return True
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) is Literal:
        return any(isinstance(arg, bool) for arg in args)
    return any(_admits_bool(arg) for arg in args)


def _one_line(error: ValidationError) -> str:
    first = error.errors()[0]
    loc = tuple(first["loc"])
    path = ".".join(str(p) for p in loc) or "config"
    if first["type"] == "extra_forbidden":
        allowed = _allowed_keys(loc)
        return f"{path}: unknown key; allowed: {', '.join(allowed)}"
    message = first["msg"].removeprefix("Value error, ")
    if first["type"] == "value_error":
        # Validators name the offending field first, relative to where they are declared.
        return f"{path}.{message}" if loc else message
    return f"{path}: {message} (got {first.get('input')!r})"


def _set_path(data: dict[str, Any], dotted: str, value: Any) -> None:
    node = data
    *parents, leaf = dotted.split(".")
    for key in parents:
        child = node.setdefault(key, {})
        if not isinstance(child, dict):
            raise ConfigError(f"{key}: must be a mapping, got {child!r}")
        node = child
    node[leaf] = value


def parse_config(
    raw: Any, overrides: Mapping[str, Any] | None = None, single_run: bool = False
) -> StudyConfig:
    """Validate already-loaded YAML data; ``overrides`` are dotted paths from CLI flags.
    ``single_run``: the config is for one run, whose checks leave out the search section
    (a 1-epoch config must not fail on ASHA's grace period)."""
    if raw is None:
        raise ConfigError("config: the file is empty; it needs at least methods")
    if not isinstance(raw, dict):
        raise ConfigError(f"config: the top level must be a mapping, got {type(raw).__name__}")
    data = copy.deepcopy(raw)  # overrides must not reach into the caller's mappings
    for dotted, value in (overrides or {}).items():
        if value is not None:
            _set_path(data, dotted, value)
    try:
        config = StudyConfig.model_validate(data, context={SINGLE_RUN: single_run})
    except ValidationError as exc:
        raise ConfigError(_one_line(exc)) from None
    config.spaces()
    return config


def load_config(
    path: Path, overrides: Mapping[str, Any] | None = None, single_run: bool = False
) -> StudyConfig:
    try:
        text = Path(path).read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config file {str(path)!r}: cannot read ({exc.__class__.__name__})") \
            from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        # The safe loader refuses tags that build Python objects (!!python/...).
        what = ("a YAML tag that is not plain data" if isinstance(exc, yaml.constructor.
                ConstructorError) else "invalid YAML")
        raise ConfigError(f"config file {str(path)!r}: {what}{where}") from None
    return parse_config(raw, overrides, single_run)


def config_as_dict(config: StudyConfig) -> dict[str, Any]:
    return config.model_dump(mode="json")


def setting_default(dotted: str) -> tuple[bool, Any]:
    """(whether the schema gives the setting ``dotted`` (``search.sampler``) a default,
    that default as :func:`config_as_dict` writes it). Settings inside a mapping of the
    user's, such as a method's space, have none."""
    model: type[BaseModel] | None = StudyConfig
    *sections, leaf = dotted.split(".")
    for key in sections:
        field = model.model_fields.get(key) if model else None
        model = _model_in(field.annotation) if field else None
    field = model.model_fields.get(leaf) if model else None
    if field is None or field.is_required():
        return False, None
    default = field.get_default(call_default_factory=True)
    return True, TypeAdapter(field.annotation).dump_python(default, mode="json")


def _model_in(annotation: Any) -> type[BaseModel] | None:
    """The config section a field holds (``SearchConfig``, ``ConfirmConfig | None``)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    return next((m for m in map(_model_in, typing.get_args(annotation)) if m), None)
