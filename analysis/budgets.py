"""Budgets: at how many epochs trials are compared, and whether low-budget rankings
predict the largest budget's.

ASHA stops weak trials at rungs (the grace period, then times the reduction factor), so
a method's trials reach different budgets. Comparing a 2-epoch value with an 8-epoch one
would make every stopped configuration look bad, so each analysis is made at one budget,
over the trials that reached it, each scored at its last evaluation at or before it.

``--budget`` chooses the budget of a method's figures:

- ``auto`` (default): the largest budget that enough trials reached to estimate
  importance (:func:`enough_trials`: two per searched parameter, never fewer than six).
  When no budget has that many, the budget every trial reached, as ``common``.
- ``common``: the largest budget every finished trial reached. With early stopping this
  is the grace period: one or two epochs, where rankings may not be those of the end.
- ``full``: the full budget (the study's ``max_budget``, else the largest reached).
- a number of epochs.

Importance is estimated at every budget that enough trials reached (the analysed
budgets), and ``budgets.csv`` gives the Spearman rank correlation of the trials' scores
between every pair of analysed budgets and the largest budget reached, with a bootstrap
interval over configurations. With early stopping, the configurations that reached the
higher budget are those the lower budget's scores let through: a narrower range than all
of them, which pulls the correlation towards 0 (in a one-off simulation of planted
searches, a true 0.77 over all configurations came out at 0.46 on average over ASHA's 8
survivors). A low correlation over few of them is therefore weak evidence, and the
report only warns when the whole interval lies below :data:`PREDICTIVE_SPEARMAN`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from itertools import combinations

import numpy as np
import pandas as pd
from scipy import stats

from analysis.errors import AnalysisInputError
from analysis.noise import independent_runs

REQUESTS = ("auto", "common", "full")
MIN_TRIALS = 6
TRIALS_PER_PARAM = 2
#: When the whole interval of the Spearman correlation with the largest budget lies
#: below this, a lower budget's ranking is reported as not predicting the largest's.
PREDICTIVE_SPEARMAN = 0.5
#: Resamples of the correlation's percentile bootstrap interval (95%), seeded.
CORRELATION_RESAMPLES = 1000
#: Fewest trials at both budgets for a correlation to be computed, and for a low one to
#: be warned about.
MIN_CORRELATION_TRIALS = 3
MIN_WARNING_TRIALS = 4
BUDGET_COLUMNS = ["method", "budget_a", "budget_b", "spearman", "spearman_low",
                  "spearman_high", "n"]


def enough_trials(n_params: int) -> int:
    """Trials (configurations) a budget needs for importance: two per searched parameter,
    at least six."""
    return max(MIN_TRIALS, TRIALS_PER_PARAM * n_params)


def parse_request(text: str) -> str:
    """Check a ``--budget`` value: auto, common, full or a positive number of epochs."""
    if text in REQUESTS:
        return text
    try:
        if float(text) > 0 and math.isfinite(float(text)):
            return text
    except ValueError:
        pass
    raise AnalysisInputError(
        f"--budget: expected auto, common, full or a positive number, got {text!r}"
    )


@dataclass(frozen=True)
class BudgetChoice:
    """Where one method's trials are compared, and why."""

    #: The budget of the method's figures and summary.
    budget: float
    #: The study's full budget (or the largest any trial reached).
    full_budget: float
    reached_full: int
    #: Finished configurations that reported the metric (a configuration run with
    #: several seeds counts once).
    eligible: int
    #: Configurations that reached ``budget``.
    at_budget: int
    #: Configurations a budget needs for importance.
    needed: int
    #: Budgets with enough trials for importance, ascending.
    analysed: tuple[float, ...]
    #: ``auto`` found no budget with enough trials and fell back to ``common``.
    fallback: bool = False


def reached(runs: pd.DataFrame, budget: float) -> int:
    return int((runs["budget"] >= budget).sum())


def choose_budget(runs: pd.DataFrame, request: str, n_params: int) -> BudgetChoice:
    """The budget ``request`` names for ``runs`` (one method's finished configurations,
    each with the largest ``budget`` one of its runs reached, and ``max_budget`` where
    the study recorded it)."""
    usable = runs[runs["budget"].notna()]
    if usable.empty:
        raise AnalysisInputError("no run of this method reported the metric")
    full = usable["max_budget"].max()
    if math.isnan(full):
        full = usable["budget"].max()
    needed = enough_trials(n_params)
    budgets = sorted(usable["budget"].unique())
    analysed = tuple(float(b) for b in budgets if reached(usable, b) >= needed)
    fallback = False
    if request == "auto":
        fallback = not analysed
        budget = analysed[-1] if analysed else float(usable["budget"].min())
    elif request == "common":
        budget = float(usable["budget"].min())
    elif request == "full":
        budget = float(full)
    else:
        budget = float(parse_request(request))
    return BudgetChoice(float(budget), float(full), reached(usable, full), len(usable),
                        reached(usable, budget), needed, analysed, fallback)


