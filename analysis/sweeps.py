"""Paper-style sweeps: one or two hyperparameters varied around a base configuration,
several seeds per value (``sslstudy sweep``), read back as the papers print them.

Each value gets the mean and standard deviation over its seeds of the test-split form of
the analysed metric (a sweep selects nothing, so it reports the held-out score). The
best value is marked, and so is every value whose difference from the best is within
noise: within two standard errors of that difference,
``2 * sqrt(s_v^2 / n_v + s_best^2 / n_best)``, the spread the seeds alone produce.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd

from analysis import plots
from tracking.schema import KIND_SWEEP, VAL_PREFIX

SWEEP_COLUMNS = ["method", "param", "value", "param2", "value2", "metric", "mean", "std", "n"]


def sweep_runs(runs: pd.DataFrame) -> pd.DataFrame:
    """The runs that are cells of a sweep."""
    if "run_kind" not in runs:
        return runs.iloc[0:0]
    return runs[runs["run_kind"] == KIND_SWEEP]


def reported_metric(metric: str, runs: pd.DataFrame) -> str:
    """The held-out form of ``metric`` where the runs logged it, else ``metric`` itself."""
    held_out = metric.removeprefix(VAL_PREFIX)
    return held_out if f"final_{held_out}" in runs else metric


def sweep_table(runs: pd.DataFrame, metric: str) -> pd.DataFrame:
    """``sweeps.csv``: one row per sweep and value (and second value), mean, std and the
    number of finished seeds."""
    cells = sweep_runs(runs)
    cells = cells[cells["status"] == "completed"]
    if cells.empty:
        return pd.DataFrame(columns=[*SWEEP_COLUMNS, "sweep"])
    reported = reported_metric(metric, cells)
    rows = []
    for (method, parent), group in cells.groupby(["method", "parent_run_id"], sort=False):
        decoded = [json.loads(cell) for cell in group["sweep_cell"]]
        names = list(decoded[0])
        key = pd.Series([tuple(c[n] for n in names) for c in decoded], index=group.index)
        for values, members in group.groupby(key, sort=True):
            scores = members[f"final_{reported}"].dropna().to_numpy(dtype=float)
            rows.append({
                "method": method, "param": names[0], "value": values[0],
                "param2": names[1] if len(names) > 1 else None,
                "value2": values[1] if len(names) > 1 else None,
                "metric": reported, "mean": scores.mean() if len(scores) else math.nan,
                "std": scores.std(ddof=1) if len(scores) > 1 else math.nan,
                "n": len(scores), "sweep": parent,
            })
    table = pd.DataFrame(rows)
    return table[[*SWEEP_COLUMNS, "sweep"]]


def mark_best(table: pd.DataFrame, mode: str) -> pd.DataFrame:
    """Add ``best`` (the best mean of its sweep) and ``within_noise`` (its difference from
    the best is within two standard errors) columns."""
    if table.empty:
        return table.assign(best=pd.Series(dtype=bool), within_noise=pd.Series(dtype=bool))
    marked = []
    for _, sweep in table.groupby("sweep", sort=False):
        sweep = sweep.copy()
        best = sweep["mean"].idxmax() if mode == "max" else sweep["mean"].idxmin()
        b = sweep.loc[best]
        se = np.sqrt(sweep["std"].fillna(np.inf) ** 2 / sweep["n"]
                     + (b["std"] if b["n"] > 1 else np.inf) ** 2 / b["n"])
        sweep["best"] = sweep.index == best
        sweep["within_noise"] = (~sweep["best"]) & ((sweep["mean"] - b["mean"]).abs()
                                                    <= 2 * se)
        marked.append(sweep)
    return pd.concat(marked)


def sweep_plots(table: pd.DataFrame, out: Path) -> list[Path]:
    """One figure per one-parameter sweep: mean +- std per value, the best filled."""
    figures = []
    for sweep_id, sweep in table.groupby("sweep", sort=False):
        if sweep["param2"].notna().any():
            continue
        first = sweep.iloc[0]
        figures.append(plots.sweep_plot(
            out / f"sweep_{first['method']}_{first['param']}_{sweep_id[:8]}.png",
            first["method"], first["param"], sweep["value"].tolist(),
            sweep["mean"].to_numpy(float), sweep["std"].to_numpy(float),
            sweep["best"].to_numpy(bool), first["metric"],
        ))
    return figures
