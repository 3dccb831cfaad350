"""Matplotlib figures of a sensitivity analysis, written as PNG files.

Every figure names the budget its trials were scored at, each axis its search scale, and
figures read off the surrogate name the evaluator (see the README's analysis section).
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib import colors, ticker

from analysis.noise import NoiseFloor
from analysis.scales import Scale, describe, order_key

_FAILED_COLOUR = "#c0392b"
_CURVE_COLOUR = "#253494"
_NOISE_COLOUR = "#969696"
_SIGNIFICANT_COLOUR = "#1d91c0"
_PLAIN_COLOUR = "#bdbdbd"


def _save(fig: plt.Figure, path: Path) -> Path:
    fig.tight_layout()
    # "tight" grows the canvas to whatever is drawn: a long title or a legend is never cut.
    fig.savefig(path, dpi=110, bbox_inches="tight", pad_inches=0.08)
    plt.close(fig)
    return path


def _log_axis(ax: plt.Axes, values: pd.Series) -> None:
    """Log x axis labelled in plain numbers, at 1, 2 and 5 per decade over short ranges and
    once per decade over long ones; matplotlib's default labels every minor tick in
    scientific notation when the range is under a decade, and the labels overlap."""
    ax.set_xscale("log")
    present = values[values > 0]
    decades = np.log10(present.max() / present.min()) if len(present) else 0.0
    subs = (1.0,) if decades > 2 else (1.0, 2.0, 5.0)
    ax.xaxis.set_major_locator(ticker.LogLocator(subs=subs))
    ax.xaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_formatter(ticker.NullFormatter())


class _Axis:
    """Where a parameter's values go on the x axis: categories at 0, 1, 2...; log1m
    parameters as 1 - value on a log axis; log parameters on a log axis."""

    def __init__(self, scale: Scale, values: list) -> None:
        self.scale = scale
        self.categories = sorted({*values}, key=order_key) if scale == "categorical" else []
        self.position = {c: i for i, c in enumerate(self.categories)}

    def __call__(self, values: object) -> np.ndarray:
        items = list(pd.Series(values, dtype=object))
        if self.scale == "categorical":
            return np.array([self.position.get(v, np.nan) for v in items], dtype=float)
        x = np.asarray(items, dtype=float)
        return 1.0 - x if self.scale == "log1m" else x

    def finish(self, ax: plt.Axes, param: str, shown: np.ndarray) -> None:
        if self.scale == "categorical":
            ax.set_xticks(range(len(self.categories)), [str(c) for c in self.categories])
            ax.set_xlabel(f"{param} (categories)")
            return
        if self.scale in ("log", "log1m"):
            _log_axis(ax, pd.Series(shown))
        name = f"1 - {param}" if self.scale == "log1m" else param
        ax.set_xlabel(f"{name} ({describe(self.scale)} scale)")


def response_plot(
    path: Path, method: str, param: str, scale: Scale, points: pd.DataFrame,
    curve: pd.DataFrame | None, failed_x: pd.Series, failures: pd.DataFrame | None,
    noise: NoiseFloor, metric: str, mode: str, budget: float, evaluator: str,
) -> Path:
    """The marginal response of ``metric`` to ``param`` at ``budget``; the seed-noise band
    hangs from the response's best point (its highest with ``mode`` max, lowest with min)
    towards worse.

    ``points``: every run scored at the budget (columns ``x``, ``y``, ``reached``: the
    budget the run reached, which colours it). ``curve``: the surrogate's partial
    dependence per bin (``value``, ``mean``, ``low``, ``high``, ``n``), drawn as a line
    with its bootstrap band where at least three trials support a bin, and n written
    above the plot over each bin. The grey band hangs one seed-noise standard deviation
    below the curve's best bin: bins inside it cannot be told from the best by a
    reseeded run.
    Failed trials are red crosses along the bottom and, in the strip below, the share of
    trials that failed per bin (``failures``).
    """
    values = [*points["x"], *failed_x.dropna()]
    if curve is not None:
        values += list(curve["value"])
    axis = _Axis(scale, values)
    rows = 2 if failures is not None else 1
    fig, axes = plt.subplots(rows, 1, figsize=(5.6, 4.4 if rows == 2 else 3.8), sharex=True,
                             squeeze=False, height_ratios=[4, 1][:rows])
    ax = axes[0, 0]
    budgets = sorted(points["reached"].dropna().unique())
    palette = plt.get_cmap("viridis", max(2, len(budgets)))
    for i, reached in enumerate(budgets):
        mine = points[points["reached"] == reached]
        ax.scatter(axis(mine["x"]), mine["y"], s=20, alpha=0.7, color=palette(i),
                   label=f"trial, reached {reached:g}", zorder=3)
    if curve is not None and not curve.empty:
        x = axis(curve["value"])
        ax.plot(x, curve["mean"], "o-", color=_CURVE_COLOUR, ms=4, zorder=4,
                label="marginal response")
        banded = curve["low"].notna().to_numpy()
        ax.fill_between(x, curve["low"], curve["high"], where=banded, color=_CURVE_COLOUR,
                        alpha=0.15, label="95% bootstrap band", interpolate=False)
        # A bar at every banded knot: the fill of a knot whose neighbours have no band is a
        # line of no width.
        ax.vlines(x[banded], curve["low"][banded], curve["high"][banded],
                  color=_CURVE_COLOUR, alpha=0.4, lw=2)
        # Above the plotting area, where neither a trial nor the legend can hide them.
        for xi, n in zip(x, curve["n"], strict=True):
            ax.annotate(f"n={int(n)}", (xi, 1), xycoords=("data", "axes fraction"),
                        xytext=(0, 2), textcoords="offset points", ha="center",
                        va="bottom", fontsize=6, color="#555555", annotation_clip=False)
        if noise.known:
            ax.axhspan(*noise_band(curve["mean"].to_numpy(), noise.std, mode),
                       color=_NOISE_COLOUR, alpha=0.2,
                       label=f"seed noise, 1 std ({noise.std:.2g})")
    failed_pos = axis(failed_x.dropna())
    if len(failed_pos):
        ax.scatter(failed_pos, np.zeros(len(failed_pos)), marker="x", color=_FAILED_COLOUR,
                   transform=ax.get_xaxis_transform(), clip_on=False, label="failed",
                   zorder=5)
    ax.set_ylabel(f"{metric} at {budget:g} epochs")
    noise_text = "" if noise.known else "; seed noise unknown"
    ax.set_title(f"{method}: {metric} vs {param}\n(surrogate: {evaluator}{noise_text})",
                 fontsize=9, pad=12)
    # Beside the plot: inside, "best" placement still covered trials and the n labels.
    ax.legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.01, 1), borderaxespad=0)
    ax.grid(alpha=0.3)
    shown = axis(values)
    if failures is not None:
        strip = axes[1, 0]
        rate = failures["failed"] / failures["total"].where(failures["total"] > 0)
        x = axis(failures["value"])
        strip.vlines(x, 0, rate, color=_FAILED_COLOUR, lw=2)
        strip.scatter(x, rate, color=_FAILED_COLOUR, s=12)
        strip.set_ylim(0, 1.05)
        strip.set_ylabel("failed", fontsize=7)
        strip.grid(alpha=0.3)
        axis.finish(strip, param, shown[np.isfinite(shown)])
    else:
        axis.finish(ax, param, shown[np.isfinite(shown)])
    return _save(fig, path)


def importance_plot(
    path: Path, method: str, importance: pd.DataFrame, budget: float, evaluator: str
) -> Path:
    """Importance with its bootstrap interval (bar and whisker) and the permutation
    null's threshold (black tick): a parameter whose bar ends left of its tick is within
    what chance gives; significant ones are coloured."""
    ordered = importance.sort_values("importance")
    fig, ax = plt.subplots(figsize=(5.6, 0.45 * len(ordered) + 1.6))
    y = np.arange(len(ordered))
    significant = (ordered["significant"] == "true").to_numpy()
    ax.barh(y, ordered["importance"], color=np.where(significant, _SIGNIFICANT_COLOUR,
                                                      _PLAIN_COLOUR))
    # The bootstrap interval as a segment (widened to reach the estimate where refits on
    # resampled trials, finding some structure in noise, all lie above a small one).
    ax.hlines(y, ordered["low"], ordered["high"], color="#333333", lw=1.2,
              label="95% bootstrap interval")
    ax.scatter(ordered["null_high"], y, marker="D", s=28, facecolors="white",
               edgecolors=_FAILED_COLOUR, zorder=4, label="null threshold")
    ax.set_yticks(y, ordered["param"])
    ax.set_xlabel("share of variance (main effect, not renormalised)")
    right = float(np.nanmax([ordered["high"].max(), ordered["null_high"].max(), 0.05]))
    ax.set_xlim(0, min(1.0, right * 1.1))
    ax.set_title(f"{method}: importance at {budget:g} epochs\n(evaluator: {evaluator}; "
                 "coloured: above the null)", fontsize=9)
    ax.legend(fontsize=7, loc="lower right")
    ax.grid(axis="x", alpha=0.3)
    return _save(fig, path)


def importance_by_budget(path: Path, method: str, importance: pd.DataFrame,
                         evaluator: str) -> Path:
    """Each parameter's importance at every analysed budget, with its interval; filled
    markers clear the null at that budget."""
    fig, ax = plt.subplots(figsize=(5.6, 3.6))
    for param, rows in importance.groupby("param", sort=True):
        rows = rows.sort_values("budget")
        (line,) = ax.plot(rows["budget"], rows["importance"], "-", lw=1, label=str(param))
        colour = line.get_color()
        ax.vlines(rows["budget"], rows["low"], rows["high"], color=colour, lw=0.8, alpha=0.6)
        significant = (rows["significant"] == "true").to_numpy()
        ax.scatter(rows["budget"][significant], rows["importance"][significant], color=colour,
                   zorder=3)
        ax.scatter(rows["budget"][~significant], rows["importance"][~significant],
                   facecolors="white", edgecolors=colour, zorder=3)
    ax.set_xlabel("budget (epochs)")
    ax.set_ylabel("importance (share of variance)")
    ax.set_title(f"{method}: importance by budget\n(evaluator: {evaluator}; filled: above "
                 "the null)", fontsize=9)
    ax.legend(fontsize=7, loc="best")
    ax.grid(alpha=0.3)
    return _save(fig, path)


def _text_colour(background: tuple[float, ...]) -> str:
    """Black on light cells, white on dark ones, by the cell colour's relative luminance
    (viridis's yellow end is light although it is the top of the scale)."""
    r, g, b = colors.to_rgb(background)
    return "black" if 0.2126 * r + 0.7152 * g + 0.0722 * b > 0.45 else "white"


def noise_band(means: np.ndarray, std: float, mode: str) -> tuple[float, float]:
    """(bottom, top) of one seed-noise standard deviation from the best of ``means``
    towards worse: below the highest when higher is better, above the lowest otherwise."""
    if mode == "max":
        best = float(np.nanmax(means))
        return best - std, best
    best = float(np.nanmin(means))
    return best, best + std


def within_noise_of_best(values: np.ndarray, std: float, mode: str) -> np.ndarray:
    """Which of ``values`` (NaN: no data) lie within ``std`` of the best of them."""
    if not np.isfinite(values).any():
        return np.zeros(values.shape, dtype=bool)
    best = np.nanmax(values) if mode == "max" else np.nanmin(values)
    with np.errstate(invalid="ignore"):
        return np.abs(best - values) <= std


def heatmap(
    path: Path, method: str, grid: pd.DataFrame, counts: pd.DataFrame, rows: tuple[str, Scale],
    columns: tuple[str, Scale], metric: str, mode: str, budget: float, noise: NoiseFloor,
) -> Path:
    """Mean score per cell of two parameters' bins on their search scales; each cell is
    annotated with its mean and the number of configurations behind it, empty cells stay
    blank, and cells within one seed-noise standard deviation of the best (the highest
    mean with ``mode`` max, the lowest with min) are outlined."""
    fig, ax = plt.subplots(figsize=(1.1 * grid.shape[1] + 2.8, 0.55 * grid.shape[0] + 1.9))
    values = grid.to_numpy(dtype=float)
    image = ax.imshow(values, aspect="auto", cmap="viridis", origin="lower")
    ax.set_xticks(range(grid.shape[1]), list(grid.columns))
    ax.set_yticks(range(grid.shape[0]), list(grid.index))
    ax.set_xlabel(f"{columns[0]} ({describe(columns[1])})")
    ax.set_ylabel(f"{rows[0]} ({describe(rows[1])})")
    near_best = within_noise_of_best(values, noise.std, mode) if noise.known else None
    for i in range(grid.shape[0]):
        for j in range(grid.shape[1]):
            value = values[i, j]
            if np.isnan(value):
                continue
            ax.text(j, i, f"{value:.3f}\nn={int(counts.iat[i, j])}", ha="center",
                    va="center", fontsize=7, color=_text_colour(image.cmap(image.norm(value))))
            if near_best is not None and near_best[i, j]:
                ax.add_patch(plt.Rectangle((j - 0.46, i - 0.46), 0.92, 0.92, fill=False,
                                           edgecolor=_FAILED_COLOUR, lw=2, ls="--"))
    fig.colorbar(image, ax=ax, label=f"{metric} at {budget:g} epochs")
    floor = (f"outlined: within seed noise ({noise.std:.2g}) of the best" if noise.known
             else "seed noise unknown")
    ax.set_title(f"{method}: {metric} over {rows[0]} x {columns[0]}\n({floor})", fontsize=9)
    return _save(fig, path)


def comparison_plot(path: Path, scores: dict[str, pd.Series], metric: str,
                    budget: float) -> Path:
    """Every compared configuration of every method (dots, slightly spread sideways) over
    a box of its quartiles: where each method's trials land, not only its best."""
    methods = list(scores)
    fig, ax = plt.subplots(figsize=(1.3 * len(methods) + 2.2, 4.0))
    ax.boxplot([scores[m].to_numpy(dtype=float) for m in methods], widths=0.5,
               showfliers=False)
    spread = np.random.default_rng(0)
    for position, method in enumerate(methods, start=1):
        values = scores[method].to_numpy(dtype=float)
        ax.scatter(position + spread.uniform(-0.12, 0.12, len(values)), values, s=14,
                   color="#225ea8", alpha=0.7, zorder=3)
    ax.set_xticks(range(1, len(methods) + 1), methods, rotation=20, ha="right")
    ax.set_ylabel(f"{metric} at {budget:g} epochs")
    ax.set_title(f"{metric} of every compared configuration, per method", fontsize=9)
    ax.grid(axis="y", alpha=0.3)
    return _save(fig, path)


def sweep_plot(path: Path, method: str, param: str, values: list, means: np.ndarray,
               stds: np.ndarray, best: np.ndarray, metric: str) -> Path:
    """A sweep as the papers draw it: each value's mean with a bar of +- one standard
    deviation over its seeds, the best value filled; a log axis for positive values that
    span a decade or more."""
    fig, ax = plt.subplots(figsize=(5.2, 3.6))
    numeric = all(isinstance(v, int | float) and not isinstance(v, bool) for v in values)
    x = np.asarray(values, dtype=float) if numeric else np.arange(len(values))
    ax.errorbar(x, means, yerr=np.nan_to_num(stds), fmt="o-", color="#225ea8",
                mfc="white", capsize=3)
    ax.plot(x[best], means[best], "o", color="#225ea8", markersize=8)
    if numeric and (x > 0).all() and x.max() / x.min() >= 10:
        ax.set_xscale("log")
    if not numeric:
        ax.set_xticks(x, [str(v) for v in values])
    ax.set_xlabel(param)
    ax.set_ylabel(f"{metric} (mean +- std over seeds)")
    ax.set_title(f"{method}: {metric} by {param}", fontsize=9)
    ax.grid(alpha=0.3)
    return _save(fig, path)


#: How a trial's learning curve is drawn, by how it ended.
_STATUS_STYLE = {
    "completed": ("#1b7837", "reached the full budget"),
    "stopped_early": ("#9e9e9e", "stopped early (ASHA)"),
    "failed": (_FAILED_COLOUR, "failed"),
}


def learning_curves(
    path: Path, method: str, curves: pd.DataFrame, metric: str,
    references: dict[str, float], rungs: list[float],
) -> Path:
    """``metric`` by epoch for every trial of a method (``curves``: run_id, status, step,
    value), coloured by how the trial ended; dotted verticals where the scheduler stopped
    trials (ASHA's rungs); dashed horizontals for the references (the encoder at its
    random initialisation, chance) a trained encoder must beat."""
    fig, ax = plt.subplots(figsize=(5.6, 3.8))
    seen: set[str] = set()
    for (_, status), rows in curves.groupby(["run_id", "status"], sort=False):
        colour, label = _STATUS_STYLE.get(status, ("#6a51a3", status))
        rows = rows.sort_values("step")
        ax.plot(rows["step"], rows["value"], "-o", ms=2.5, lw=1, color=colour, alpha=0.75,
                label=None if label in seen else label)
        seen.add(label)
    for rung in rungs:
        ax.axvline(rung, color="#555555", ls=":", lw=1)
    if rungs:
        ax.plot([], [], color="#555555", ls=":", lw=1, label="a rung where ASHA stopped trials")
    for (label, value), style in zip(references.items(), ("--", "-."), strict=False):
        ax.axhline(value, color="#b35806", ls=style, lw=1.2, label=f"{label} ({value:.3f})")
    ax.set_xlabel("epoch")
    ax.set_ylabel(metric)
    ax.xaxis.set_major_locator(ticker.MaxNLocator(integer=True))
    ax.set_title(f"{method}: {metric} by epoch, every trial", fontsize=9)
    ax.legend(fontsize=6, loc="best")
    ax.grid(alpha=0.3)
    return _save(fig, path)
