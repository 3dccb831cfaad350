"""Search scales: the axis on which each parameter was searched, and its bins on that axis.

Every analysis (importance, response curves, heat maps, failure rates, nearest
neighbours) works on a parameter's search scale: log10 for a ``log`` parameter, log10(1 -
m) for a ``log1m`` one (MoCo's momentum), categories for a categorical one, the raw value
otherwise. A learning rate searched log-uniformly on [1e-4, 1e-1] thus counts its three
decades equally, as the search did, instead of being judged on a linear axis where the
first decade is 1% of the range.

The scale comes from the study's recorded search space when there is one; for experiments
not made here it is inferred from the values and the report says so.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd

Scale = Literal["linear", "log", "log1m", "categorical"]
#: Where a parameter's scale came from.
FROM_SPACE = "search space"
INFERRED = "inferred"
#: Numeric parameters with at most this many distinct values are treated as categories
#: when no search space says otherwise (batch sizes, layer counts).
FEW_VALUES = 4
#: Positive values spanning this ratio or more are inferred to be log-scaled.
LOG_RATIO = 100.0


def param_scale(values: pd.Series, spec: dict[str, Any] | None) -> Scale:
    """The parameter's scale: from the recorded search space when there is one, else
    inferred: categorical when non-numeric or with few distinct values; log when the
    values are positive, span two decades or more and crowd the low end of the linear
    range (median in its lowest quarter: a log-uniform search over three decades puts
    half its values in the lowest 1%, a uniform one in the middle); linear otherwise."""
    if spec is not None:
        return "categorical" if spec.get("type") == "categorical" else spec.get("scale", "linear")
    if not pd.api.types.is_numeric_dtype(values):
        return "categorical"
    present = values.dropna()
    if present.nunique() <= FEW_VALUES:
        return "categorical"
    low, high = present.min(), present.max()
    if low > 0 and high / low >= LOG_RATIO and present.median() < low + (high - low) / 4:
        return "log"
    return "linear"


def forward(x: np.ndarray, scale: Scale) -> np.ndarray:
    """Values on the axis their scale searches (log10, or log10 of 1 - x)."""
    if scale == "log":
        return np.log10(x)
    if scale == "log1m":
        return np.log10(1.0 - x)
    return x


def backward(t: np.ndarray, scale: Scale) -> np.ndarray:
    """The inverse of :func:`forward`."""
    if scale == "log":
        return 10.0**t
    if scale == "log1m":
        return 1.0 - 10.0**t
    return t


def describe(scale: Scale) -> str:
    """How the report names a scale's axis."""
    return {"log": "log10", "log1m": "log10(1 - value)", "categorical": "categories",
            "linear": "linear"}[scale]


def order_key(value: object) -> tuple[int, float | str]:
    """Numbers in numeric order first, then everything else alphabetically."""
    if isinstance(value, int | float | np.number) and not isinstance(value, bool):
        return (0, float(value))
    return (1, str(value))


def n_bins(n_trials: int, n_params: int) -> int:
    """Bins per numeric parameter: about sqrt(n), at most 1 + n / (2P) so that the
    surrogate's bins together never outnumber half the trials, between 2 and 10."""
    by_size = round(np.sqrt(n_trials))
    by_budget = 1 + n_trials // max(1, 2 * n_params)
    return int(np.clip(min(by_size, by_budget), 2, 10))


