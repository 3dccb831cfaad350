"""Read an MLflow experiment into tidy tables.

Works on any experiment whose runs have params and metrics: platform-specific tags
(``method``, ``status``, ``budget``) are used when present and inferred otherwise. Parent
runs (a study's own run, or any run that other runs name as ``mlflow.parentRunId``) are
not trials and are left out.
"""

from __future__ import annotations

import json
import math
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from mlflow.entities import Run
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from analysis.errors import AnalysisInputError
from study.tracking import STUDY_METRIC_TAG, STUDY_MODE_TAG, STUDY_ROLE_TAG

PARENT_TAG = "mlflow.parentRunId"
RESERVED_COLUMNS = {
    "run_id", "run_name", "method", "status", "budget", "max_budget", "duration_s",
    "failure_reason", "study",
}
_STATUS_FROM_MLFLOW = {"FINISHED": "completed", "FAILED": "failed", "KILLED": "failed"}
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


def _client(tracking_uri: str) -> MlflowClient:
    if tracking_uri.startswith("sqlite:///"):
        path = Path(tracking_uri.removeprefix("sqlite:///"))
        if not path.is_file():
            raise AnalysisInputError(f"--tracking-uri: no MLflow database at {str(path)!r}")
    return MlflowClient(tracking_uri)


def _all_runs(client: MlflowClient, experiment_id: str) -> Iterator[Run]:
    token = None
    while True:
        page = client.search_runs([experiment_id], max_results=1000, page_token=token)
        yield from page
        token = page.token
        if not token:
            return


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


def _spaces(client: MlflowClient, parents: list[Run]) -> dict[str, dict[str, dict[str, Any]]]:
    spaces: dict[str, dict[str, dict[str, Any]]] = {}
    for run in sorted(parents, key=lambda r: r.info.start_time or 0):
        with tempfile.TemporaryDirectory() as tmp:
            try:
                path = client.download_artifacts(run.info.run_id, "search_spaces.json", tmp)
            except (MlflowException, OSError):
                continue  # a parent run of another tool: no spaces recorded
            data = json.loads(Path(path).read_text())
        for method, space in data.items():
            spaces.setdefault(method, {}).update(space.get("params", {}))
    return spaces


def recorded_objective(tracking_uri: str, experiment: str) -> tuple[str | None, str | None]:
    """The metric and mode the experiment's studies optimised, when they all agree (what
    ``sslstudy analyze`` reports on by default); None where nothing or several were
    recorded."""
    client = _client(tracking_uri)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        return None, None
    parents = client.search_runs(
        [found.experiment_id], filter_string=f"tags.`{STUDY_ROLE_TAG}` = 'study'"
    )
    metrics = {r.data.tags.get(STUDY_METRIC_TAG) for r in parents} - {None, ""}
    modes = {r.data.tags.get(STUDY_MODE_TAG) for r in parents} - {None, ""}
    return (metrics.pop() if len(metrics) == 1 else None,
            modes.pop() if len(modes) == 1 else None)


def load_experiment(tracking_uri: str, experiment: str, metric: str, mode: str) -> Experiment:
    client = _client(tracking_uri)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        names = [e.name for e in client.search_experiments()]
        raise AnalysisInputError(
            f"--experiment: no experiment named {experiment!r}; found: {', '.join(names) or 'none'}"
        )
    runs = list(_all_runs(client, found.experiment_id))
    parent_ids = {r.data.tags[PARENT_TAG] for r in runs if PARENT_TAG in r.data.tags}
    parents = [r for r in runs if r.info.run_id in parent_ids or
               r.data.tags.get(STUDY_ROLE_TAG) == "study"]
    trials = [r for r in runs if r not in parents]
    if not trials:
        raise AnalysisInputError(f"--experiment: {experiment!r} has no trial runs")

    rows, history_rows = [], []
    for run in trials:
        tags, info = run.data.tags, run.info
        row: dict[str, Any] = {
            "run_id": info.run_id,
            "run_name": info.run_name,
            "method": tags.get("method") or run.data.params.get("method") or "all",
            "study": tags.get("study"),
            "status": tags.get("status") or _STATUS_FROM_MLFLOW.get(info.status, "running"),
            "failure_reason": tags.get("failure_reason"),
            "duration_s": ((info.end_time - info.start_time) / 1000.0)
            if info.end_time and info.start_time else math.nan,
            "max_budget": float(tags["max_budget"]) if "max_budget" in tags else math.nan,
        }
        for name, value in run.data.params.items():
            row[name if name not in RESERVED_COLUMNS else f"param_{name}"] = value
        steps_seen = []
        for key in run.data.metrics:
            points = client.get_metric_history(info.run_id, key)
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
        row["budget"] = float(tags["budget"]) if "budget" in tags else (
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
    return Experiment(table, history, params, metrics, _spaces(client, parents))
