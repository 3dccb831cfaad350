"""``sslstudy analyze``: tables, importance, sensitivity, plots and a self-contained HTML
report for one MLflow experiment."""

from __future__ import annotations

import base64
import html
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from analysis import plots
from analysis.comparison import COLUMNS as COMPARISON_COLUMNS
from analysis.comparison import compare_method
from analysis.errors import AnalysisInputError
from analysis.protocols import protocols_section
from analysis.runs import Experiment, load_experiment
from analysis.sensitivity import (
    IMPORTANCE_EVALUATOR,
    MIN_TRIALS_FOR_IMPORTANCE,
    BudgetChoice,
    Scale,
    choose_budget,
    importance,
    param_scale,
    response,
    values_at_budget,
    varying_params,
)
from tracking.read import read_artifact, recorded_objective
from tracking.schema import KNN_ACC, validation
from tracking.uris import resolve_tracking_uri

#: What a study searches on by default, and so what the analysis reports on.
VAL_KNN = validation(KNN_ACC)
logger = logging.getLogger("sslstudy")
HEATMAP_AXES = ("temperature", "batch_size")


@dataclass
class MethodAnalysis:
    method: str
    budget: BudgetChoice
    trials: int
    failed: pd.DataFrame
    best: dict[str, Any] | None
    best_at_full_budget: bool
    importance: pd.DataFrame
    sensitivity: pd.DataFrame
    plots: list[Path] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    #: The compared trials' scores at the budget, their parameters and scales.
    scores: pd.Series | None = None
    frame: pd.DataFrame | None = None
    scales: dict[str, Scale] = field(default_factory=dict)


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in text)


def _heatmap(
    frame: pd.DataFrame, y: pd.Series, scales: dict[str, Scale], out: Path, method: str,
    metric: str,
) -> Path | None:
    row_param, col_param = HEATMAP_AXES
    if not all(p in frame for p in HEATMAP_AXES):
        return None
    data = pd.DataFrame({"row": frame[row_param], "col": frame[col_param], "y": y}).dropna()
    if data.empty:
        return None
    row_scale = scales.get(row_param, "categorical")
    if row_scale == "categorical" or data["row"].nunique() <= 4:
        data["row_label"] = data["row"].map(lambda v: f"{v:.3g}" if isinstance(v, float) else v)
    else:
        t = np.log10(data["row"]) if row_scale == "log" else data["row"]
        bins = min(5, data["row"].nunique())
        edges = np.linspace(t.min(), t.max(), bins + 1)
        which = np.clip(np.digitize(t, edges[1:-1]), 0, bins - 1)
        centres = (edges[:-1] + edges[1:]) / 2
        centres = 10**centres if row_scale == "log" else centres
        data["row_label"] = [f"{centres[i]:.3g}" for i in which]
        data["row_order"] = which
    data["col_label"] = data["col"].map(lambda v: f"{v:g}" if isinstance(v, float) else str(v))
    order_key = "row_order" if "row_order" in data else "row"
    row_order = data.sort_values(order_key)["row_label"].drop_duplicates().tolist()
    col_order = [
        c for c in data.sort_values("col")["col_label"].drop_duplicates().tolist()
    ]
    grid = data.pivot_table(index="row_label", columns="col_label", values="y", aggfunc="mean")
    counts = data.pivot_table(index="row_label", columns="col_label", values="y",
                              aggfunc="count")
    grid = grid.reindex(index=row_order, columns=col_order)
    counts = counts.reindex(index=row_order, columns=col_order)
    return plots.heatmap(out / f"{_slug(method)}_heatmap_{row_param}_{col_param}.png", method,
                         grid, counts, row_param, col_param, metric)


