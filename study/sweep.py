"""``sslstudy sweep``: the papers' own sensitivity experiment.

One or two hyperparameters take each of a list of values around a base configuration
(the best of an existing study, the method's defaults, or values from a YAML file), all
other hyperparameters fixed, every cell with several seeds, at the full budget: a Ray
Tune grid, no Optuna and no early stopping. The runs are children of a parent run tagged
``sslstudy.role: sweep`` (with the sweep's spec as ``sweep.json``), in the study's
experiment; ``sslstudy analyze`` turns them into a table of mean +- std per value.
"""

from __future__ import annotations

import itertools
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from study import checks
from study.config import ConfigError, StudyConfig, SweepConfig, config_as_dict, load_config
from study.launch import analyze_command, check_tracking, launch, read_state, resume_state
from study.settings import study_root
from tracking import schema
from tracking.read import child_runs
from tracking.runs import TrackingTarget, end_study_run, get_or_create_experiment, source_tags
from trainables.hyperparameters import declared_hyperparameters, resolve_trial

logger = logging.getLogger("sslstudy")
#: The Tuner of a sweep, inside the sweep's own directory.
SWEEP = "sweep"


@dataclass(frozen=True)
class SweepSpec:
    """What a sweep varies: ``param`` over ``values`` (and ``param2`` over ``values2``)."""

    method: str
    param: str
    values: tuple[Any, ...]
    param2: str | None = None
    values2: tuple[Any, ...] = ()
    around: str = "defaults"
    seeds: int = 3

    @property
    def name(self) -> str:
        return "-".join(["sweep", self.method, self.param, *([self.param2] if self.param2
                                                              else [])])

    def cells(self) -> list[dict[str, Any]]:
        if self.param2 is None:
            return [{self.param: v} for v in self.values]
        return [{self.param: v, self.param2: w}
                for v, w in itertools.product(self.values, self.values2)]


def typed_values(method: str, flag: str, param: str, given: Sequence[Any]) -> tuple[Any, ...]:
    """The values of ``param`` (text from a flag, or YAML values), each read as the
    hyperparameter's kind and checked against its domain."""
    declared = declared_hyperparameters(method)
    if param not in declared:
        raise ConfigError(f"--{flag}: {param!r} is not a hyperparameter of {method}; allowed: "
                          f"{', '.join(sorted(declared))}")
    values_flag = "--values" if flag == "param" else "--values2"
    if not given:
        raise ConfigError(f"{values_flag}: expected V1,V2,... for {param}")
    try:
        values = tuple(declared[param].parse(param, v) if isinstance(v, str)
                       else declared[param].check(param, v) for v in given)
    except ValueError as exc:
        raise ConfigError(f"{values_flag} {exc}") from None
    if len(set(map(repr, values))) != len(values):
        raise ConfigError(f"{values_flag}: {param} lists a value twice: {list(given)}")
    return values


def _best_of_study(config: StudyConfig, method: str) -> dict[str, Any]:
    """The best completed configuration of ``method`` in the study of this config, on its
    validation objective at the full budget."""
    from study.confirm import _values

    state = read_state(study_root(config), flag="--around best")
    runs = [r for r in child_runs(state["tracking_uri"], state["experiment_id"],
                                  state["parent_run_id"])
            if r.data.tags.get(schema.TAG_METHOD) == method
            and r.data.tags.get(schema.TAG_RUN_KIND, schema.KIND_SEARCH) == schema.KIND_SEARCH
            and r.data.tags.get(schema.TAG_STATUS) == schema.COMPLETED
            and config.objective in r.data.metrics]
    if not runs:
        raise ConfigError(f"--around best: the study {config.name!r} has no completed trial "
                          f"of {method} with {config.objective}")
    sign = 1.0 if config.search.mode == "max" else -1.0
    best = max(runs, key=lambda r: sign * r.data.metrics[config.objective])
    return _values(method, best.data.params)


