"""``sslstudy analyze``: tables, figures and a self-contained HTML report for one MLflow
experiment.

Writes, into ``--out``: ``report.html``; ``runs.parquet`` and ``history.parquet`` (every
run and every logged value); ``importance.csv``, ``sensitivity.csv``, ``effects.csv``,
``noise.csv``, ``budgets.csv``, ``failures.csv`` and, for several methods,
``comparison.csv``, for sweeps ``sweeps.csv``, for the evaluation protocols
``protocols.csv`` and ``retrieval.csv``; the figures in ``plots/``. The README's
analysis section explains every column and figure.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd

from analysis import plots
from analysis.budgets import BUDGET_COLUMNS, REQUESTS, parse_request
from analysis.comparison import COLUMNS as COMPARISON_COLUMNS
from analysis.comparison import compare_method
from analysis.errors import AnalysisInputError
from analysis.failures import FAILURE_COLUMNS
from analysis.html import render_report
from analysis.importance import IMPORTANCE_COLUMNS
from analysis.method import MethodAnalysis, Scored, analyse_method, score
from analysis.noise import NOISE_COLUMNS
from analysis.protocols import protocols_section
from analysis.response import EFFECT_COLUMNS, SENSITIVITY_COLUMNS
from analysis.runs import Experiment, default_metric, load_experiment, open_experiment
from analysis.sweeps import SWEEP_COLUMNS, mark_best, sweep_plots, sweep_runs, sweep_table
from analysis.views import build_views
from tracking import schema
from tracking.read import read_artifact, recorded_objective
from tracking.runs import log_report
from tracking.schema import KNN_ACC, validation
from tracking.server import open_instructions
from tracking.uris import resolve_tracking_uri

logger = logging.getLogger("sslstudy")
#: The metrics analysed when neither the flag nor the study names one: the validation
#: kNN accuracy a search optimises by default, else (experiments from before the
#: validation split, or of other tools) the test one.
DEFAULT_METRICS = (validation(KNN_ACC), KNN_ACC)


def run_analysis(
    tracking_uri: str, experiment: str, metric: str | None, mode: str | None, budget: str,
    out: Path,
) -> int:
    """Write the report of ``experiment`` to ``out``, which the command has checked can be
    created."""
    budget = parse_request(budget)
    tracking_uri = resolve_tracking_uri(tracking_uri)
    client, found = open_experiment(tracking_uri, experiment)
    recorded_metric, recorded_mode = recorded_objective(client, found)
    given = metric is not None
    metric = metric or recorded_metric or default_metric(client, found, DEFAULT_METRICS)
    mode = mode or recorded_mode or "max"
    data = load_experiment(client, found, metric, mode)
    every_run_failed = not data.runs.empty and bool(
        (data.runs["status"] == schema.FAILED).all())
    # A study whose every trial failed logged no score: its report is the failures (a
    # --metric the user names must still be one that was logged).
    if metric not in data.metrics and (given or not every_run_failed):
        field = "--metric" if given else "the experiment's metric"
        raise AnalysisInputError(
            f"{field}: no run logged {metric!r}; logged: {', '.join(data.metrics) or 'none'}"
        )
    longest = data.runs["budget"].max() if not data.runs.empty else np.nan
    if budget not in REQUESTS and float(budget) > longest:
        raise AnalysisInputError(f"--budget: no run trained for {budget} epochs; the longest "
                                 f"reached {longest:g}")
    plots_dir = out / "plots"
    plots_dir.mkdir(parents=True, exist_ok=True)
    swept = sweep_runs(data.runs)
    searched = replace(data, runs=data.runs.drop(index=swept.index))
    analyses = [
        analyse_method(searched, method, metric, mode, budget, plots_dir)
        for method in sorted(searched.runs["method"].unique())
    ]
    if schema.is_test_score(metric) and metric in data.metrics and analyses:
        # Hyperparameters are never selected on the test split; analysing a test score is
        # fine for sensitivity, but the best and recommended configurations, and the one
        # the protocols are reported for, are chosen on it. (A sweep's table marks its
        # best cell but recommends nothing.)
        hint = (f"analyse {validation(metric)} to select a configuration"
                if validation(metric) in data.metrics else
                f"no run logged {validation(metric)}: a study whose search.metric is "
                f"{metric} logs it")
        warning = (f"{metric} is scored on the test split: the best and recommended "
                   f"configurations below, and the protocols' configuration where they are "
                   f"reported, are chosen on it, so their scores are optimistic; {hint}")
        logger.warning(warning)
        for analysis in analyses:
            analysis.warnings.append(warning)
    sweeps = mark_best(sweep_table(data.runs, metric), mode)
    sweep_figures = sweep_plots(sweeps, plots_dir)
    data.runs.to_parquet(out / "runs.parquet", index=False)
    data.history.to_parquet(out / "history.parquet", index=False)
    tables = {
        "importance.csv": _concat([a.importance for a in analyses], IMPORTANCE_COLUMNS),
        "sensitivity.csv": _concat([a.sensitivity for a in analyses], SENSITIVITY_COLUMNS),
        "effects.csv": _concat([a.effects for a in analyses], EFFECT_COLUMNS),
        "noise.csv": pd.DataFrame(
            [{"method": a.method, "metric": metric, "std": a.noise.std,
              "configs": a.noise.configs, "runs": a.noise.runs}
             for a in analyses if a.scored is not None], columns=NOISE_COLUMNS),
        "budgets.csv": _concat([a.budgets for a in analyses], BUDGET_COLUMNS),
        "failures.csv": _concat([a.failure_rates for a in analyses], FAILURE_COLUMNS),
    }
    comparison, comparison_plot, compared_at = _compare(analyses, data, metric, mode,
                                                        plots_dir)
    if not comparison.empty:
        tables["comparison.csv"] = comparison
    if not sweeps.empty:
        tables["sweeps.csv"] = sweeps[SWEEP_COLUMNS]
    for name, table in tables.items():
        table.to_csv(out / name, index=False)
    # The evaluation protocols (analysis.protocols): Table 2, retrieval, embedding maps.
    protocols, protocol_tables = protocols_section(
        searched.runs, data.params, metric, mode, out, plots_dir,
        lambda run_id, path: read_artifact(tracking_uri, run_id, path),
        {a.method: a.recommendation.run_ids for a in analyses if a.recommendation},
    )
    views = build_views(client, found.experiment_id, experiment, tracking_uri, data.parents,
                        analyses, data, metric, out, plots_dir)
    report = out / "report.html"
    report.write_text(render_report(experiment, tracking_uri, metric, mode, analyses,
                                    data.runs, comparison, comparison_plot, compared_at,
                                    sweeps, sweep_figures, protocols, views, data.params))
    studies = [r.info.run_id for r in data.parents
               if r.data.tags.get(schema.TAG_ROLE) == schema.ROLE_STUDY]
    table_names = [*tables, *protocol_tables]
    attached = log_report(tracking_uri, studies, [report, *(out / n for n in table_names)])
    logger.info("report: %s", report.resolve())
    logger.info("open it: %s", report.resolve().as_uri())
    logger.info("tables: runs.parquet, history.parquet, %s; plots in %s",
                ", ".join(table_names), plots_dir.resolve())
    if studies and attached:
        logger.info("the report is also an artifact of the study's MLflow run (%s/)",
                    schema.REPORT_DIR)
    for line in open_instructions(tracking_uri, found.experiment_id):
        logger.info(line)
    return 0


def _compare(
    analyses: list[MethodAnalysis], data: Experiment, metric: str, mode: str, plots_dir: Path
) -> tuple[pd.DataFrame, Path | None, float]:
    """The method comparison, when the experiment holds two or more scored methods: at
    one budget for all, the smallest of their comparison budgets (each method has at
    least as many trials there as at its own)."""
    scored = [a for a in analyses if a.scored is not None and len(a.scored.scores)]
    if len(scored) < 2:
        return pd.DataFrame(columns=COMPARISON_COLUMNS), None, float("nan")
    budget = min(a.scored.budget for a in scored)
    at_budget: dict[str, Scored] = {}
    for a in scored:
        assert a.usable is not None and a.scored is not None
        at_budget[a.method] = a.scored if a.scored.budget == budget else score(
            a.usable, data.history, metric, budget, data.params)
    at_budget = {m: s for m, s in at_budget.items() if len(s.scores)}
    common_n = min(len(s.scores) for s in at_budget.values())
    by_method = {a.method: a for a in scored}
    rows = []
    for method, s in at_budget.items():
        params = by_method[method].params
        scales = {p: by_method[method].scales[p] for p in params}
        rows.append(compare_method(method, s.scores, s.frame[params], scales, budget, mode,
                                   common_n, s.counts, s.stds))
    table = pd.DataFrame(rows, columns=COMPARISON_COLUMNS)
    table = table.sort_values("expected_best", ascending=mode != "max", kind="stable")
    plot = plots.comparison_plot(plots_dir / "method_comparison.png",
                                 {m: s.scores for m, s in at_budget.items()}, metric, budget)
    return table, plot, float(budget)


def _concat(frames: list[pd.DataFrame], columns: list[str]) -> pd.DataFrame:
    frames = [f for f in frames if not f.empty]
    if not frames:
        return pd.DataFrame(columns=columns)
    return pd.concat(frames, ignore_index=True).replace({np.inf: np.nan})
