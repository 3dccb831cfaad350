"""The HTML report: one self-contained page (figures inlined), every value escaped.

It opens with the summary a researcher reads first (per method: what matters beyond
chance and by how much, what does not, the configuration to use and what to expect of
it), then the overview and method comparison, then each method's details.
"""

from __future__ import annotations

import base64
import html
import math
import re
from collections.abc import Callable
from pathlib import Path

import pandas as pd

from analysis.importance import ALPHA, EVALUATOR
from analysis.method import MethodAnalysis, scales_table
from analysis.summary import verdicts
from analysis.views import CHANCE, RANDOM_INIT, MethodView, Views

_CSS = """
body { font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 1100px;
       color: #222; line-height: 1.45; padding: 0 1rem; }
h1 { font-size: 1.6rem; } h2 { border-bottom: 1px solid #ddd; padding-bottom: .2rem; }
table { border-collapse: collapse; font-size: .85rem; margin: .5rem 0 1rem; }
th, td { border: 1px solid #ddd; padding: .25rem .5rem; text-align: right; }
th { background: #f4f6f8; } td:first-child, th:first-child { text-align: left; }
.scroll { max-width: 100%; overflow-x: auto; }
.plots { display: flex; flex-wrap: wrap; gap: .8rem; align-items: flex-start; }
.plots figure { margin: 0; flex: 0 1 auto; min-width: 0; max-width: 100%; }
.plots img { display: block; max-width: 100%; width: auto; height: auto;
             border: 1px solid #eee; }
.interactive { width: 100%; min-width: 640px; min-height: 420px; }
.note { background: #f4f6f8; border-left: 4px solid #9ecae1; padding: .4rem .8rem; }
.warning { background: #fff8e1; border-left: 4px solid #f5b300; padding: .4rem .8rem; }
pre { background: #f7f7f7; padding: .6rem; overflow-x: auto; white-space: pre; }
code { overflow-wrap: anywhere; }
details { margin: .5rem 0 1.2rem; } summary { cursor: pointer; font-weight: 600; }
nav ul { margin: .3rem 0; padding-left: 1.2rem; columns: 2 14rem; }
@media print {
  .scroll { overflow: visible; } table { font-size: .65rem; }
  pre { white-space: pre-wrap; overflow-wrap: anywhere; } nav { display: none; }
}
"""
#: A reader who prints the page (or saves it as PDF) gets the tables folded away too.
_OPEN_DETAILS_TO_PRINT = ("<script>addEventListener('beforeprint', () => document"
                          ".querySelectorAll('details').forEach(d => d.open = true));"
                          "</script>")
_e = html.escape


def _prose(text: str) -> str:
    """A sentence of the analysis, escaped, with the commands and names it quotes between
    backticks set as code."""
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", _e(text))


def _img(path: Path) -> str:
    """A figure inlined at its own size (shrunk, never stretched, to fit the page)."""
    data = base64.b64encode(path.read_bytes()).decode()
    alt = _e(path.stem)
    return (f'<figure><img alt="{alt}" title="{alt}" '
            f'src="data:image/png;base64,{data}"></figure>')


def _table(frame: pd.DataFrame, escape: bool = True) -> str:
    """A table that scrolls sideways inside the page when it is wider than it."""
    table = frame.to_html(index=False, escape=escape, float_format=lambda v: f"{v:.4g}",
                          na_rep="", border=0)
    return f'<div class="scroll">{table}</div>'


def _interval(value: float, low: float, high: float) -> str:
    if any(math.isnan(v) for v in (value, low, high)):
        return ""
    return f"{value:.3g} [{low:.3g}, {high:.3g}]"