def analyse_method(
    experiment: Experiment, method: str, metric: str, mode: str, budget_request: str,
    plots_dir: Path,
) -> MethodAnalysis:
    runs = experiment.runs[experiment.runs["method"] == method].set_index("run_id", drop=False)
    failed = runs[runs["status"] == "failed"]
    usable = runs[runs["status"].isin(["completed", "stopped_early"])]
    usable = usable[usable[f"final_{metric}"].notna()] if f"final_{metric}" in usable else \
        usable.iloc[0:0]
    if usable.empty:
        empty = pd.DataFrame()
        return MethodAnalysis(method, BudgetChoice(math.nan, math.nan, 0, 0), len(runs), failed,
                              None, False, empty, empty,
                              notes=[f"no finished trial reported {metric}"])
    budget = choose_budget(usable, budget_request)
    y = values_at_budget(usable, experiment.history, metric, budget.budget)
    frame = usable.loc[y.index]
    spec = experiment.spaces.get(method, {})
    params = varying_params(frame, experiment.params)
    scales = {p: param_scale(p, frame[p], spec.get(p)) for p in params}
    analysis = MethodAnalysis(method, budget, len(runs), failed, None, False,
                              pd.DataFrame(), pd.DataFrame(), scores=y, frame=frame[params],
                              scales=scales)
    analysis.notes.append(
        f"{budget.reached_full} of {budget.eligible} finished trials reached the full budget of "
        f"{budget.full_budget:g} epochs; the others were stopped early by the scheduler and "
        f"carry lower-budget values. Sensitivity and importance compare all {len(y)} trials "
        f"that reached {budget.budget:g} epochs, each scored at that budget."
    )

    rows = []
    for param in params:
        binned = response(frame[param], y, scales[param])
        rows += [{"method": method, "param": param, **r} for r in binned.to_dict("records")]
        trials = pd.DataFrame({"x": frame[param], "y": y})
        failed_x = failed[param] if param in failed else pd.Series(dtype=float)
        analysis.plots.append(plots.response_plot(
            plots_dir / f"{_slug(method)}_{_slug(param)}.png", method, param, scales[param],
            trials, binned, failed_x, metric, budget.budget,
        ))
    analysis.sensitivity = pd.DataFrame(
        rows, columns=["method", "param", "value", "mean", "low", "high", "n"]
    )

    scores = importance(frame, y, scales, mode)
    analysis.importance = pd.DataFrame(
        [{"method": method, "param": p, "importance": v, "evaluator": IMPORTANCE_EVALUATOR}
         for p, v in scores.items()],
        columns=["method", "param", "importance", "evaluator"],
    )
    if analysis.importance.empty:
        analysis.notes.append(
            f"importance needs at least {MIN_TRIALS_FOR_IMPORTANCE} comparable trials and a "
            f"varying parameter; this method has {len(y)} trials"
        )
    else:
        analysis.plots.append(plots.importance_plot(
            plots_dir / f"{_slug(method)}_importance.png", method, analysis.importance
        ))
    heat = _heatmap(frame, y, scales, plots_dir, method, metric)
    if heat is not None:
        analysis.plots.append(heat)
    else:
        analysis.notes.append(
            "no temperature x batch-size heat map: this method does not search both"
        )

    full = usable[usable["budget"] >= budget.full_budget]
    pool = full if not full.empty else usable[usable["budget"] == usable["budget"].max()]
    analysis.best_at_full_budget = not full.empty
    finals = pool[f"final_{metric}"]
    best_id = finals.idxmax() if mode == "max" else finals.idxmin()
    best_row = pool.loc[best_id]
    analysis.best = {
        "run_name": best_row["run_name"],
        metric: float(best_row[f"final_{metric}"]),
        "budget": float(best_row["budget"]),
        **{p: best_row[p] for p in experiment.params if p in best_row and pd.notna(best_row[p])},
    }
    return analysis


# --- HTML -------------------------------------------------------------------------------

_CSS = """
body { font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 1100px;
       color: #222; line-height: 1.45; padding: 0 1rem; }
h1 { font-size: 1.6rem; } h2 { border-bottom: 1px solid #ddd; padding-bottom: .2rem; }
table { border-collapse: collapse; font-size: .85rem; margin: .5rem 0 1rem; }
th, td { border: 1px solid #ddd; padding: .25rem .5rem; text-align: right; }
th { background: #f4f6f8; } td:first-child, th:first-child { text-align: left; }
.plots { display: flex; flex-wrap: wrap; gap: .8rem; }
.plots img { max-width: 520px; border: 1px solid #eee; }
.note { background: #fff8e1; border-left: 4px solid #f5b300; padding: .4rem .8rem; }
details { margin: .5rem 0 1.2rem; } summary { cursor: pointer; font-weight: 600; }
"""


