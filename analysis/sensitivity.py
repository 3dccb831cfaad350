"""Comparable budgets, the metric's response to each parameter, and fANOVA importance.

Trials that ASHA stopped early carry values measured after fewer epochs than trials that
ran to the end. Comparing those directly would make every early-stopped configuration
look bad, so every trial is scored at one common budget: by default the largest number
of epochs that every non-failed trial of a method reached.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import optuna
import pandas as pd
from scipy import stats

from analysis.errors import AnalysisInputError

Scale = Literal["linear", "log", "log1m", "categorical"]
IMPORTANCE_EVALUATOR = "FanovaImportanceEvaluator"
MIN_TRIALS_FOR_IMPORTANCE = 4


@dataclass(frozen=True)
class BudgetChoice:
    budget: float
    full_budget: float
    reached_full: int
    eligible: int


def choose_budget(runs: pd.DataFrame, request: str) -> BudgetChoice:
    """``request`` is ``common``, ``full`` or a number of epochs."""
    usable = runs[runs["budget"].notna()]
    if usable.empty:
        raise AnalysisInputError("no run of this method reported the metric")
    full = usable["max_budget"].max()
    if math.isnan(full):
        full = usable["budget"].max()
    if request == "common":
        budget = usable["budget"].min()
    elif request == "full":
        budget = full
    else:
        try:
            budget = float(request)
        except ValueError:
            raise AnalysisInputError(
                f"--budget: expected common, full or a number, got {request!r}"
            ) from None
    reached = int((usable["budget"] >= full).sum())
    return BudgetChoice(float(budget), float(full), reached, len(usable))


def values_at_budget(
    runs: pd.DataFrame, history: pd.DataFrame, metric: str, budget: float
) -> pd.Series:
    """Each run's metric at the last report at or before ``budget`` epochs, for runs that
    trained at least that long; indexed by run id."""
    eligible = runs.loc[runs["budget"] >= budget, "run_id"]
    points = history[
        (history["metric"] == metric)
        & history["run_id"].isin(eligible)
        & (history["step"] <= budget)
    ]
    if points.empty:
        return pd.Series(dtype=float)
    last = points.sort_values("step").groupby("run_id").tail(1)
    return last.set_index("run_id")["value"]


def param_scale(name: str, values: pd.Series, spec: dict[str, Any] | None) -> Scale:
    """The parameter's scale: from the recorded search space when there is one, else
    inferred (non-numeric or few distinct values: categorical; positive values spanning
    two decades or more: log)."""
    if spec is not None:
        return "categorical" if spec.get("type") == "categorical" else spec.get("scale", "linear")
    if not pd.api.types.is_numeric_dtype(values):
        return "categorical"
    present = values.dropna()
    if present.nunique() <= 4:
        return "categorical"
    if (present > 0).all() and present.max() / present.min() >= 100:
        return "log"
    return "linear"


def forward(x: np.ndarray, scale: Scale) -> np.ndarray:
    """Values on the axis their scale searches (log10, or log10 of 1 - x)."""
    if scale == "log":
        return np.log10(x)
    if scale == "log1m":
        return np.log10(1.0 - x)
    return x


def _backward(t: np.ndarray, scale: Scale) -> np.ndarray:
    if scale == "log":
        return 10.0**t
    if scale == "log1m":
        return 1.0 - 10.0**t
    return t


def _band(values: np.ndarray) -> tuple[float, float, float]:
    """Mean and 95% t-interval of the mean; a single trial gives a zero-width band."""
    mean = float(np.mean(values))
    if len(values) < 2:
        return mean, mean, mean
    half = float(stats.t.ppf(0.975, len(values) - 1) * stats.sem(values))
    if not math.isfinite(half):
        half = 0.0
    return mean, mean - half, mean + half


def response(x: pd.Series, y: pd.Series, scale: Scale, max_bins: int = 6) -> pd.DataFrame:
    """Binned response of ``y`` to ``x``: equal-width bins on the parameter's own scale
    (so a log-scaled temperature gets bins equally spaced in log), one row per bin with
    its centre, mean, band and count. Categorical parameters get one row per value."""
    data = pd.DataFrame({"x": x, "y": y}).dropna()
    rows = []
    if scale == "categorical":
        for value, group in data.groupby("x", sort=True):
            mean, low, high = _band(group["y"].to_numpy())
            rows.append({"value": value, "mean": mean, "low": low, "high": high,
                         "n": len(group)})
        return pd.DataFrame(rows, columns=["value", "mean", "low", "high", "n"])
    t = forward(data["x"].to_numpy(dtype=float), scale)
    bins = int(np.clip(round(math.sqrt(len(data))), 2, max_bins))
    edges = np.linspace(t.min(), t.max(), bins + 1)
    which = np.clip(np.digitize(t, edges[1:-1]), 0, bins - 1)
    for b in range(bins):
        members = data["y"].to_numpy()[which == b]
        if len(members) == 0:
            continue
        mean, low, high = _band(members)
        centre = float(_backward(np.array((edges[b] + edges[b + 1]) / 2), scale))
        rows.append({"value": centre, "mean": mean, "low": low, "high": high,
                     "n": len(members)})
    return pd.DataFrame(rows, columns=["value", "mean", "low", "high", "n"])


def varying_params(frame: pd.DataFrame, params: list[str]) -> list[str]:
    return [p for p in params if p in frame and frame[p].dropna().nunique() > 1]


def _distribution(values: pd.Series, scale: Scale) -> optuna.distributions.BaseDistribution:
    if scale == "categorical":
        return optuna.distributions.CategoricalDistribution(
            [_native(v) for v in sorted(values.dropna().unique())]
        )
    if scale == "log1m":
        one_minus = 1.0 - values
        return optuna.distributions.FloatDistribution(
            float(one_minus.min()), float(one_minus.max()), log=True
        )
    return optuna.distributions.FloatDistribution(
        float(values.min()), float(values.max()), log=scale == "log"
    )


def importance(
    frame: pd.DataFrame, y: pd.Series, scales: dict[str, Scale], mode: str, seed: int = 0
) -> dict[str, float]:
    """fANOVA importance (Hutter et al. 2014) through Optuna, named explicitly: Optuna's
    default evaluator changed in version 5 and results must not depend on that."""
    params = [p for p in scales if frame[p].notna().all()]
    if len(y) < MIN_TRIALS_FOR_IMPORTANCE or not params:
        return {}
    distributions = {p: _distribution(frame[p], scales[p]) for p in params}
    study = optuna.create_study(direction="maximize" if mode == "max" else "minimize")
    for run_id, value in y.items():
        row = frame.loc[run_id]
        suggestion = {
            p: (1.0 - float(row[p])) if scales[p] == "log1m" else _native(row[p]) for p in params
        }
        study.add_trial(
            optuna.trial.create_trial(params=suggestion, distributions=distributions,
                                      value=float(value))
        )
    evaluator = optuna.importance.FanovaImportanceEvaluator(seed=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.importance.get_param_importances(study, evaluator=evaluator,
                                                       normalize=True)


def _native(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value
