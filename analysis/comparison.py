"""Comparing methods: how good each gets, how reliably, and how fragile its best is.

All methods are compared at one budget (``budget``: the smallest of the methods' own
comparison budgets, so every method has enough trials there), each configuration once
(the mean of its runs when it was run with several seeds). The table gives the best and
median score and the spread across configurations (interquartile range and standard
deviation): a method whose median sits near its best is easy to tune. A method with more
trials has more chances at a lucky best, so ``expected_best`` puts every method on a
common number of trials ``common_n`` (the fewest any method has): the expected best of
``common_n`` configurations drawn at random from the method's, computed exactly over all
such draws. Where the best configuration was run with several seeds, ``best`` is its
mean over them, ``best_runs`` their number and ``best_std`` their standard deviation.
The robustness of the best configuration is read from the search itself, without extra
runs: the mean score of the ``k`` configurations nearest to the best one in
hyperparameter space (each numeric parameter on its search scale, normalised to the range
the method's trials covered; a categorical parameter counts 1 when it differs), and the
drop from the best to them. A small drop
means the best configuration sits on a plateau; a large one, on a peak that a slightly
different setting (or another dataset) may miss.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from analysis.scales import Scale, forward

NEIGHBOURS = 3

COLUMNS = ["method", "trials", "budget", "best", "median", "q25", "q75", "iqr", "std",
           "common_n", "expected_best", "best_runs", "best_std",
           "neighbours", "neighbour_distance", "neighbour_mean", "best_drop"]


def expected_best(values: np.ndarray, n: int, mode: str) -> float:
    """The expected best of ``n`` values drawn without replacement from ``values``: the
    k-th smallest is the maximum of a draw with probability C(k-1, n-1) / C(m, n)."""
    ordered = np.sort(np.asarray(values, dtype=float) * (1.0 if mode == "max" else -1.0))
    m = len(ordered)
    if not 1 <= n <= m:
        return math.nan
    total = math.comb(m, n)
    chances = np.array([math.comb(k - 1, n - 1) / total for k in range(1, m + 1)])
    return float((chances * ordered).sum()) * (1.0 if mode == "max" else -1.0)


def _coordinates(frame: pd.DataFrame, scales: dict[str, Scale]) -> list[np.ndarray]:
    """One column per parameter: numeric ones on [0, 1] after their scale's transform;
    categorical ones as codes (compared for equality only)."""
    columns = []
    for param, scale in scales.items():
        values = frame[param]
        if scale == "categorical":
            columns.append(values.astype(str).to_numpy())
            continue
        t = forward(values.to_numpy(dtype=float), scale)
        span = np.nanmax(t) - np.nanmin(t)
        columns.append((t - np.nanmin(t)) / span if span > 0 else np.zeros_like(t))
    return columns


def neighbour_distances(
    frame: pd.DataFrame, scales: dict[str, Scale], origin: int
) -> np.ndarray:
    """Distance of every trial (row) to row ``origin``: root mean square over the
    parameters of the per-parameter differences defined above."""
    if not scales:
        return np.zeros(len(frame))
    squared = np.zeros(len(frame))
    for column, scale in zip(_coordinates(frame, scales), scales.values(), strict=True):
        if scale == "categorical":
            squared += (column != column[origin]).astype(float)
        else:
            squared += (column - column[origin]) ** 2
    return np.sqrt(squared / len(scales))


def compare_method(
    method: str, scores: pd.Series, frame: pd.DataFrame, scales: dict[str, Scale],
    budget: float, mode: str, common_n: int | None = None, runs: pd.Series | None = None,
    stds: pd.Series | None = None, neighbours: int = NEIGHBOURS,
) -> dict[str, float | str | int]:
    """One row of the comparison table. ``scores`` holds one value per configuration,
    indexed like ``frame``; ``runs`` and ``stds`` (aligned with it) the number of runs
    behind each and their standard deviation, where configurations were repeated."""
    values = scores.to_numpy(dtype=float)
    best_position = int(np.argmax(values) if mode == "max" else np.argmin(values))
    q25, median, q75 = np.percentile(values, [25, 50, 75])
    best_runs = int(runs.iloc[best_position]) if runs is not None else 1
    row: dict[str, float | str | int] = {
        "method": method, "trials": len(values), "budget": budget,
        "best": float(values[best_position]), "median": float(median), "q25": float(q25),
        "q75": float(q75), "iqr": float(q75 - q25),
        "std": float(np.std(values, ddof=1)) if len(values) > 1 else float("nan"),
        "common_n": common_n or len(values),
        "expected_best": expected_best(values, common_n or len(values), mode),
        "best_runs": best_runs,
        "best_std": float(stds.iloc[best_position]) if best_runs > 1 and stds is not None
        else float("nan"),
        "neighbours": 0, "neighbour_distance": float("nan"),
        "neighbour_mean": float("nan"), "best_drop": float("nan"),
    }
    k = min(neighbours, len(values) - 1)
    if k < 1:
        return row
    distances = neighbour_distances(frame.reset_index(drop=True), scales, best_position)
    distances[best_position] = np.inf
    nearest = np.argsort(distances, kind="stable")[:k]
    neighbour_mean = float(values[nearest].mean())
    sign = 1.0 if mode == "max" else -1.0
    row.update(neighbours=k, neighbour_distance=float(distances[nearest].mean()),
               neighbour_mean=neighbour_mean,
               best_drop=sign * (float(values[best_position]) - neighbour_mean))
    return row