def _img(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    alt = html.escape(path.stem)
    return f'<img alt="{alt}" title="{alt}" src="data:image/png;base64,{data}">'


def _table(frame: pd.DataFrame) -> str:
    return frame.to_html(index=False, escape=True, float_format=lambda v: f"{v:.4g}",
                         na_rep="", border=0)


def _method_section(a: MethodAnalysis, metric: str) -> str:
    e = html.escape
    parts = [f"<h2>{e(a.method)}</h2>"]
    parts += [f'<p class="note">{e(note)}</p>' for note in a.notes]
    if a.best is not None:
        label = "best configuration at the full budget" if a.best_at_full_budget else \
            "best configuration (no trial reached the full budget: best at the largest one)"
        best = pd.DataFrame([{"setting": k, "value": v} for k, v in a.best.items()])
        parts.append(f"<h3>{e(label)}</h3>{_table(best)}")
    if not a.importance.empty:
        parts.append(f"<h3>importance</h3>{_table(a.importance.drop(columns='method'))}")
    if a.plots:
        parts.append('<div class="plots">' + "".join(_img(p) for p in a.plots) + "</div>")
    if not a.sensitivity.empty:
        parts.append("<details><summary>sensitivity table</summary>"
                     f"{_table(a.sensitivity.drop(columns='method'))}</details>")
    if not a.failed.empty:
        failed = a.failed[["run_name", "failure_reason"]].fillna("")
        parts.append(f"<h3>failed trials ({len(failed)})</h3>{_table(failed)}")
    return "\n".join(parts)


def _comparison_section(comparison: pd.DataFrame, plot: Path | None, metric: str) -> str:
    if comparison.empty:
        return ""
    e = html.escape
    return (
        f"<h2>Method comparison</h2><p>Each method's {e(metric)} over the trials it compared "
        "(at its own budget): best, median and spread across trials; "
        "<b>neighbour_mean</b> is the mean score of the trials nearest to the best "
        "configuration in hyperparameter space and <b>best_drop</b> the loss from the best "
        "to them (small: the best sits on a plateau; large: on a peak).</p>"
        f"{_table(comparison)}" + (f'<div class="plots">{_img(plot)}</div>' if plot else "")
    )


def render_report(
    experiment_name: str, tracking_uri: str, metric: str, mode: str,
    analyses: list[MethodAnalysis], runs: pd.DataFrame,
    comparison: pd.DataFrame | None = None, comparison_plot: Path | None = None,
    protocols: str = "",
) -> str:
    e = html.escape
    summary = pd.DataFrame([
        {
            "method": a.method,
            "trials": a.trials,
            "reached full budget": a.budget.reached_full,
            "full budget (epochs)": a.budget.full_budget,
            "compared at (epochs)": a.budget.budget,
            "failed": len(a.failed),
            f"best {metric}": a.best[metric] if a.best else math.nan,
        }
        for a in analyses
    ])
    shown = [c for c in runs.columns if not c.startswith("best_")]
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>Sensitivity report: {e(experiment_name)}</title><style>{_CSS}</style></head>
<body>
<h1>Sensitivity report: {e(experiment_name)}</h1>
<p>Metric <b>{e(metric)}</b> ({e(mode)}imised), tracking store <code>{e(tracking_uri)}</code>.
Trials stopped early by the scheduler report values after fewer epochs than finished ones;
every comparison below is made at one budget per method, given in the table.</p>
{_table(summary)}
{_comparison_section(comparison if comparison is not None else pd.DataFrame(),
                     comparison_plot, metric)}
{"".join(_method_section(a, metric) for a in analyses)}
{protocols}
<details><summary>all runs ({len(runs)})</summary>{_table(runs[shown])}</details>
</body></html>
"""


def run_analysis(
    tracking_uri: str, experiment: str, metric: str | None, mode: str | None, budget: str,
    out: Path,
) -> int:
    if out.exists() and not out.is_dir():
        raise AnalysisInputError(f"--out: {str(out)!r} exists and is not a directory")
    if budget not in ("common", "full"):
        try:
            if float(budget) <= 0:
                raise ValueError
        except ValueError:
            raise AnalysisInputError(
                f"--budget: expected common, full or a positive number, got {budget!r}"
            ) from None
    tracking_uri = resolve_tracking_uri(tracking_uri)
    recorded_metric, recorded_mode = recorded_objective(tracking_uri, experiment)
    mode = mode or recorded_mode or "max"
    data = load_experiment(tracking_uri, experiment, metric or recorded_metric or VAL_KNN,
                           mode)
    if metric is None and recorded_metric is None and VAL_KNN not in data.metrics:
        # An experiment from before the validation split, or of another tool.
        data = load_experiment(tracking_uri, experiment, KNN_ACC, mode)
    metric = metric or recorded_metric or (VAL_KNN if VAL_KNN in data.metrics else KNN_ACC)
    if metric not in data.metrics:
        raise AnalysisInputError(
            f"--metric: no run logged {metric!r}; logged: {', '.join(data.metrics) or 'none'}"
        )
    plots_dir = out / "plots"
    plots_dir.mkdir(parents=True, exist_ok=True)
    analyses = [
        analyse_method(data, method, metric, mode, budget, plots_dir)
        for method in sorted(data.runs["method"].unique())
    ]
    data.runs.to_parquet(out / "runs.parquet", index=False)
    data.history.to_parquet(out / "history.parquet", index=False)
    _concat([a.importance for a in analyses],
            ["method", "param", "importance", "evaluator"]).to_csv(out / "importance.csv",
                                                                  index=False)
    _concat([a.sensitivity for a in analyses],
            ["method", "param", "value", "mean", "low", "high", "n"]).to_csv(
        out / "sensitivity.csv", index=False)
    comparison, comparison_plot = _compare(analyses, metric, mode, plots_dir)
    if not comparison.empty:
        comparison.to_csv(out / "comparison.csv", index=False)
    # The evaluation protocols (analysis.protocols): Table 2, retrieval, embedding maps.
    protocols = protocols_section(
        data.runs, data.params, metric, mode, out, plots_dir,
        lambda run_id, path: read_artifact(tracking_uri, run_id, path),
    )
    report = out / "report.html"
    report.write_text(render_report(experiment, tracking_uri, metric, mode, analyses, data.runs,
                                    comparison, comparison_plot, protocols))
    logger.info("report: %s", report.resolve())
    logger.info("tables: runs.parquet, history.parquet, importance.csv, sensitivity.csv%s; "
                "plots in %s", ", comparison.csv" if not comparison.empty else "",
                plots_dir.resolve())
    logger.info("open the runs: mlflow ui --backend-store-uri %s", tracking_uri)
    return 0


def _compare(
    analyses: list[MethodAnalysis], metric: str, mode: str, plots_dir: Path
) -> tuple[pd.DataFrame, Path | None]:
    """The method comparison, when the experiment holds two or more scored methods."""
    scored = [a for a in analyses if a.scores is not None and len(a.scores)]
    if len(scored) < 2:
        return pd.DataFrame(columns=COMPARISON_COLUMNS), None
    table = pd.DataFrame(
        [compare_method(a.method, a.scores, a.frame, a.scales, a.budget.budget, mode)
         for a in scored],
        columns=COMPARISON_COLUMNS,
    )
    table = table.sort_values("best", ascending=mode != "max", kind="stable")
    plot = plots.comparison_plot(plots_dir / "method_comparison.png",
                                 {a.method: a.scores for a in scored}, metric)
    return table, plot


def _concat(frames: list[pd.DataFrame], columns: list[str]) -> pd.DataFrame:
    frames = [f for f in frames if not f.empty]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=columns)
