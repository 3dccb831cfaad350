"""Tables of the marginal responses and effect sizes, and the grid of a heat map.

``sensitivity.csv`` holds each parameter's marginal response (see
:mod:`analysis.importance`): per bin, ``value`` (on the parameter's own scale: the
category, the value, or the bin's centre on the search scale mapped back), ``mean`` (the
surrogate's partial dependence), ``low``/``high`` (its 95% bootstrap band, empty where
fewer than three trials support the bin) and ``n`` (the trials in the bin).

``effects.csv`` gives each parameter's effect: the range of its marginal response in
metric units, with its bootstrap interval, beside the seed noise floor; ``exceeds_noise``
is true when the parameter's importance is significant and the whole interval lies above
the noise standard deviation, empty when the noise is unknown or significance was not
tested (too few trials). The range of a response is biased upwards by noise, so a
parameter whose importance noise explains can still show an interval above the noise
floor: only significance rules chance out.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from analysis.importance import MIN_SUPPORT, Marginals
from analysis.noise import NoiseFloor
from analysis.scales import Binning, Scale, make_binning

SENSITIVITY_COLUMNS = ["method", "param", "value", "mean", "low", "high", "n"]
EFFECT_COLUMNS = ["method", "param", "budget", "effect", "low", "high", "noise_std",
                  "exceeds_noise"]
#: Bins per axis of a heat map of two continuous parameters.
HEATMAP_BINS = 5


def sensitivity_table(method: str, marginals: Marginals) -> pd.DataFrame:
    rows = []
    for i, param in enumerate(marginals.params):
        for b, value in enumerate(marginals.binnings[i].labels):
            n = int(marginals.counts[i][b])
            banded = n >= MIN_SUPPORT
            rows.append({
                "method": method, "param": param, "value": value,
                "mean": float(marginals.response[i][b]),
                "low": float(marginals.band[i][b, 0]) if banded else np.nan,
                "high": float(marginals.band[i][b, 1]) if banded else np.nan,
                "n": n,
            })
    return pd.DataFrame(rows, columns=SENSITIVITY_COLUMNS)


def effects_table(
    method: str, budget: float, marginals: Marginals, noise: NoiseFloor
) -> pd.DataFrame:
    low, high = marginals.effect_interval[:, 0], marginals.effect_interval[:, 1]
    tested = noise.known and not np.isnan(marginals.null_high).any()
    exceeds = (np.where((low > noise.std) & marginals.significant, "true", "false")
               if tested else "")
    return pd.DataFrame({
        "method": method, "param": marginals.params, "budget": budget,
        "effect": marginals.effect, "low": low, "high": high,
        "noise_std": noise.std, "exceeds_noise": exceeds,
    }, columns=EFFECT_COLUMNS)


def _axis(values: pd.Series, scale: Scale) -> tuple[Binning, np.ndarray]:
    binning = make_binning(values, scale, HEATMAP_BINS)
    return binning, binning.assign(values)


def heatmap_grid(
    frame: pd.DataFrame, y: pd.Series, rows: tuple[str, Scale], columns: tuple[str, Scale]
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Mean score and number of configurations per cell of two parameters' bins on their
    search scales (five bins for a continuous parameter, one per value otherwise)."""
    (row, row_scale), (col, col_scale) = rows, columns
    row_bins, row_codes = _axis(frame[row], row_scale)
    col_bins, col_codes = _axis(frame[col], col_scale)
    data = pd.DataFrame({"r": row_codes, "c": col_codes, "y": np.asarray(y, dtype=float)})
    data = data[(data["r"] >= 0) & (data["c"] >= 0)]
    shape = (row_bins.size, col_bins.size)
    sums = np.zeros(shape)
    counts = np.zeros(shape)
    np.add.at(sums, (data["r"].to_numpy(), data["c"].to_numpy()), data["y"].to_numpy())
    np.add.at(counts, (data["r"].to_numpy(), data["c"].to_numpy()), 1.0)
    with np.errstate(invalid="ignore"):
        means = np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)
    index = [_label(v) for v in row_bins.labels]
    labels = [_label(v) for v in col_bins.labels]
    return (pd.DataFrame(means, index=index, columns=labels),
            pd.DataFrame(counts, index=index, columns=labels))


def _label(value: object) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)