def base_values(config: StudyConfig, method: str, around: str) -> dict[str, Any]:
    """The configuration the sweep varies around."""
    declared = declared_hyperparameters(method)
    if around == "defaults":
        return config.spaces()[method].defaults(declared)
    if around == "best":
        return _best_of_study(config, method)
    path = Path(around)
    try:
        given = yaml.safe_load(path.read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ConfigError(f"--around: cannot read {around!r} as best, defaults or a YAML "
                          f"file ({type(exc).__name__})") from None
    if not isinstance(given, dict):
        raise ConfigError(f"--around: {around!r} must hold a mapping of hyperparameters")
    return {**config.spaces()[method].defaults(declared), **given}


def plan_sweep(config: StudyConfig, spec: SweepSpec) -> list[dict[str, Any]]:
    """Every cell's full configuration, each checked as a trial would check it."""
    base = base_values(config, spec.method, spec.around)
    cells = []
    for cell in spec.cells():
        values = {**base, **cell}
        try:
            resolve_trial(spec.method, values)
        except ValueError as exc:
            raise ConfigError(f"--around {exc}") from None
        cells.append(values)
    return cells


def run_sweep(
    config_path: Path, overrides: Mapping[str, Any], flags: Mapping[str, Any],
    address: str | None, resume: bool,
) -> int:
    """``flags``: the command's sweep flags (method, param, values, ...; None where not
    given), over the config's ``sweep`` section."""
    from study.grid import FixedRun, run_fixed

    config = load_config(config_path, overrides)
    spec = sweep_spec(config, flags)
    cells = plan_sweep(config, spec)
    tracking_uri = check_tracking(config, address)
    checks.check_local_device(config, address)
    sweep_config = sweep_study_config(config, spec)
    root = study_root(sweep_config)
    # A sweep's name comes from its study, method and parameters: there is no --name.
    state = resume_state(sweep_config, root, resume, rename="")
    dataset = checks.load_study_dataset(config)
    for values in cells:
        checks.check_image_size("--values", spec.method,
                                resolve_trial(spec.method, values).method, dataset)
    sizes = sorted({int(c["batch_size"]) for c in cells})
    checks.check_batch_size("--values", sizes[-1], dataset)
    uneven = [b for b in sizes if b % config.resources.workers_per_trial]
    if uneven:
        raise ConfigError(f"--values: batch size {uneven[0]} does not split evenly over "
                          f"resources.workers_per_trial ({config.resources.workers_per_trial})")
    runs = [
        FixedRun(spec.method, values, config.seed + seed,
                 tags={schema.TAG_SWEEP_CELL: json.dumps(cell, default=str)},
                 label=f"{spec.method} sweep {_describe(cell)} seed {seed + 1}/{spec.seeds}")
        for values, cell in zip(cells, spec.cells(), strict=True)
        for seed in range(spec.seeds)
    ]

    def start_parent() -> TrackingTarget:
        return start_sweep_run(tracking_uri, config, sweep_config.name, spec)

    with launch(sweep_config, root, state, address, dataset, tracking_uri,
                start_parent) as run:
        results = run_fixed(sweep_config, SWEEP, runs, run.data, run.target, run.max_concurrent,
                            resume, schema.KIND_SWEEP)
    failed = sum(r.error is not None for r in results)
    end_study_run(run.target, {"runs": len(results), "failed": failed},
                  failed=failed == len(results))
    logger.info("sweep of %s: %d runs, %d failed", spec.name, len(results), failed)
    logger.info("write the table: %s", analyze_command(config.experiment, tracking_uri,
                                                       root / "report"))
    return 0 if failed < len(results) else 1


def sweep_study_config(config: StudyConfig, spec: SweepSpec) -> StudyConfig:
    """The config a sweep runs and saves: named after what it varies, its ``sweep``
    section the resolved spec (flags included), so that ``--resume`` with other values,
    seeds or base refuses instead of continuing the saved grid under new flags."""
    section = SweepConfig(method=spec.method, param=spec.param, values=list(spec.values),
                          param2=spec.param2, values2=list(spec.values2) or None,
                          around=spec.around, seeds=spec.seeds)
    return config.model_copy(update={"name": f"{config.name}-{spec.name}", "sweep": section})


def _describe(cell: Mapping[str, Any]) -> str:
    return " ".join(f"{k}={v}" for k, v in cell.items())


def start_sweep_run(
    tracking_uri: str, config: StudyConfig, name: str, spec: SweepSpec
) -> TrackingTarget:
    """The sweep's parent run, in the study's experiment."""
    from mlflow.tracking import MlflowClient

    experiment_id = get_or_create_experiment(tracking_uri, config.experiment)
    client = MlflowClient(tracking_uri)
    run = client.create_run(experiment_id, run_name=name, tags={
        schema.TAG_ROLE: schema.ROLE_SWEEP, schema.TAG_STUDY: name,
        schema.TAG_STUDY_METRIC: config.objective, schema.TAG_STUDY_MODE: config.search.mode,
        **source_tags("sweep"),
    })
    run_id = run.info.run_id
    client.log_dict(run_id, config_as_dict(config), schema.RESOLVED_CONFIG)
    client.log_dict(run_id, {
        "method": spec.method, "param": spec.param, "values": list(spec.values),
        "param2": spec.param2, "values2": list(spec.values2), "around": spec.around,
        "seeds": spec.seeds, "lr_scaling": config.train.lr_scaling,
        "budget_unit": config.train.budget_unit,
    }, schema.SWEEP_SPEC)
    return TrackingTarget(tracking_uri, experiment_id, run_id)


def sweep_spec(config: StudyConfig, flags: Mapping[str, Any]) -> SweepSpec:
    """The sweep the config's ``sweep`` section and the flags (which win) describe, every
    value checked against its domain."""
    from trainables.methods import METHODS

    section = config.sweep.model_dump() if config.sweep is not None else {}
    given = {k: v for k, v in section.items() if v is not None}
    given.update({k: v for k, v in flags.items() if v is not None})
    for key in ("method", "param", "values"):
        if key not in given:
            raise ConfigError(f"--{key}: required (or the config's sweep.{key})")
    method = given["method"]
    if method not in METHODS:
        raise ConfigError(f"--method: unknown {method!r}; allowed: {', '.join(sorted(METHODS))}")
    if method not in config.methods:
        raise ConfigError(f"--method: {method!r} is not in the config; allowed: "
                          f"{', '.join(config.methods)}")
    param2, values2 = given.get("param2"), given.get("values2")
    if (param2 is None) != (values2 is None):
        missing = "--values2" if values2 is None else "--param2"
        raise ConfigError(f"{missing}: --param2 and --values2 go together")
    if param2 is not None and param2 == given["param"]:
        raise ConfigError(f"--param2: must differ from --param ({param2})")
    return SweepSpec(
        method, given["param"], typed_values(method, "param", given["param"], given["values"]),
        param2, typed_values(method, "param2", param2, values2) if param2 else (),
        given.get("around", "defaults"), int(given.get("seeds", 3)),
    )
