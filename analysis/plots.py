"""Matplotlib figures of a sensitivity analysis, written as PNG files."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib import ticker

from analysis.sensitivity import Scale

_FAILED_COLOUR = "#c0392b"


def _order(value: object) -> tuple[int, float | str]:
    """Numbers in numeric order first, then everything else alphabetically."""
    if isinstance(value, int | float | np.number) and not isinstance(value, bool):
        return (0, float(value))
    return (1, str(value))


def _save(fig: plt.Figure, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
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


def response_plot(
    path: Path,
    method: str,
    param: str,
    scale: Scale,
    trials: pd.DataFrame,
    binned: pd.DataFrame,
    failed_x: pd.Series,
    metric: str,
    budget: float,
) -> Path:
    """Every trial as a dot, the binned mean with its 95% band as a line, and failed
    trials as red crosses along the bottom (a too-low temperature that diverged is a
    sensitivity too). A ``log1m`` parameter is drawn against 1 - value on a log axis."""
    fig, ax = plt.subplots(figsize=(5.2, 3.6))
    label = param
    to_x = (lambda v: 1.0 - v) if scale == "log1m" else (lambda v: v)
    if scale == "categorical":
        categories = sorted(pd.concat([trials["x"], failed_x]).dropna().unique(), key=_order)
        position = {c: i for i, c in enumerate(categories)}
        ax.scatter([position[v] for v in trials["x"]], trials["y"], s=22, alpha=0.6,
                   color="#2c7fb8", label="trial")
        if not binned.empty:
            xs = [position[v] for v in binned["value"]]
            ax.errorbar(xs, binned["mean"], yerr=[binned["mean"] - binned["low"],
                        binned["high"] - binned["mean"]], fmt="o-", color="#253494",
                        capsize=4, label="mean, 95% CI")
        ax.set_xticks(range(len(categories)), [str(c) for c in categories])
        failed_pos = [position[v] for v in failed_x.dropna()]
    else:
        ax.scatter(to_x(trials["x"]), trials["y"], s=22, alpha=0.6, color="#2c7fb8",
                   label="trial")
        if not binned.empty:
            ax.plot(to_x(binned["value"]), binned["mean"], "o-", color="#253494",
                    label="binned mean")
            ax.fill_between(to_x(binned["value"]), binned["low"], binned["high"],
                            color="#253494", alpha=0.15, label="95% CI")
        if scale in ("log", "log1m"):
            _log_axis(ax, to_x(trials["x"]))
        if scale == "log1m":
            label = f"1 - {param}"
        failed_pos = list(to_x(failed_x.dropna()))
    if failed_pos:
        ax.scatter(failed_pos, np.zeros(len(failed_pos)), marker="x", color=_FAILED_COLOUR,
                   transform=ax.get_xaxis_transform(), clip_on=False, label="failed")
    ax.set_xlabel(label)
    ax.set_ylabel(f"{metric} at {budget:g} epochs")
    ax.set_title(f"{method}: {metric} vs {param}")
    ax.legend(fontsize=7, loc="best")
    ax.grid(alpha=0.3)
    return _save(fig, path)


def importance_plot(path: Path, method: str, importances: pd.DataFrame) -> Path:
    ordered = importances.sort_values("importance")
    fig, ax = plt.subplots(figsize=(5.2, 0.45 * len(ordered) + 1.4))
    ax.barh(ordered["param"], ordered["importance"], color="#41b6c4")
    ax.set_xlabel("fANOVA importance (share of variance)")
    ax.set_xlim(0, max(1.0, float(ordered["importance"].max())))
    ax.set_title(f"{method}: hyperparameter importance")
    ax.grid(axis="x", alpha=0.3)
    return _save(fig, path)


def heatmap(
    path: Path,
    method: str,
    grid: pd.DataFrame,
    counts: pd.DataFrame,
    row_label: str,
    col_label: str,
    metric: str,
) -> Path:
    """Mean metric per (row bin, column value); each cell is annotated with its mean and
    the number of trials behind it, and empty cells stay blank."""
    fig, ax = plt.subplots(figsize=(1.1 * grid.shape[1] + 2.6, 0.55 * grid.shape[0] + 1.6))
    image = ax.imshow(grid.to_numpy(dtype=float), aspect="auto", cmap="viridis",
                      origin="lower")
    ax.set_xticks(range(grid.shape[1]), [str(c) for c in grid.columns])
    ax.set_yticks(range(grid.shape[0]), [str(r) for r in grid.index])
    ax.set_xlabel(col_label)
    ax.set_ylabel(row_label)
    for i in range(grid.shape[0]):
        for j in range(grid.shape[1]):
            value = grid.iat[i, j]
            if pd.notna(value):
                ax.text(j, i, f"{value:.3f}\nn={int(counts.iat[i, j])}", ha="center",
                        va="center", fontsize=7, color="white")
    fig.colorbar(image, ax=ax, label=metric)
    ax.set_title(f"{method}: {metric} over {row_label} x {col_label}")
    return _save(fig, path)


def comparison_plot(path: Path, scores: dict[str, pd.Series], metric: str) -> Path:
    """Every compared trial of every method (dots, slightly spread sideways) over a box
    of its quartiles: where each method's trials land, not only its best."""
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
    ax.set_ylabel(metric)
    ax.set_title(f"{metric} of every compared trial, per method")
    ax.grid(axis="y", alpha=0.3)
    return _save(fig, path)
