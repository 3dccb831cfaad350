"""A study in DeepCAVE's own run format, so that DeepCAVE's analyses (configuration
footprint, fANOVA and ablation per budget, budget correlation, Pareto fronts) open it.

One DeepCAVE run (a directory) per method, and one more over all methods when the study
searched across them. A run is five files, as DeepCAVE's ``Run.save`` writes them and its
``DeepCAVERun`` loader reads them:

- ``configspace.json``: the search space in ConfigSpace's JSON format (version 0.4):
  ``uniform_float``/``uniform_int`` with ``log`` for log scales, ``categorical``,
  ``ordinal`` for ranges with a step. A ``log1m`` parameter (a momentum) has no
  ConfigSpace type: it appears as ``one_minus_<name>`` on a log scale, the scale it was
  searched on, as Optuna saw it. Across methods, ``method`` is a categorical and each
  method's parameters, named ``<method>.<param>``, are conditional on it (``EQ``
  conditions), as the cross-method search proposed them.
- ``configs.json``: configuration id -> values; ``origins.json``: id -> why the run
  exists (``search``, ``confirm``, ``train``).
- ``meta.json``: the objectives (the study's metric, maximised or minimised, and the
  time to reach each budget), the budgets (epochs) and the seeds.
- ``history.jsonl``: one trial per evaluation: configuration id, budget (the epoch), seed,
  costs (the metric at that epoch and the seconds since the run started), start and end
  time (seconds since the study started), status (1 success, 4 crashed, 5 aborted) and
  additional data (the MLflow run id; the failure reason as ``traceback``). A line has
  the eight fields of DeepCAVE's example runs: DeepCAVE's loader (1.4) adds the CPU time.

Runs of other tools without a recorded search space are left out: DeepCAVE needs the
space. Sweep runs are left out too (a grid around one configuration is not a search).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from mlflow.entities import Run

from tracking import schema
from tracking.read import HistoryPoint

#: ConfigSpace's JSON format version that DeepCAVE's ConfigSpace (1.2) writes and reads.
FORMAT_VERSION = 0.4
#: DeepCAVE's trial statuses (``deepcave.runs.status.Status``).
SUCCESS, CRASHED, ABORTED = 1, 4, 5
_STATUS = {schema.COMPLETED: SUCCESS, schema.STOPPED_EARLY: SUCCESS, schema.FAILED: CRASHED,
           schema.ORPHANED: ABORTED}
METHOD_PARAM = "method"
LOG1M_PREFIX = "one_minus_"
CROSS_METHOD = "cross_method"


def _default(spec: Mapping[str, Any], low: float, high: float, log: bool) -> float:
    """The middle of a range on its scale: ConfigSpace needs a default inside it."""
    middle = math.sqrt(low * high) if log else (low + high) / 2
    return round(middle) if spec["type"] == "int" else middle


def hyperparameter(name: str, spec: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    """(the name DeepCAVE sees, the ConfigSpace JSON of one searched parameter)."""
    if spec["type"] == "categorical":
        choices = list(spec["choices"])
        return name, {"type": "categorical", "name": name, "choices": choices,
                      "weights": None, "default_value": choices[0], "meta": None}
    low, high, scale = spec["low"], spec["high"], spec.get("scale", "linear")
    if scale == "log1m":
        name = _log1m_name(name)
        low, high = 1.0 - high, 1.0 - low
    step = spec.get("step")
    if step:
        count = math.floor((high - low) / step + 1e-9) + 1
        sequence = [low + i * step for i in range(count)]
        if spec["type"] == "int":
            sequence = [int(v) for v in sequence]
        return name, {"type": "ordinal", "name": name, "sequence": sequence,
                      "default_value": sequence[len(sequence) // 2], "meta": None}
    log = scale in ("log", "log1m")
    kind = "uniform_int" if spec["type"] == "int" else "uniform_float"
    if spec["type"] == "int":
        low, high = int(low), int(high)
    return name, {"type": kind, "name": name, "lower": low, "upper": high,
                  "default_value": _default(spec, low, high, log), "log": log, "meta": None}


def _log1m_name(name: str) -> str:
    head, dot, tail = name.rpartition(".")
    return f"{head}{dot}{LOG1M_PREFIX}{tail}"


def value(text: str, spec: Mapping[str, Any]) -> Any:
    """A param (text in MLflow) as the configuration value DeepCAVE expects."""
    if spec["type"] == "categorical":
        for choice in spec["choices"]:
            if str(choice) == text:
                return choice
        raise ValueError(f"{text!r} is not one of {spec['choices']}")
    number = float(text)
    if spec.get("scale") == "log1m":
        return 1.0 - number
    return round(number) if spec["type"] == "int" else number


def configspace(spaces: Mapping[str, Mapping[str, Any]], cross: bool) -> dict[str, Any]:
    """The ConfigSpace JSON of one method's space (``spaces`` with one entry) or, with
    ``cross``, of all of them under a ``method`` choice."""
    parameters, conditions = [], []
    if cross:
        parameters.append({"type": "categorical", "name": METHOD_PARAM,
                           "choices": list(spaces), "weights": None,
                           "default_value": next(iter(spaces)), "meta": None})
    for method, params in spaces.items():
        for param, spec in params.items():
            name, entry = hyperparameter(f"{method}.{param}" if cross else param, spec)
            parameters.append(entry)
            if cross:
                conditions.append({"child": name, "parent": METHOD_PARAM, "type": "EQ",
                                   "value": method})
    return {"name": None, "hyperparameters": parameters, "conditions": conditions,
            "forbiddens": [], "python_module_version": "1.2.0",
            "format_version": FORMAT_VERSION}


def _configuration(run: Run, method: str, params: Mapping[str, Mapping[str, Any]],
                   cross: bool) -> dict[str, Any] | None:
    """The run's configuration under DeepCAVE's names, or None when a searched parameter
    is missing or outside the space (a run of another space)."""
    config: dict[str, Any] = {METHOD_PARAM: method} if cross else {}
    for param, spec in params.items():
        text = run.data.params.get(param)
        if text is None:
            return None
        name = f"{method}.{param}" if cross else param
        if spec.get("scale") == "log1m":
            name = _log1m_name(name)
        try:
            config[name] = value(text, spec)
        except ValueError:
            return None
    return config


def _objectives(metric: str, mode: str, costs: list[float], times: list[float]
                ) -> list[dict[str, Any]]:
    bounded = metric.endswith("_acc")
    finite = [c for c in costs if math.isfinite(c)] or [0.0]
    return [
        {"name": metric, "lower": 0 if bounded else min(finite),
         "upper": 1 if bounded else max(finite), "lock_lower": bounded,
         "lock_upper": bounded, "optimize": "upper" if mode == "max" else "lower"},
        {"name": "time", "lower": 0, "upper": max(times, default=0.0), "lock_lower": True,
         "lock_upper": False, "optimize": "lower"},
    ]


def deepcave_run(
    runs: Iterable[Run], history: Iterable[HistoryPoint],
    spaces: Mapping[str, Mapping[str, Mapping[str, Any]]], metric: str, mode: str,
    cross: bool,
) -> dict[str, Any]:
    """The five files of one DeepCAVE run (file name -> content) of ``runs`` over
    ``spaces`` (method -> param -> spec: one method, or every method with ``cross``)."""
    points: dict[str, list[HistoryPoint]] = {}
    for point in history:
        if point.key == metric:
            points.setdefault(point.run_id, []).append(point)
    runs = [r for r in runs if r.data.tags.get(schema.TAG_METHOD) in spaces]
    origin_time = min((r.info.start_time or 0 for r in runs), default=0)
    configs: list[dict[str, Any]] = []
    origins: list[str] = []
    lines: list[list[Any]] = []
    costs: list[float] = []
    times: list[float] = []
    for run in sorted(runs, key=lambda r: r.info.start_time or 0):
        tags = run.data.tags
        method = tags[schema.TAG_METHOD]
        status = _STATUS.get(tags.get(schema.TAG_STATUS, ""))
        config = _configuration(run, method, spaces[method], cross)
        if status is None or config is None:
            continue
        if config not in configs:
            configs.append(config)
            origins.append(tags.get(schema.TAG_RUN_KIND, schema.KIND_SEARCH))
        config_id = configs.index(config)
        seed = int(float(run.data.params.get(schema.PARAM_SEED, -1)))
        started = (run.info.start_time or origin_time) / 1000.0
        start = started - origin_time / 1000.0
        extra: dict[str, Any] = {"mlflow_run_id": run.info.run_id}
        mine = sorted(points.get(run.info.run_id, []), key=lambda p: p.step)
        for point in mine:
            elapsed = max(0.0, point.timestamp / 1000.0 - started)
            cost = point.value if math.isfinite(point.value) else None
            if cost is not None:
                costs.append(cost)
            times.append(elapsed)
            lines.append([config_id, point.step, seed, [cost, elapsed], round(start, 2),
                          round(start + elapsed, 2), SUCCESS, extra])
        if status != SUCCESS:
            # It failed after its last evaluation (the first epoch if it logged none).
            budget = mine[-1].step + 1 if mine else 1
            max_budget = tags.get(schema.TAG_MAX_BUDGET)
            if max_budget:
                budget = min(budget, int(float(max_budget)))
            ended = ((run.info.end_time or run.info.start_time or 0) / 1000.0) - started
            extra = {**extra, "traceback": tags.get(schema.TAG_FAILURE_REASON, "")}
            lines.append([config_id, budget, seed, [None, max(0.0, ended)], round(start, 2),
                          round(start + max(0.0, ended), 2), status, extra])
    meta = {
        "objectives": _objectives(metric, mode, costs, times),
        "budgets": sorted({line[1] for line in lines}),
        "seeds": sorted({line[2] for line in lines}),
    }
    return {
        "configspace.json": configspace(spaces, cross),
        "configs.json": {str(i): c for i, c in enumerate(configs)},
        "origins.json": {str(i): o for i, o in enumerate(origins)},
        "meta.json": meta,
        "history.jsonl": lines,
    }


def write_run(directory: Path, files: Mapping[str, Any]) -> None:
    directory.mkdir(parents=True)
    for name, content in files.items():
        if name.endswith(".jsonl"):
            text = "".join(json.dumps(line) + "\n" for line in content)
        else:
            text = json.dumps(content, indent=2)
        (directory / name).write_text(text)