def values_at_budget(
    runs: pd.DataFrame, history: pd.DataFrame, metric: str, budget: float
) -> pd.Series:
    """Each run's metric at its last report at or before ``budget`` epochs, for runs that
    trained at least that long; indexed by run id."""
    eligible = runs.loc[runs["budget"] >= budget, "run_id"]
    points = history[
        (history["metric"] == metric)
        & history["run_id"].isin(eligible)
        & (history["step"] <= budget)
    ]
    if points.empty:
        return pd.Series(dtype=float)
    last = points.sort_values("step", kind="stable").groupby("run_id").tail(1)
    return last.set_index("run_id")["value"]


def rank_correlations(
    method: str, runs: pd.DataFrame, history: pd.DataFrame, metric: str,
    budgets: list[float], groups: pd.Series | None = None,
) -> pd.DataFrame:
    """Spearman rank correlation of the scores of the configurations that reached both
    budgets, for every pair of ``budgets`` (analysed budgets and the largest reached), with
    its 95% percentile bootstrap interval (configurations resampled).
    ``groups`` (run id -> configuration) averages the independent runs of a configuration
    first (:func:`analysis.noise.independent_runs`). NaN where fewer than three reached
    both, or where one budget's scores are all equal."""
    values = {b: values_at_budget(runs, history, metric, b) for b in budgets}
    if groups is not None:
        independent = {b: independent_runs(runs.loc[v.index], v, groups[v.index]).y
                       for b, v in values.items()}
        values = {b: v.groupby(groups[v.index].to_numpy()).mean()
                  for b, v in independent.items()}
    rows = []
    for low, high in combinations(sorted(set(budgets)), 2):
        both = pd.concat([values[low], values[high]], axis=1, join="inner").dropna()
        rho = rho_low = rho_high = math.nan
        if len(both) >= MIN_CORRELATION_TRIALS:
            x, y = both.iloc[:, 0].to_numpy(), both.iloc[:, 1].to_numpy()
            rho = float(_spearman(x, y))
            if math.isfinite(rho):
                rho_low, rho_high = _spearman_interval(x, y)
        rows.append({"method": method, "budget_a": low, "budget_b": high, "spearman": rho,
                     "spearman_low": rho_low, "spearman_high": rho_high, "n": len(both)})
    return pd.DataFrame(rows, columns=BUDGET_COLUMNS)


def _spearman(x: np.ndarray, y: np.ndarray, axis: int = -1) -> np.ndarray:
    """Spearman's rho along ``axis`` (ties share their mean rank); NaN where one side is
    constant."""
    rx = stats.rankdata(x, axis=axis)
    ry = stats.rankdata(y, axis=axis)
    rx = rx - rx.mean(axis=axis, keepdims=True)
    ry = ry - ry.mean(axis=axis, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (rx * ry).sum(axis=axis) / np.sqrt(
            (rx**2).sum(axis=axis) * (ry**2).sum(axis=axis))


def _spearman_interval(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """95% percentile bootstrap interval of Spearman's rho over (x, y) pairs; resamples
    where a side is constant are left out. (scipy.stats.bootstrap would return NaN for
    the whole interval as soon as one resample of a few configurations is constant.)"""
    rng = np.random.default_rng(0)
    picks = rng.integers(0, len(x), size=(CORRELATION_RESAMPLES, len(x)))
    rhos = _spearman(x[picks], y[picks])
    rhos = rhos[np.isfinite(rhos)]
    if rhos.size == 0:
        return math.nan, math.nan
    low, high = np.quantile(rhos, [0.025, 0.975])
    return float(low), float(high)


def unpredictive(correlations: pd.DataFrame, largest: float) -> pd.DataFrame:
    """The lower budgets whose ranking does not predict the largest budget's: over at
    least :data:`MIN_WARNING_TRIALS` configurations, the whole interval of the Spearman
    correlation below :data:`PREDICTIVE_SPEARMAN`."""
    against = correlations[(correlations["budget_b"] == largest)
                           & (correlations["n"] >= MIN_WARNING_TRIALS)]
    return against[np.asarray(against["spearman_high"] < PREDICTIVE_SPEARMAN, dtype=bool)]