def _summary(a: MethodAnalysis, metric: str, view: MethodView | None = None) -> str:
    parts = [f"<h3>{_e(a.method)}</h3>"]
    if a.budget is None or a.scored is None:
        return "".join(parts) + "".join(f'<p class="note">{_prose(n)}</p>' for n in a.notes)
    parts.append(f"<p>At {a.budget.budget:g} epochs, {len(a.scored.frame)} configurations "
                 f"({len(a.scored.runs)} runs).</p>")
    importance = a.importance_at_budget
    if importance.empty:
        parts.append('<p class="note">Too few trials to tell which parameters matter: '
                     f"importance needs {a.budget.needed} configurations at one budget "
                     "(2 per searched parameter, at least 6).</p>")
    else:
        table = verdicts(importance, a.effects)
        matters = table[table["significant"] == "true"]
        if matters.empty:
            parts.append("<p><b>No parameter matters beyond chance</b> at this budget: "
                         "every importance is within its permutation null.</p>")
        else:
            noise = a.noise.known
            shown = pd.DataFrame({
                "param": matters["param"],
                "importance [95% interval]": [
                    _interval(r.importance, r.importance_low, r.importance_high)
                    for r in matters.itertuples()],
                "null threshold": matters["null_high"],
                "effect in metric units [95% interval]": [
                    _interval(r.effect, r.effect_low, r.effect_high)
                    for r in matters.itertuples()],
                "effect beyond seed noise": matters["exceeds_noise"] if noise
                else "noise unknown",
            })
            parts.append(f"<p><b>Matter beyond chance</b> (importance above the null, "
                         f"family-wise {ALPHA:.0%}):</p>{_table(shown)}")
        rest = table[table["significant"] != "true"]["param"].tolist()
        if rest:
            parts.append("<p><b>Within chance</b> (no effect shown at this budget): "
                         f"{_e(', '.join(rest))}</p>")
    if a.recommendation is not None:
        r = a.recommendation
        among = (f"best of the {r.among_confirmed} confirmed with fresh seeds"
                 if r.among_confirmed else "best")
        later = f" {_prose(r.at_full_budget())}" if r.full_budget is not None else ""
        parts.append(f"<p><b>Recommended configuration</b> ({among} at {r.budget:g} epochs, "
                     f"run {_e(r.run_name)}); expected {_e(metric)} at {r.budget:g} epochs: "
                     f"{_prose(r.expected())}.{later}</p><pre>{_e(r.yaml(a.method))}</pre>")
        if view is not None and view.train_command:
            parts.append("<p>Train it alone, with the study's config (written beside this "
                         "report) and its MLflow store, for the config's full budget; the "
                         "run logs the encoder as a model:</p>"
                         f"<pre>{_e(view.train_command)}</pre>")
    parts += [f'<p class="warning">{_prose(w)}</p>' for w in a.warnings]
    return "\n".join(parts)


def _references_text(references: dict[str, float], metric: str) -> str:
    described = {RANDOM_INIT: "the same encoder at its random initialisation",
                 CHANCE: "always answering the test split's most frequent class"}
    return "; ".join(f"{described.get(k, k)}: {v:.4f}" for k, v in references.items()) + (
        f" (what a trained encoder's {metric} must beat)")


def _view_section(view: MethodView | None, metric: str) -> str:
    """Learning curves, references, fixed parameters and the interactive view."""
    if view is None:
        return ""
    parts = []
    if view.references:
        parts.append(f'<p class="note">References: {_e(_references_text(view.references, metric))}'
                     "</p>")
    if view.fixed:
        fixed = ", ".join(f"{k} = {v}" for k, v in view.fixed.items())
        parts.append(f'<p class="note">Not varied in these trials, so without a response '
                     f"curve: {_e(fixed)}</p>")
    if view.curves is not None:
        parts.append("<h3>learning curves</h3><p>Every trial's score by epoch: green "
                     "reached the full budget, grey was stopped early by the scheduler at "
                     "one of its rungs (dotted), red failed.</p>"
                     f'<div class="plots">{_img(view.curves)}</div>')
    if view.interactive is not None:
        parts.append("<h3>interactive: parameters and score</h3><p>One line per "
                     "configuration; drag along an axis to keep the configurations in that "
                     "range.</p>"
                     # Narrower, its axes' labels run into each other: it scrolls.
                     f'<div class="scroll"><div class="interactive">{view.interactive}'
                     "</div></div>")
    return "\n".join(parts)


