"""Read an MLflow experiment into tidy tables.

Works on any experiment whose runs have params and metrics: platform-specific tags
(``method``, ``status``, ``budget``) are used when present and inferred otherwise. Parent
runs (a study's own run, or any run that other runs name as ``mlflow.parentRunId``) are
not trials and are left out.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from analysis.errors import AnalysisInputError
from tracking import schema
from tracking.read import (
    all_runs,
    find_experiment,
    metric_history,
    open_store,
    recorded_spaces,
    split_parents,
)

RESERVED_COLUMNS = {
    "run_id", "run_name", "method", "status", "budget", "max_budget", "duration_s",
    "failure_reason", "study",
}
_STATUS_FROM_MLFLOW = {"FINISHED": schema.COMPLETED, "FAILED": schema.FAILED,
                       "KILLED": schema.FAILED}
_LOWER_IS_BETTER = ("loss", "error", "err")


@dataclass
class Experiment:
    """The trials of one experiment as tables, plus what is known of their search spaces."""

    runs: pd.DataFrame
    history: pd.DataFrame
    params: list[str]
    metrics: list[str]
    #: method -> param -> spec (type, scale, ...), from the studies' search_spaces.json.
    spaces: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)


def _lower_is_better(metric: str) -> bool:
    return any(word in metric.lower() for word in _LOWER_IS_BETTER)


def _coerce(values: pd.Series) -> pd.Series:
    """Params are strings in MLflow: make a column numeric when every value parses as a
    number (booleans and words stay categorical)."""
    present = values.dropna()
    if present.empty or present.isin(["True", "False", "true", "false"]).any():
        return values
    numeric = pd.to_numeric(present, errors="coerce")
    if numeric.isna().any():
        return values
    return pd.to_numeric(values, errors="coerce")


def load_experiment(tracking_uri: str, experiment: str, metric: str, mode: str) -> Experiment:
    client = open_store(tracking_uri)
    found = find_experiment(client, experiment)
    parents, trials = split_parents(list(all_runs(client, found.experiment_id)))
    if not trials:
        raise AnalysisInputError(f"--experiment: {experiment!r} has no trial runs")

    rows, history_rows = [], []
    for run in trials:
        tags, info = run.data.tags, run.info
        row: dict[str, Any] = {
            "run_id": info.run_id,
            "run_name": info.run_name,
            "method": tags.get(schema.TAG_METHOD) or run.data.params.get("method") or "all",
            "study": tags.get(schema.TAG_STUDY),
            "status": tags.get(schema.TAG_STATUS)
            or _STATUS_FROM_MLFLOW.get(info.status, schema.RUNNING),
            "failure_reason": tags.get(schema.TAG_FAILURE_REASON),
            "duration_s": ((info.end_time - info.start_time) / 1000.0)
            if info.end_time and info.start_time else math.nan,
            "max_budget": float(tags[schema.TAG_MAX_BUDGET])
            if schema.TAG_MAX_BUDGET in tags else math.nan,
        }
        for name, value in run.data.params.items():
            row[name if name not in RESERVED_COLUMNS else f"param_{name}"] = value
        steps_seen = []
        for key in run.data.metrics:
            points = metric_history(client, info.run_id, key)
            values = [p.value for p in points]
            prefer_min = _lower_is_better(key) if key != metric else mode == "min"
            row[f"final_{key}"] = run.data.metrics[key]
            row[f"best_{key}"] = min(values) if prefer_min else max(values)
            history_rows += [
                {"run_id": info.run_id, "metric": key, "step": p.step, "value": p.value}
                for p in points
            ]
            if key == metric:
                steps_seen = [p.step for p in points]
        row["budget"] = float(tags[schema.TAG_BUDGET]) if schema.TAG_BUDGET in tags else (
            float(max(steps_seen)) if steps_seen else math.nan
        )
        rows.append(row)

    table = pd.DataFrame(rows)
    params = sorted({
        (n if n not in RESERVED_COLUMNS else f"param_{n}")
        for r in trials for n in r.data.params
    } - {"method"})
    for name in params:
        table[name] = _coerce(table[name])
    metrics = sorted({k for r in trials for k in r.data.metrics})
    # A step logged twice (an epoch retrained after a crash) counts once, with its last value.
    history = pd.DataFrame(history_rows, columns=["run_id", "metric", "step", "value"])
    history = history.drop_duplicates(["run_id", "metric", "step"], keep="last")
    return Experiment(table, history, params, metrics, recorded_spaces(client, parents))
