"""The evaluation protocols in the report (the config's ``evaluation:`` section).

- Fine-tuning with few labels in the layout of ../shared/seeds/003_c80d734d47a8bbd6.txt,
  Table 2: one row per method and mode (frozen, unfrozen), each method's pruned rows
  ("prune S% *": pruned to S% sparsity while fine-tuned, weights quantized) and its
  supervised baseline (the same network from random initialisation, on the same
  labels); one column per label budget; mean +- std over replicates where there are
  several (../shared/seeds/002_a5cbedfbf1372821.txt reports its 4,000-label protocol
  the same way).
- Retrieval: precision at k and mean average precision per method.
- Embedding maps (../shared/seeds/004_e6ad71d192551e5a.txt): each method's map beside
  the same network's at random initialisation.

Each method is reported for one configuration: the one the report recommends, over its
independent runs (:mod:`analysis.noise`), where they logged protocol metrics; otherwise,
among the configurations (a method with its hyperparameter values; runs differing only
in ``seed`` are its replicates) whose runs logged them, the one with the best mean score
on the report's metric (the study's validation objective), the confirmed ones first, as
for the recommendation. Pure functions of the runs table and of the maps'
tables; ``protocols_section`` writes the CSV files and plots and returns the report's
HTML. Experiments without protocol metrics get nothing.
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from analysis.noise import configurations, confirmed, independent_runs
from tracking import schema

#: How the rows of one method are ordered: Table 2's order.
_MODE_ORDER = {"frozen": 0, "unfrozen": 1, "pruned": 2, "supervised": 3}
LONG_COLUMNS = ["method", "row", "labels", "mean", "std", "n"]
#: Reads a run artifact's content: (run id, artifact path) -> bytes, or None if absent.
Fetch = Callable[[str, str], bytes | None]


def _metric_columns(runs: pd.DataFrame) -> dict[str, tuple[str, str]]:
    """``final_<metric>`` column -> (row, labels) for every Table-2 metric present."""
    found = {}
    for column in runs.columns:
        if column.startswith("final_"):
            parsed = schema.parse_label_metric(column.removeprefix("final_"))
            if parsed is not None:
                found[column] = parsed
    return found


def _retrieval_columns(runs: pd.DataFrame) -> list[str]:
    return [c for c in runs.columns if c.startswith("final_" + schema.RETRIEVAL_PREFIX)]


def _protocol_runs(runs: pd.DataFrame) -> pd.DataFrame:
    columns = [*_metric_columns(runs), *_retrieval_columns(runs)]
    if not columns:
        return runs.iloc[0:0]
    return runs[runs[columns].notna().any(axis=1)]


def best_configurations(
    runs: pd.DataFrame, params: list[str], metric: str, mode: str,
    recommended: Mapping[str, Sequence[str]] | None = None,
) -> dict[str, pd.DataFrame]:
    """Method -> the runs (replicates) of its configuration that the protocols are
    reported for: those of ``recommended[method]`` (run ids: the recommendation's
    independent runs) that logged protocol metrics; failing that, the best mean
    ``final_<metric>`` among configurations with protocol metrics, confirmed ones first
    and independent runs only, or the one with most runs when none logged ``metric``."""
    logged = _protocol_runs(runs)
    keys = [p for p in params if p in logged and p != schema.PARAM_SEED]
    chosen = {}
    score_column = f"final_{metric}"
    for method, mine in logged.groupby("method", sort=True):
        ours = mine[mine["run_id"].isin((recommended or {}).get(str(method), ()))]
        if not ours.empty:
            chosen[str(method)] = ours
            continue
        scores = (mine[score_column] if score_column in mine
                  else pd.Series(np.nan, index=mine.index))
        if scores.notna().any():
            # As the recommendation: only runs with a score take part.
            mine, scores = mine[scores.notna()], scores[scores.notna()]
        groups = configurations(mine, keys)
        independent = independent_runs(mine, scores, groups).y
        mine, groups = mine.loc[independent.index], groups[independent.index]
        summary = pd.DataFrame({"score": independent, "configuration": groups}).groupby(
            "configuration").agg(score=("score", "mean"), runs=("score", "size"))
        # Among the confirmed configurations where there are any, as the recommendation.
        checked = groups[confirmed(mine)].unique()
        if len(checked):
            summary = summary.loc[checked]
        scored = summary["score"].dropna()
        if scored.empty:
            best = summary["runs"].idxmax()
        else:
            best = scored.idxmin() if mode == "min" else scored.idxmax()
        chosen[str(method)] = mine[groups == best]
    return chosen


def label_table(chosen: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """Long form: one line per method, row (frozen, unfrozen, pruned<S>, supervised) and
    label budget, with the mean, std and number of replicates."""
    lines = []
    for method, group in chosen.items():
        for column, (row, labels) in _metric_columns(group).items():
            values = group[column].dropna()
            if len(values):
                lines.append({"method": method, "row": row, "labels": labels,
                              "mean": values.mean(),
                              "std": values.std(ddof=1) if len(values) > 1 else np.nan,
                              "n": len(values)})
    return pd.DataFrame(lines, columns=LONG_COLUMNS)


def _labels_order(labels: str) -> tuple[int, float]:
    """Percentages in numeric order, then budgets per class."""
    if labels.endswith(schema.PER_CLASS_SUFFIX):
        return (1, float(labels.removesuffix(schema.PER_CLASS_SUFFIX)))
    return (0, float(labels))


def _labels_header(labels: str) -> str:
    if labels.endswith(schema.PER_CLASS_SUFFIX):
        return f"{labels.removesuffix(schema.PER_CLASS_SUFFIX)} per class"
    return f"{labels}%"


def _row_name(row: str) -> str:
    if row.startswith(schema.PRUNED_PREFIX):
        return f"prune {row.removeprefix(schema.PRUNED_PREFIX)}% *"
    if row == "supervised":
        return "supervised baseline"
    return row


def _row_order(row: str) -> tuple[int, float]:
    if row.startswith(schema.PRUNED_PREFIX):
        return (_MODE_ORDER["pruned"], float(row.removeprefix(schema.PRUNED_PREFIX)))
    return (_MODE_ORDER[row], 0.0)


def _cell(mean: float, std: float, n: int) -> str:
    """An accuracy in percent, with its std over replicates when there are several."""
    return f"{100 * mean:.1f}" if n < 2 else f"{100 * mean:.1f} ± {100 * std:.1f}"


def table2(long: pd.DataFrame) -> pd.DataFrame:
    """The source's Table 2 layout: rows method x evaluation, columns the label budgets,
    cells accuracy in percent (mean ± std over replicates)."""
    if long.empty:
        return pd.DataFrame(columns=["method", "evaluation"])
    budgets = sorted(long["labels"].unique(), key=_labels_order)
    rows = []
    for (method, row), group in long.groupby(["method", "row"], sort=False):
        cells = {_labels_header(line.labels): _cell(line.mean, line.std, line.n)
                 for line in group.itertuples()}
        rows.append({"method": method, "evaluation": _row_name(row), "_order": _row_order(row),
                     **cells})
    table = pd.DataFrame(rows).sort_values(["method", "_order"], kind="stable")
    columns = ["method", "evaluation", *map(_labels_header, budgets)]
    return table.reindex(columns=columns).fillna("")


def retrieval_table(chosen: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """Method x retrieval metric (precision at k, mAP), in percent, mean ± std."""
    rows = []
    for method, group in chosen.items():
        row: dict[str, str] = {"method": method}
        for column in sorted(_retrieval_columns(group)):
            values = group[column].dropna()
            if len(values):
                std = values.std(ddof=1) if len(values) > 1 else np.nan
                row[column.removeprefix("final_")] = _cell(values.mean(), std, len(values))
        if len(row) > 1:
            rows.append(row)
    return pd.DataFrame(rows).fillna("")


def embedding_maps(
    chosen: dict[str, pd.DataFrame], fetch: Fetch
) -> dict[str, tuple[str, pd.DataFrame, pd.DataFrame]]:
    """Method -> (how the map was made, its table, the random-init network's table),
    from the first run of the method's configuration that logged both."""
    maps = {}
    for method, group in chosen.items():
        for run_id in group["run_id"]:
            found = _run_maps(run_id, fetch)
            if found is not None:
                maps[method] = found
                break
    return maps


def _run_maps(run_id: str, fetch: Fetch) -> tuple[str, pd.DataFrame, pd.DataFrame] | None:
    for how in schema.EMBEDDING_METHODS:
        trained = fetch(run_id, schema.embedding_artifact(how, "parquet"))
        fresh = fetch(run_id, schema.embedding_artifact(how, "parquet", random_init=True))
        if trained is not None and fresh is not None:
            return how, pd.read_parquet(io.BytesIO(trained)), pd.read_parquet(io.BytesIO(fresh))
    return None


def embedding_plot(path: Path, method: str, how: str, trained: pd.DataFrame,
                   random_init: pd.DataFrame) -> Path:
    """The method's map beside the random-init network's, coloured by label."""
    fig, axes = plt.subplots(1, 2, figsize=(9, 4.4))
    labels = sorted(set(trained["label"]) | set(random_init["label"]))
    colours = plt.get_cmap("tab10" if len(labels) <= 10 else "tab20")
    for ax, table, title in ((axes[0], trained, f"{method}, pretrained"),
                             (axes[1], random_init, f"{method}'s network, random init")):
        for i, label in enumerate(labels):
            points = table[table["label"] == label]
            ax.scatter(points["x"], points["y"], s=5, alpha=0.8, color=colours(i % colours.N),
                       label=str(label))
        ax.set_title(f"{title} ({how})", fontsize=10)
        ax.set_xticks([])
        ax.set_yticks([])
    axes[0].legend(title="label", fontsize=7, markerscale=2, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _img(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<img alt="{html.escape(path.stem)}" src="data:image/png;base64,{data}">'


def _html_table(frame: pd.DataFrame) -> str:
    return frame.to_html(index=False, escape=True, border=0, na_rep="")


def protocols_section(
    runs: pd.DataFrame, params: list[str], metric: str, mode: str, out: Path,
    plots_dir: Path, fetch: Fetch, recommended: Mapping[str, Sequence[str]] | None = None,
) -> tuple[str, list[str]]:
    """Write ``protocols.csv`` (long form of Table 2), ``retrieval.csv`` and the maps'
    plots; return the report's HTML section ("" when no run logged a protocol) and the
    names of the tables written."""
    chosen = best_configurations(runs, params, metric, mode, recommended)
    if not chosen:
        return "", []
    written = []
    long = label_table(chosen)
    retrieval = retrieval_table(chosen)
    parts = ["<h2>Evaluation protocols</h2>",
             "<p>Each method's recommended configuration where its runs logged protocol "
             f"metrics, else the best mean {html.escape(metric)} among those whose runs "
             "did (confirmed ones first), on the test split; mean ± std over its "
             "independent runs (differing in their seed) where there are several, in "
             "percent.</p>"]
    if not long.empty:
        long.to_csv(out / "protocols.csv", index=False)
        written.append("protocols.csv")
        parts += ["<h3>Fine-tuning with few labels</h3>",
                  "<p>The layout of Table 2 in 003_c80d734d47a8bbd6.txt: <b>frozen</b> is a "
                  "head on the pretrained encoder, <b>unfrozen</b> the whole network "
                  "fine-tuned from it, <b>prune S% *</b> the network fine-tuned while "
                  "pruned globally to S% sparsity, its weights then quantized, and the "
                  "<b>supervised baseline</b> the same network from random initialisation, "
                  "all on the same labels (columns: share of the labelled train split, or "
                  "labels per class).</p>", _html_table(table2(long))]
    if not retrieval.empty:
        retrieval.to_csv(out / "retrieval.csv", index=False)
        written.append("retrieval.csv")
        parts += ["<h3>Retrieval</h3>",
                  "<p>Test images as queries against the labelled train split, by cosine "
                  "similarity: precision at k (p&lt;k&gt;) and mean average precision at "
                  "the largest k (map&lt;k&gt;).</p>", _html_table(retrieval)]
    maps = embedding_maps(chosen, fetch)
    if maps:
        plots = [embedding_plot(plots_dir / f"{method}_embedding.png", method, how, trained,
                                fresh)
                 for method, (how, trained, fresh) in maps.items()]
        parts += ["<h3>Embedding maps</h3>",
                  "<p>Held-out images' features in two dimensions, coloured by label: the "
                  "method's pretrained network beside the same network at random "
                  "initialisation.</p>",
                  '<div class="plots">' + "".join(map(_img, plots)) + "</div>"]
    return "\n".join(parts), written