def _method_section(a: MethodAnalysis, metric: str = "", view: MethodView | None = None
                    ) -> str:
    parts = [f"<h2>{_e(a.method)}</h2>"]
    parts += [f'<p class="note">{_prose(note)}</p>' for note in a.notes]
    parts += [f'<p class="warning">{_prose(w)}</p>' for w in a.warnings]
    parts.append(_view_section(view, metric))
    if a.scales:
        parts.append("<h3>search scales</h3><p>Every analysis of a parameter works on this "
                     "axis; an inferred scale was not recorded by a study and was guessed "
                     f"from the values.</p>{_table(scales_table(a))}")
    if not a.importance.empty:
        parts.append(
            f"<h3>importance</h3><p>Evaluator <code>{_e(EVALUATOR)}</code>: share of the "
            "metric's variance each parameter's main effect explains (not renormalised), "
            "95% bootstrap interval, and the permutation null's threshold; "
            "<b>significant</b> when above it.</p>"
            f"{_table(a.importance.drop(columns=['method', 'evaluator']))}")
    if not a.budgets.empty:
        parts.append("<h3>budgets</h3><p>Spearman rank correlation of the configurations' "
                     "scores between two budgets, with its 95% bootstrap interval, over the "
                     "n configurations that reached both: how well a ranking at the lower "
                     "budget predicts the higher. With early stopping these are the "
                     "configurations the lower budget let through, a narrower range than "
                     "all of them, which pulls the correlation towards 0.</p>"
                     f"{_table(a.budgets.drop(columns='method'))}")
    if a.plots:
        parts.append('<div class="plots">' + "".join(_img(p) for p in a.plots) + "</div>")
    if not a.effects.empty:
        parts.append("<details><summary>effects</summary><p>A parameter's effect: the range "
                     "of its response curve (highest mean minus lowest, in metric units) "
                     "with its 95% bootstrap interval. A range is never negative and noise "
                     "alone widens it, so an interval above zero does not by itself show "
                     "an effect: "
                     "<b>exceeds_noise</b> is true when the parameter is significant and "
                     "the whole interval lies above the seed noise (<b>noise_std</b>); "
                     "both are empty when the noise was not measured or the trials were "
                     "too few for the null.</p>"
                     f"{_table(a.effects.drop(columns='method'))}</details>")
    if not a.sensitivity.empty:
        parts.append("<details><summary>marginal responses (sensitivity table)</summary>"
                     f"{_table(a.sensitivity.drop(columns='method'))}</details>")
    if not a.failed.empty:
        parts.append(f"<h3>failed trials ({len(a.failed)} of {a.trials})</h3>"
                     f"{_table(a.reasons)}<p>Failure rate along each parameter: the strip "
                     "under each response curve, and failures.csv.</p>")
    return "\n".join(parts)


def _comparison_section(comparison: pd.DataFrame, plot: Path | None, metric: str,
                        budget: float) -> str:
    if comparison.empty:
        return ""
    common_n = int(comparison["common_n"].iloc[0])
    return (
        f"<h2>Method comparison</h2><p>Every method at {budget:g} epochs, each "
        f"configuration once (the mean of its seeds where it has several): best, median "
        f"and spread. Methods with more trials have more chances at a lucky best, so "
        f"<b>expected_best</b> is the expected best of {common_n} configurations drawn at "
        f"random from each method's (the fewest any method has), and the table is sorted "
        f"by it. <b>best_runs</b> and <b>best_std</b>: the seeds behind the best "
        f"configuration and their spread. <b>q25</b>, <b>q75</b>, <b>iqr</b>: quartiles "
        f"and their distance; <b>std</b>: spread over configurations. "
        f"<b>neighbour_mean</b> is the mean score of the <b>neighbours</b> trials nearest "
        f"to the best configuration in hyperparameter space and <b>best_drop</b> the loss "
        f"from the best to them (small: the best sits on a plateau; large: on a peak); "
        f"<b>neighbour_distance</b> is how far they are, the root mean square over the "
        f"parameters of their differences on the search scales, each scaled to [0, 1] "
        f"(a category: 0 when equal, 1 when not): when they are a few tenths away, "
        f"best_drop says little of the shape around the best.</p>"
        f"{_table(comparison)}" + (f'<div class="plots">{_img(plot)}</div>' if plot else "")
    )


