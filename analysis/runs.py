"""Read an MLflow experiment into tidy tables.

Works on any experiment whose runs have params and metrics: platform-specific tags
(``method``, ``status``, ``budget``) are used when present and inferred otherwise. Parent
runs (a study's own run, or any run that other runs name as ``mlflow.parentRunId``) are
not trials and are left out. Metric histories are read in bulk (see
``tracking.read.metric_histories``), not one request per run and metric.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
from mlflow.entities import Experiment as MlflowExperiment
from mlflow.entities import Run
from mlflow.tracking import MlflowClient

from analysis.errors import AnalysisInputError
from tracking import schema
from tracking.read import (
    all_runs,
    find_experiment,
    metric_histories,
    open_store,
    recorded_spaces,
    split_parents,
)

RESERVED_COLUMNS = {
    "run_id", "run_name", "method", "status", "budget", "max_budget", "duration_s",
    "failure_reason", "study", "run_kind", "replicate_of", "sweep_cell", "parent_run_id",
}
_STATUS_FROM_MLFLOW = {"FINISHED": schema.COMPLETED, "FAILED": schema.FAILED,
                       "KILLED": schema.FAILED}
_LOWER_IS_BETTER = ("loss", "error", "err")


@dataclass
class Experiment:
    """The trials of one experiment as tables, plus what is known of their search spaces."""

    #: One row per trial run: identity, status, budget, params, final_* and best_* metrics.
    runs: pd.DataFrame
    #: Every logged metric value: run_id, metric, step, value.
    history: pd.DataFrame
    #: The hyperparameters: every param but ``seed``, which tells replicates apart.
    params: list[str]
    metrics: list[str]
    #: method -> param -> spec (type, scale, ...), from the studies' search_spaces.json.
    spaces: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    #: The parent runs (studies, sweeps): their references, configs and summaries.
    parents: list[Run] = field(default_factory=list)

    def tpe_studies(self) -> set[str]:
        """Run ids of the studies that searched with TPE past its random start (a study
        of this program records its sampler; one from before there was a choice used
        TPE). Which of their trials TPE chose is not recorded: the first few, and any
        asked while those ran, were random. Other tools' parents are not counted."""
        found = set()
        for run in self.parents:
            params = run.data.params
            if (run.data.tags.get(schema.TAG_ROLE) != schema.ROLE_STUDY
                    or schema.STUDY_PARAM_SAMPLES not in params):
                continue
            sampler = params.get(schema.STUDY_PARAM_SAMPLER, schema.SAMPLER_TPE)
            startup = params.get(schema.STUDY_PARAM_STARTUP)
            if sampler == schema.SAMPLER_TPE and (
                    startup is None or int(startup) < int(params[schema.STUDY_PARAM_SAMPLES])):
                found.add(run.info.run_id)
        return found


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


def open_experiment(tracking_uri: str, experiment: str) -> tuple[MlflowClient, MlflowExperiment]:
    """A client of the store and the experiment named ``experiment`` in it."""
    client = open_store(tracking_uri, check_server=True)
    return client, find_experiment(client, experiment)


def default_metric(
    client: MlflowClient, found: MlflowExperiment, candidates: tuple[str, ...]
) -> str:
    """The first of ``candidates`` that a run of the experiment logged (the last one when
    none did, so that the error names it)."""
    for candidate in candidates[:-1]:
        logged = client.search_runs([found.experiment_id],
                                    filter_string=f"metrics.{candidate} > -1e308",
                                    max_results=1)
        if logged:
            return candidate
    return candidates[-1]


def load_experiment(
    client: MlflowClient, found: MlflowExperiment, metric: str, mode: str
) -> Experiment:
    """The experiment's trials, their metric histories and recorded search spaces;
    ``metric`` and ``mode`` decide which value of the analysed metric counts as a run's
    best."""
    parents, trials = split_parents(list(all_runs(client, found.experiment_id)))
    if not trials:
        raise AnalysisInputError(f"--experiment: {found.name!r} has no trial runs")
    metrics = sorted({k for r in trials for k in r.data.metrics})
    # A step logged twice (an epoch retrained after a crash) counts once, with its last value.
    history = pd.DataFrame(
        [(p.run_id, p.key, p.step, p.value) for p in
         metric_histories(client, [r.info.run_id for r in trials], metrics)],
        columns=["run_id", "metric", "step", "value"],
    ).drop_duplicates(["run_id", "metric", "step"], keep="last").reset_index(drop=True)
    best = _best_values(history, metric, mode)
    metric_steps = history[history["metric"] == metric].groupby("run_id")["step"].max()

    rows = []
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
            # Why the run exists (a search trial unless tagged otherwise), and for
            # confirmation and sweep runs what they repeat or which cell they are.
            "run_kind": tags.get(schema.TAG_RUN_KIND, schema.KIND_SEARCH),
            "replicate_of": tags.get(schema.TAG_REPLICATE_OF),
            "sweep_cell": tags.get(schema.TAG_SWEEP_CELL),
            "parent_run_id": tags.get(schema.TAG_PARENT_RUN),
        }
        for name, value in run.data.params.items():
            row[name if name not in RESERVED_COLUMNS else f"param_{name}"] = value
        for key, value in run.data.metrics.items():
            row[f"final_{key}"] = value
            row[f"best_{key}"] = best.get((info.run_id, key), math.nan)
        row["budget"] = float(tags[schema.TAG_BUDGET]) if schema.TAG_BUDGET in tags else (
            float(metric_steps[info.run_id]) if info.run_id in metric_steps else math.nan
        )
        rows.append(row)

    table = pd.DataFrame(rows)
    names = sorted({
        (n if n not in RESERVED_COLUMNS else f"param_{n}")
        for r in trials for n in r.data.params
    } - {"method"})
    for name in names:
        table[name] = _coerce(table[name])
    params = [n for n in names if n != schema.PARAM_SEED]
    return Experiment(table, history, params, metrics, recorded_spaces(client, parents),
                      parents)


def _best_values(history: pd.DataFrame, metric: str, mode: str) -> dict[tuple[str, str], float]:
    """(run id, metric) -> the best value the run logged: the analysed metric in the
    analysis's mode, others lowest for losses and errors and highest otherwise."""
    if history.empty:
        return {}
    grouped = history.groupby(["run_id", "metric"])["value"]
    lowest, highest = grouped.min(), grouped.max()
    best = {}
    for (run_id, key), low in lowest.items():
        prefer_min = _lower_is_better(key) if key != metric else mode == "min"
        best[(run_id, key)] = float(low if prefer_min else highest[(run_id, key)])
    return best