@dataclass(frozen=True)
class Binning:
    """One parameter's grid on its search scale, in one of three kinds.

    - ``levels``: categories, and numeric parameters with no more distinct values than
      the grid would have (a batch size searched over three choices): one level per value.
    - ``bins``: equal-width intervals of the search scale over the range the trials
      covered (heat maps, failure rates).
    - ``knots``: equally spaced points of the search scale from the smallest to the
      largest value the trials took; the surrogate's main effects are piecewise linear
      between them, and a value belongs to its nearest knot.

    Every level, bin or knot stands for an equal share of the search space in the
    uniform measure that importance integrates over.
    """

    scale: Scale
    #: Per level, bin or knot, the value it stands for on the parameter's own scale: the
    #: value, the bin's centre, or the knot, mapped back from the search scale.
    labels: tuple[Any, ...]
    kind: Literal["levels", "bins", "knots"] = "levels"
    #: Search-scale positions: the outer edges of the bins, or the knots.
    points: np.ndarray | None = None

    @property
    def size(self) -> int:
        return len(self.labels)

    def _position(self, values: pd.Series) -> np.ndarray:
        """Where each value falls on the grid, in units of bins or knot spacings from the
        first (NaN for a missing value)."""
        assert self.points is not None
        x = pd.to_numeric(values, errors="coerce").to_numpy(dtype=float)
        with np.errstate(invalid="ignore", divide="ignore"):
            t = forward(x, self.scale)
        spacing = (self.points[-1] - self.points[0]) / (len(self.points) - 1)
        return np.where(np.isfinite(t), (t - self.points[0]) / spacing, np.nan)

    def assign(self, values: pd.Series) -> np.ndarray:
        """The level, bin or nearest knot of each value; -1 for a missing value or a level
        this grid never saw."""
        if self.kind == "levels":
            lookup = {_key(v): i for i, v in enumerate(self.labels)}
            return np.array([lookup.get(_key(v), -1) for v in values], dtype=np.int64)
        position = self._position(values)
        index = np.floor(position) if self.kind == "bins" else np.round(position)
        codes = np.clip(np.nan_to_num(index, nan=-1), 0, self.size - 1).astype(np.int64)
        return np.where(np.isfinite(position), codes, -1)

    def design(self, values: pd.Series) -> tuple[np.ndarray, np.ndarray]:
        """The surrogate's basis at each value: two (n, 2) arrays, the indices of the
        levels or knots a value loads on and its weights there. A level loads 1 on
        itself; between knots a value loads on the two around it, linearly."""
        if self.kind != "knots":
            codes = self.assign(values)
            return (np.stack([codes, codes], axis=1),
                    np.stack([np.ones(len(codes)), np.zeros(len(codes))], axis=1))
        position = np.clip(self._position(values), 0, self.size - 1)
        left = np.clip(np.floor(position), 0, self.size - 2).astype(np.int64)
        fraction = position - left
        return (np.stack([left, left + 1], axis=1),
                np.stack([1.0 - fraction, fraction], axis=1))


def _key(value: Any) -> Any:
    """Equality key of a level: numbers by value (64 and 64.0 are one batch size)."""
    if isinstance(value, int | float | np.number) and not isinstance(value, bool):
        return float(value)
    return str(value)


def _grid(values: pd.Series, scale: Scale, size: int, kind: Literal["bins", "knots"]
          ) -> Binning:
    present = values.dropna()
    distinct = sorted({_key(v): v for v in present}.values(), key=order_key)
    numeric = scale != "categorical" and pd.api.types.is_numeric_dtype(present)
    if not numeric or len(distinct) <= size:
        return Binning(scale, tuple(_native(v) for v in distinct))
    t = forward(present.to_numpy(dtype=float), scale)
    if kind == "bins":
        edges = np.linspace(float(t.min()), float(t.max()), size + 1)
        centres = backward((edges[:-1] + edges[1:]) / 2, scale)
        return Binning(scale, tuple(float(c) for c in centres), "bins", edges)
    knots = np.linspace(float(t.min()), float(t.max()), size)
    return Binning(scale, tuple(float(k) for k in backward(knots, scale)), "knots", knots)


def make_binning(values: pd.Series, scale: Scale, bins: int) -> Binning:
    """Equal-width bins of ``values`` on their search scale (levels for categories)."""
    return _grid(values, scale, bins, "bins")


def make_knots(values: pd.Series, scale: Scale, knots: int) -> Binning:
    """The surrogate's knots for ``values`` (levels for categories)."""
    return _grid(values, scale, knots, "knots")


def _native(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value