def _sweeps_section(sweeps: pd.DataFrame | None, figures: list[Path]) -> str:
    """Each sweep as the papers print it: value -> mean +- std over seeds on the test
    split, the best in bold, the values within noise of it marked."""
    if sweeps is None or sweeps.empty:
        return ""
    parts = ["<h2>Sweeps</h2><p>Every other hyperparameter fixed, each value with several "
             "seeds, at the full budget; scores on the held-out test split (a sweep selects "
             "nothing). <b>Bold</b>: the best value; <i>within noise</i>: its difference "
             "from the best is within two standard errors of that difference.</p>"]
    for _, sweep in sweeps.groupby("sweep", sort=False):
        first = sweep.iloc[0]
        title = first["param"] + (f" x {first['param2']}" if pd.notna(first["param2"]) else "")
        rows = []
        for _, row in sweep.iterrows():
            cell = _e(str(row["value"])) + (
                f", {_e(str(row['value2']))}" if pd.notna(row["param2"]) else "")
            score = f"{row['mean']:.4f}" + (
                f" &plusmn; {row['std']:.4f}" if pd.notna(row["std"]) else "")
            if row["best"]:
                score = f"<b>{score}</b>"
            mark = "best" if row["best"] else ("within noise" if row["within_noise"] else "")
            rows.append(f"<tr><td>{cell}</td><td>{score}</td><td>{int(row['n'])}</td>"
                        f"<td>{mark}</td></tr>")
        parts.append(
            f"<h3>{_e(first['method'])}: {_e(title)}</h3><table><tr><th>{_e(title)}</th>"
            f"<th>{_e(first['metric'])} (mean &plusmn; std)</th><th>seeds</th><th></th></tr>"
            + "".join(rows) + "</table>"
        )
    if figures:
        parts.append('<div class="plots">' + "".join(_img(f) for f in figures) + "</div>")
    return "".join(parts)


#: The all-runs table's identity columns, in order; then the params and the metric.
_RUN_COLUMNS = ("run_name", "method", "run_kind", "status", "budget", "duration_s")


def _runs_section(runs: pd.DataFrame, params: list[str], metric: str,
                  run_url: Callable[[str], str] | None) -> str:
    """Every trial: who it is, how it ended, its parameters and its score; its name
    links to its MLflow run when the store has a URL."""
    metrics = [c for c in (f"final_{metric}", f"final_{metric.removeprefix('val_')}")
               if c in runs]
    columns = [c for c in (*_RUN_COLUMNS, *params, "seed", *dict.fromkeys(metrics),
                           "failure_reason") if c in runs]
    shown = runs[columns].copy()
    if "failure_reason" in shown:
        shown["failure_reason"] = shown["failure_reason"].map(
            lambda r: r.strip().splitlines()[-1][:120] if isinstance(r, str) and r else r)
    for column in shown.columns:
        if shown[column].dtype == object:
            shown[column] = shown[column].map(lambda v: "" if v is None or v == "None" else v)
    names = [_e(str(n)) for n in shown["run_name"]]
    if run_url is not None:
        names = [f'<a href="{_e(run_url(r))}">{n}</a>' for r, n in zip(runs["run_id"], names,
                                                                       strict=True)]
    body = shown.drop(columns="run_name").map(
        lambda v: _e(f"{v:.4g}" if isinstance(v, float) else str(v))
        if not (isinstance(v, float) and math.isnan(v)) else "")
    body.insert(0, "run_name", names)
    where = (" Each name links to its run in the MLflow UI." if run_url is not None else
             " (With a tracking server, each name links to its run in the MLflow UI.)")
    return (f"<details><summary>all runs ({len(runs)})</summary><p>Final values; "
            f"budget is the last epoch a run reached.{where}</p>"
            f"{_table(body, escape=False)}</details>")


