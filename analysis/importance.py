"""Importance with an interval and a permutation null, and the marginal responses that
come with it.

Everything is read off the additive surrogate of :mod:`analysis.surrogate`, fitted on
the parameters' search scales (knots for continuous parameters, levels for categories):

- **importance**: the share of the metric's variance a parameter's main effect explains
  (fANOVA's main-effect fraction, not renormalised);
- **interval** (``low``, ``high``): the 2.5% and 97.5% percentiles over
  :data:`BOOTSTRAP` refits on trials resampled with replacement, at the smoothing the
  fit on the trials as they are chose. A variance share is biased upwards by noise, so
  for a parameter with next to no effect every refit can explain a little more than
  that fit; the interval is then widened to reach the estimate rather than shown
  excluding it (conservative, never narrower than the percentiles);
- **null** (``null_high``): the importance the same analysis gives the parameter when
  it has no effect, over :func:`permutations` draws from each of two nulls
  (:func:`_null_importances`): Freedman and Lane's permutation of the residuals of the
  model without it, which keeps the parameters' correlations as the search made them,
  and its own column shuffled across trials; ``null_high`` is the value the observed
  importance must exceed for a permutation p-value of at most ALPHA / P under both, P
  the number of parameters (Bonferroni: the whole family of parameters is tested at 5%,
  so a study with many parameters does not find an effect by chance). ``significant``
  is importance above it;
- **marginal response**: the surrogate's partial dependence on each parameter (the mean
  prediction with the parameter set to each knot or level, the others as the trials had
  them), with its bootstrap band;
- **effect**: the range of that response over the knots or levels that hold a trial (a
  trial belongs to its nearest knot), in metric units, with its bootstrap interval
  (widened to reach the estimate, as the importance's is).

Cost: one batched fit of BOOTSTRAP replicates and, per parameter, two of
``permutations(P)`` replicates each.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from analysis import surrogate
from analysis.scales import Binning, Scale, make_knots, n_bins

#: What importance.csv's ``evaluator`` column names: fANOVA main effects of the
#: additive surrogate on the search scales.
EVALUATOR = "additive_fanova"
#: Family-wise significance level.
ALPHA = 0.05
BOOTSTRAP = 200
MIN_PERMUTATIONS = 100
#: Trials a knot or level needs before its response gets a band.
MIN_SUPPORT = 3
IMPORTANCE_COLUMNS = ["method", "param", "importance", "low", "high", "null_high",
                      "significant", "evaluator", "budget"]


def permutations(n_params: int) -> int:
    """Shuffles per parameter: enough that the null's 1 - ALPHA / P tail holds at least
    two of them, never fewer than :data:`MIN_PERMUTATIONS`."""
    return max(MIN_PERMUTATIONS, math.ceil(2 * n_params / ALPHA))


@dataclass(frozen=True)
class Marginals:
    """What the surrogate says about each parameter at one budget."""

    params: list[str]
    binnings: list[Binning]
    #: Per parameter, the trials (configurations) nearest each knot or at each level.
    counts: list[np.ndarray]
    trials: int
    importance: np.ndarray
    #: (P, 2) bootstrap interval of the importance.
    interval: np.ndarray
    #: (P,) the null's threshold; NaN when the null was not computed.
    null_high: np.ndarray
    #: Per parameter, the partial dependence per knot or level and its (K, 2) band.
    response: list[np.ndarray]
    band: list[np.ndarray]
    #: (P,) range of the response over the knots or levels that hold a trial, and its
    #: (P, 2) interval.
    effect: np.ndarray
    effect_interval: np.ndarray

    @property
    def significant(self) -> np.ndarray:
        with np.errstate(invalid="ignore"):
            return self.importance > self.null_high


def estimate(
    frame: pd.DataFrame, y: pd.Series, scales: dict[str, Scale], null: bool = True,
    seed: int = 0,
) -> Marginals:
    """Fit, bootstrap and (with ``null``) permute; ``frame`` holds one row per
    configuration with a column per parameter of ``scales``, ``y`` its score."""
    params = list(scales)
    values = np.asarray(y, dtype=float)
    n = len(values)
    knots = n_bins(n, len(params))
    binnings = [make_knots(frame[p], scales[p], knots) for p in params]
    bases = [b.design(frame[p]) for b, p in zip(binnings, params, strict=True)]
    design = surrogate.Design(
        index=np.stack([index for index, _ in bases], axis=1),
        weight=np.stack([weight for _, weight in bases], axis=1),
        sizes=[b.size for b in binnings],
        piecewise=[b.kind == "knots" for b in binnings],
    )
    counts = [np.bincount(b.assign(frame[p]), minlength=b.size)
              for b, p in zip(binnings, params, strict=True)]
    rng = np.random.default_rng(seed)

    point = surrogate.fit(design, values)
    weights = rng.multinomial(n, np.full(n, 1.0 / n), size=BOOTSTRAP).astype(float)
    # At the observed fit's smoothing: cross-validation on a resample counts each repeated
    # trial as its own check and would choose too little smoothing.
    boot = surrogate.fit(design, values, weights, smoothing=int(point.smoothing[0]))
    null_high = np.full(len(params), np.nan)
    if null:
        shuffles = permutations(len(params))
        # The k-th largest importance under the null: exceeding it gives a permutation
        # p-value (1 + #null >= observed) / (M + 1) of at most ALPHA / P.
        k = math.floor(ALPHA / len(params) * (shuffles + 1))
        for i in range(len(params)):
            null_high[i] = max(np.sort(draws)[::-1][k - 1] for draws in
                               _null_importances(design, values, i, shuffles, rng))

    response, band, effect, effect_interval = [], [], [], []
    for i in range(len(params)):
        curve = point.partial_dependence(i)[0]
        replicates = boot.partial_dependence(i)
        low, high = np.percentile(replicates, [2.5, 97.5], axis=0)
        response.append(curve)
        band.append(np.stack([low, high], axis=1))
        supported = counts[i] > 0
        effect.append(np.ptp(curve[supported]))
        effect_interval.append(np.percentile(np.ptp(replicates[:, supported], axis=1),
                                             [2.5, 97.5]))
    importance = point.importance[0]
    low, high = np.percentile(boot.importance, [2.5, 97.5], axis=0)
    return Marginals(
        params, binnings, counts, n, importance, _reaching(low, high, importance), null_high,
        response, band, np.array(effect),
        _reaching(*np.array(effect_interval).T, np.array(effect)),
    )


def _reaching(low: np.ndarray, high: np.ndarray, estimate: np.ndarray) -> np.ndarray:
    """(P, 2) percentile interval widened, where it misses it, to reach the estimate."""
    return np.stack([np.minimum(low, estimate), np.maximum(high, estimate)], axis=1)


def _null_importances(
    design: surrogate.Design, values: np.ndarray, p: int, shuffles: int,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """Parameter ``p``'s importance over ``shuffles`` draws from two nulls that it has no
    effect; a parameter is flagged only when it beats both.

    - Freedman and Lane's permutation of residuals (Anderson and Legendre, 1999; Winkler
      et al., 2014): the model without ``p`` is fitted, its residuals are shuffled across
      trials and added back to its predictions, and the whole model, ``p`` included, is
      fitted to each such metric. It keeps ``p``'s correlation with the other
      parameters, which a multivariate TPE search builds up.
    - ``p``'s own column shuffled across trials, the others kept: exact when ``p`` was
      drawn independently of them, but with correlated parameters a ``p`` without effect
      borrows part of a correlated parameter's effect in the observed fit and none under
      this null (measured: 35% of planted studies flagged such a parameter at a
      correlation of 0.89, none with Freedman and Lane).
    Freedman and Lane's residuals have lost the degrees of freedom of the fit without
    ``p``, which makes that null slightly liberal in the smallest studies (7.5% of pure
    noise studies of 12 trials and 3 parameters flagged, against 5%); the column's
    null holds its level there.
    """
    n = len(values)
    reduced = surrogate.fit(design.without(p), values).fitted[0]
    residuals = values - reduced
    orders = rng.permuted(np.tile(np.arange(n), (shuffles, 1)), axis=1)
    refits = surrogate.fit_responses(design, reduced[None, :] + residuals[orders])
    orders = rng.permuted(np.tile(np.arange(n), (shuffles, 1)), axis=1)
    shuffled = surrogate.fit_shuffled(design, values, p, orders)
    return refits.importance[:, p], shuffled.importance[:, p]


def importance_table(method: str, budget: float, marginals: Marginals) -> pd.DataFrame:
    """Rows of importance.csv, most important first."""
    table = pd.DataFrame({
        "method": method,
        "param": marginals.params,
        "importance": marginals.importance,
        "low": marginals.interval[:, 0],
        "high": marginals.interval[:, 1],
        "null_high": marginals.null_high,
        "significant": np.where(marginals.significant, "true", "false"),
        "evaluator": EVALUATOR,
        "budget": budget,
    }, columns=IMPORTANCE_COLUMNS)
    return table.sort_values("importance", ascending=False, kind="stable",
                             ignore_index=True)
