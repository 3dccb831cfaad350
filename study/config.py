"""The study config: a YAML file validated by a pydantic schema.

Unknown keys, wrong types and out-of-range values are rejected with one line that names
the field and what is allowed; nothing is created before the whole config, including
every method's search space, has been validated.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from search_spaces import SearchSpace, SearchSpaceError, build_space
from tracking.schema import SEARCH_METRICS
from trainables.backbones import BACKBONE_STAGES, BACKBONES
from trainables.data import DATASETS
from trainables.hyperparameters import declared_hyperparameters
from trainables.methods import METHODS


class ConfigError(ValueError):
    """Invalid user input; the CLI prints it as one line and exits with status 2."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DataConfig(_Strict):
    dataset: str = "shapes"
    data_dir: Path | None = None
    download: bool = False
    image_size: int | None = Field(None, ge=8, le=1024)
    num_train: int = Field(4096, ge=64, description="generated datasets only")
    num_test: int = Field(1024, ge=16, description="generated datasets only")

    @model_validator(mode="after")
    def _known_dataset(self) -> DataConfig:
        if self.dataset not in DATASETS:
            raise ValueError(f"dataset: unknown {self.dataset!r}; allowed: {', '.join(DATASETS)}")
        return self


class TrainConfig(_Strict):
    backbone: Literal[BACKBONES] = "small_cnn"  # type: ignore[valid-type]
    epochs: int = Field(10, ge=1, le=100_000)
    eval_every: int = Field(1, ge=1)
    optimizer: Literal["adamw", "sgd"] = "adamw"
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


class SearchConfig(_Strict):
    num_samples: int = Field(8, ge=1, description="trials per method")
    max_concurrent: int | None = Field(None, ge=1)
    metric: Literal[tuple(SEARCH_METRICS)] = "knn_acc"  # type: ignore[valid-type]
    cross_method: bool = Field(
        False,
        description="one search over all methods (method as a categorical choice with "
        "conditional parameters) instead of one search per method",
    )
    mode: Literal["max", "min"] = "max"
    grace_period: int = Field(1, ge=1, description="ASHA: epochs every trial gets")
    reduction_factor: float = Field(2.0, gt=1.0, description="ASHA: keep 1/eta at each rung")
    n_startup_trials: int = Field(4, ge=0, description="TPE: random trials before modelling")
    max_failures: int = Field(
        1, ge=0, description="retries of a failed trial, each from its last checkpoint"
    )


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


class TrackingConfig(_Strict):
    tracking_uri: str = "sqlite:///mlflow.db"
    experiment: str | None = Field(None, min_length=1, description="defaults to the study name")


class MethodConfig(_Strict):
    space: dict[str, Any] = Field(default_factory=dict)
    replace_space: bool = False


class StudyConfig(_Strict):
    name: str = Field("study", pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length=100)
    seed: int = Field(0, ge=0)
    storage_path: Path = Path("ray_results")
    data: DataConfig = DataConfig()
    train: TrainConfig = TrainConfig()
    search: SearchConfig = SearchConfig()
    resources: ResourcesConfig = ResourcesConfig()
    tracking: TrackingConfig = TrackingConfig()
    methods: dict[str, MethodConfig] = Field(min_length=1)

    @model_validator(mode="after")
    def _consistent(self) -> StudyConfig:
        unknown = sorted(set(self.methods) - set(METHODS))
        if unknown:
            raise ValueError(
                f"methods.{unknown[0]}: unknown method; allowed: {', '.join(sorted(METHODS))}"
            )
        probe = SEARCH_METRICS[self.search.metric]
        if probe is not None and getattr(self.train, probe) != "every":
            raise ValueError(
                f"train.{probe}: must be 'every' when search.metric is {self.search.metric} "
                "(the scheduler needs the metric at every evaluation)"
            )
        if self.search.grace_period > self.train.epochs:
            raise ValueError(
                f"search.grace_period: must be at most train.epochs ({self.train.epochs}), "
                f"got {self.search.grace_period}"
            )
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

    @property
    def experiment(self) -> str:
        return self.tracking.experiment or self.name

    def spaces(self) -> dict[str, SearchSpace]:
        """Each method's validated search space (default merged with the overrides)."""
        out = {}
        for method, method_cfg in self.methods.items():
            try:
                out[method] = build_space(
                    method,
                    declared_hyperparameters(method),
                    method_cfg.space,
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
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return []
        model = annotation
    return list(model.model_fields)


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


def parse_config(raw: Any, overrides: Mapping[str, Any] | None = None) -> StudyConfig:
    """Validate already-loaded YAML data; ``overrides`` are dotted paths from CLI flags."""
    if not isinstance(raw, dict):
        raise ConfigError(f"config: the top level must be a mapping, got {type(raw).__name__}")
    data = dict(raw)
    for dotted, value in (overrides or {}).items():
        if value is not None:
            _set_path(data, dotted, value)
    try:
        config = StudyConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_one_line(exc)) from None
    config.spaces()
    return config


def load_config(path: Path, overrides: Mapping[str, Any] | None = None) -> StudyConfig:
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
    return parse_config(raw, overrides)


def config_as_dict(config: StudyConfig) -> dict[str, Any]:
    return config.model_dump(mode="json")