def render_report(
    experiment_name: str, tracking_uri: str, metric: str, mode: str,
    analyses: list[MethodAnalysis], runs: pd.DataFrame,
    comparison: pd.DataFrame | None = None, comparison_plot: Path | None = None,
    compared_at: float = math.nan, sweeps: pd.DataFrame | None = None,
    sweep_figures: list[Path] | None = None, protocols: str = "", views: Views | None = None,
    params: list[str] | None = None,
) -> str:
    overview = pd.DataFrame([
        {
            "method": a.method,
            "trials": a.trials,
            "failed": len(a.failed),
            "full budget (epochs)": a.budget.full_budget if a.budget else math.nan,
            "reached full budget": a.budget.reached_full if a.budget else 0,
            "compared at (epochs)": a.budget.budget if a.budget else math.nan,
            "configurations": len(a.scored.frame) if a.scored is not None else 0,
            "seed noise (std)": a.noise.std if a.noise.known else "unknown",
            f"recommended {metric} at the compared budget": a.recommendation.score
            if a.recommendation else math.nan,
        }
        for a in analyses
    ])
    views = views or Views()
    comparison = comparison if comparison is not None else pd.DataFrame()
    return _with_contents(f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>Sensitivity report: {_e(experiment_name)}</title><style>{_CSS}</style>
{_OPEN_DETAILS_TO_PRINT}</head>
<body>
<h1>Sensitivity report: {_e(experiment_name)}</h1>
<p>Metric <b>{_e(metric)}</b> ({_e(mode)}imised), tracking store
<code>{_e(tracking_uri)}</code>. Trials stopped early by the scheduler report values after
fewer epochs than finished ones, so each method is compared at one budget (given with
every table and figure), full budget where enough trials reached it. Importance is the
share of the metric's variance a parameter explains on its own search scale, with a 95%
bootstrap interval; a parameter <i>matters</i> when its importance clears what the same
analysis gives it when it has no effect, under two permutation nulls, one of which keeps
its correlation with the other parameters ({ALPHA:.0%} for all parameters together). The
seed noise is the spread of runs that differ only in their seed.</p>
<h2>Summary</h2>
{"".join(_summary(a, metric, views.methods.get(a.method)) for a in analyses)}
<h2>Overview</h2>
{_table(overview)}
{_comparison_section(comparison, comparison_plot, metric, compared_at)}
{_sweeps_section(sweeps, sweep_figures or [])}
{"".join(_method_section(a, metric, views.methods.get(a.method)) for a in analyses)}
{protocols}
{_runs_section(runs, params or [], metric, views.run_url)}
</body></html>
""")


def _with_contents(page: str) -> str:
    """The page with an anchor on every section heading and a list of them under the
    title: a study of several methods makes a page many screens long."""
    headings: list[tuple[str, str]] = []

    def anchor(match: re.Match[str]) -> str:
        anchor_id = f"s{len(headings)}-" + re.sub(r"[^a-z0-9]+", "-", match[1].lower())
        headings.append((anchor_id, match[1]))
        return f'<h2 id="{anchor_id}">{match[1]}</h2>'

    page = re.sub(r"<h2>(.*?)</h2>", anchor, page)
    items = "".join(f'<li><a href="#{i}">{title}</a></li>' for i, title in headings)
    return page.replace("<h2 ", f"<nav><b>Contents</b><ul>{items}</ul></nav>\n<h2 ", 1)
