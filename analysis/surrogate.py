"""The surrogate model behind importance and response curves, refit hundreds of times at
once.

The metric is modelled as a sum of main effects, one per parameter, on the parameter's
search scale (:mod:`analysis.scales`):

    y = mean + f_1(x_1) + ... + f_P(x_P) + rest

where f_p is piecewise linear between equally spaced knots of a continuous parameter
(so a linear trend is fitted exactly, and a curve is smooth enough to read), or one
value per level of a categorical one. The knot and level values are fitted by weighted
penalised least squares (:func:`_penalty`: a ridge on levels, a smoothness penalty on
knots).

This is a functional ANOVA (fANOVA) of main effects: under a uniform design, the
least-squares additive fit estimates each parameter's marginal E[y | x_p], and its
variance over the search space (uniform on the search scale, every level equally
likely) is the parameter's main-effect variance. Interactions and seed noise are left in
``rest``, whose variance is estimated from the residuals with the fit's effective degrees
of freedom removed. A parameter's importance is its main-effect variance over the total
(all main effects plus ``rest``): the share of the metric's variance it explains on its
own. It is not renormalised to sum to 1, so pure noise gives every parameter a small
share rather than handing one the lead.

Why not a random forest (Optuna's fANOVA) or another scikit-learn model: the intervals
and the permutation null need one refit per bootstrap sample and per permutation, a
thousand or more per method and budget. One forest costs milliseconds to fit in
scikit-learn, which is minutes here; the additive model is a linear system of at most
~60 unknowns, and every replicate's system is assembled with ``np.bincount`` and solved
in one batched NumPy call. The price: interactions are not modelled (they count as
``rest``), and a design far from uniform (a search concentrated by TPE) is read through
the least-squares projection rather than integrated over the whole space. On uniform
designs it agrees with Optuna's ``FanovaImportanceEvaluator`` (tested).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

#: Ridge penalty on each level value, in trials: a level seen by k trials is shrunk by
#: k / (k + RIDGE) towards the mean, and one no trial has stays at the mean.
RIDGE = 1.0
#: Knots get a small ridge (only to pin an effect's constant, which the knots of every
#: parameter share with the mean) and a penalty on their second differences: a linear
#: trend is not penalised, wiggles between neighbouring knots are, as in a P-spline
#: (Eilers and Marx, 1996). Without it a noisy knot near the edge of the range would
#: carry as much weight as the whole trend.
KNOT_RIDGE = 0.1
#: Second-difference penalties tried; each fit keeps the one generalised
#: cross-validation prefers: little smoothing where trials are dense, more where they
#: are sparse.
SMOOTHING = (0.01, 0.1, 1.0, 10.0)
#: Bincount entries per batch of replicates (memory: 16 bytes each).
_BATCH_CELLS = 4_000_000


@dataclass(frozen=True)
class Design:
    """The trials on the surrogate's basis: each parameter loads on two of its knots or
    levels (a level loads 1 on itself and 0 on a second copy)."""

    #: (n, P, 2) indices within each parameter's knots or levels, and their weights.
    index: np.ndarray
    weight: np.ndarray
    #: Knots or levels per parameter, and whether each parameter is piecewise linear.
    sizes: list[int]
    piecewise: list[bool]

    @property
    def offsets(self) -> np.ndarray:
        return np.concatenate([[0], np.cumsum(self.sizes)[:-1]]).astype(np.int64)

    @property
    def width(self) -> int:
        return int(np.sum(self.sizes))

    @cached_property
    def penalties(self) -> list[np.ndarray]:
        """The penalty matrix at each smoothing of :data:`SMOOTHING` (just one when no
        parameter has knots)."""
        return [_penalty(self, smooth)
                for smooth in (SMOOTHING if any(self.piecewise) else SMOOTHING[:1])]

    def columns(self) -> np.ndarray:
        """(n, P, 2) columns of the full coefficient vector."""
        return self.index + self.offsets[None, :, None]

    def without(self, p: int) -> Design:
        """The same trials on the basis of every parameter but ``p``."""
        keep = [q for q in range(len(self.sizes)) if q != p]
        return Design(self.index[:, keep], self.weight[:, keep],
                      [self.sizes[q] for q in keep], [self.piecewise[q] for q in keep])


@dataclass(frozen=True)
class Fits:
    """R fits of the additive model (one per weighting or shuffling of the trials, or one
    per metric given for them)."""

    #: Per parameter, (R, K_p) knot or level values, centred over the search space.
    effects: list[np.ndarray]
    piecewise: list[bool]
    #: (R,) weighted mean of the metric.
    mean: np.ndarray
    #: (R,) variance the main effects leave unexplained (interactions and noise).
    rest: np.ndarray
    #: Per parameter, (R,) weighted mean over the trials of the other parameters' effects.
    others: list[np.ndarray]
    #: (R,) index into :data:`SMOOTHING` of the smoothing each fit used.
    smoothing: np.ndarray
    #: (R, n) the model's prediction for every trial.
    fitted: np.ndarray

    @property
    def variances(self) -> np.ndarray:
        """(R, P) main-effect variance of each parameter over the search space: for a
        piecewise-linear effect, the integral of its square between the knots."""
        return np.stack([_domain_moments(f, p)[1] for f, p in
                         zip(self.effects, self.piecewise, strict=True)], axis=1)

    @property
    def importance(self) -> np.ndarray:
        """(R, P) share of the total variance each parameter's main effect explains."""
        variances = self.variances
        total = variances.sum(axis=1) + self.rest
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(total[:, None] > 0, variances / total[:, None], 0.0)

    def partial_dependence(self, p: int) -> np.ndarray:
        """(R, K_p) the model's mean prediction with parameter ``p`` set to each knot or
        level and the others as the trials had them: the marginal response to ``p``."""
        return self.mean[:, None] + self.others[p][:, None] + self.effects[p]


def _domain_moments(values: np.ndarray, piecewise: bool) -> tuple[np.ndarray, np.ndarray]:
    """Mean and variance over the search space of effects given by their (R, K) knot or
    level values: levels equally likely; between knots, linear interpolation under a
    uniform measure."""
    if not piecewise:
        return values.mean(axis=1), values.var(axis=1)
    a, b = values[:, :-1], values[:, 1:]
    mean = ((a + b) / 2).mean(axis=1)
    square = ((a * a + a * b + b * b) / 3).mean(axis=1)
    return mean, square - mean**2


def fit(
    design: Design, y: np.ndarray, weights: np.ndarray | None = None,
    smoothing: int | None = None,
) -> Fits:
    """Fit the model once per row of ``weights`` (R, n): non-negative trial weights such
    as bootstrap counts; one unweighted fit without them. Each fit chooses its smoothing
    by generalised cross-validation, unless ``smoothing`` (an index into
    :data:`SMOOTHING`) fixes it."""
    n = len(y)
    if weights is None:
        weights = np.ones((1, n))
    entries = 2 * len(design.sizes)
    step = max(1, _BATCH_CELLS // max(1, n * entries * entries))
    return _concat([_weighted(design, y, weights[s:s + step], smoothing)
                    for s in range(0, len(weights), step)], design)


def fit_responses(design: Design, responses: np.ndarray) -> Fits:
    """Fit the model once per row of ``responses`` (R, n): other metric values for the
    same trials (a permutation test's), each fit choosing its smoothing as :func:`fit`
    does. The trials' basis, and so the left-hand side of the normal equations, is
    shared: only the right-hand side is assembled per row."""
    n = responses.shape[1]
    step = max(1, _BATCH_CELLS // max(1, n * 2 * len(design.sizes)))
    return _concat([_responses(design, responses[s:s + step])
                    for s in range(0, len(responses), step)], design)


def fit_shuffled(design: Design, y: np.ndarray, p: int, orders: np.ndarray) -> Fits:
    """Fit the model once per row of ``orders`` (R, n): parameter ``p``'s values taken
    from the trials in that order (a permutation), the other parameters kept.

    Only the blocks of the normal equations that pair ``p`` with another parameter, and
    ``p``'s block of the right-hand side, change; the rest is assembled once.
    """
    n = len(y)
    step = max(1, _BATCH_CELLS // max(1, n * 8 * len(design.sizes)))
    return _concat([_shuffled(design, y, p, orders[s:s + step])
                    for s in range(0, len(orders), step)], design)


def _concat(parts: list[Fits], design: Design) -> Fits:
    count = len(design.sizes)
    return Fits(
        effects=[np.concatenate([part.effects[p] for part in parts]) for p in range(count)],
        piecewise=design.piecewise,
        mean=np.concatenate([part.mean for part in parts]),
        rest=np.concatenate([part.rest for part in parts]),
        others=[np.concatenate([part.others[p] for part in parts]) for p in range(count)],
        smoothing=np.concatenate([part.smoothing for part in parts]),
        fitted=np.concatenate([part.fitted for part in parts]),
    )


def _penalty(design: Design, smooth: float) -> np.ndarray:
    """The (D, D) penalty matrix: :data:`RIDGE` on each level, :data:`KNOT_RIDGE` on each
    knot plus ``smooth`` on the squared second differences of neighbouring knots."""
    width = design.width
    penalty = np.zeros((width, width))
    for p, (size, piecewise) in enumerate(zip(design.sizes, design.piecewise, strict=True)):
        block = slice(design.offsets[p], design.offsets[p] + size)
        if piecewise:
            second = np.diff(np.eye(size), n=2, axis=0)
            penalty[block, block] = KNOT_RIDGE * np.eye(size) + smooth * second.T @ second
        else:
            penalty[block, block] = RIDGE * np.eye(size)
    return penalty


def _normal_equations(
    columns: np.ndarray, loads: np.ndarray, w: np.ndarray, centred: np.ndarray, width: int
) -> tuple[np.ndarray, np.ndarray]:
    """G = X' W X and b = X' W y for R replicates, by bincount: ``columns`` and
    ``loads`` (R or 1, n, E) give each trial's E nonzero entries of X."""
    replicates = w.shape[0]
    n, entries = columns.shape[-2:]
    columns = np.broadcast_to(columns, (replicates, n, entries))
    loads = np.broadcast_to(loads, (replicates, n, entries))
    base = np.arange(replicates, dtype=np.int64)[:, None, None, None] * width * width
    cells = base + columns[:, :, :, None] * width + columns[:, :, None, :]
    products = loads[:, :, :, None] * loads[:, :, None, :] * w[:, :, None, None]
    gram = np.bincount(cells.ravel(), weights=products.ravel(),
                       minlength=replicates * width * width)
    base = np.arange(replicates, dtype=np.int64)[:, None, None] * width
    rhs = np.bincount((base + columns).ravel(),
                      weights=(loads * (w * centred)[:, :, None]).ravel(),
                      minlength=replicates * width)
    return gram.reshape(replicates, width, width), rhs.reshape(replicates, width)


def _weighted(
    design: Design, y: np.ndarray, w: np.ndarray, smoothing: int | None
) -> Fits:
    n = len(y)
    columns = design.columns().reshape(1, n, -1)
    loads = design.weight.reshape(1, n, -1)
    mean = (w * y).sum(axis=1) / w.sum(axis=1)
    centred = y[None, :] - mean[:, None]
    gram, rhs = _normal_equations(columns, loads, w, centred, design.width)
    return _solve(design, gram, rhs, columns, loads, w, mean, centred, smoothing)


def _responses(design: Design, responses: np.ndarray) -> Fits:
    replicates, n = responses.shape
    columns = design.columns().reshape(1, n, -1)
    loads = design.weight.reshape(1, n, -1)
    ones = np.ones((replicates, n))
    mean = responses.mean(axis=1)
    centred = responses - mean[:, None]
    gram, _ = _normal_equations(columns, loads, ones[:1], centred[:1], design.width)
    base = np.arange(replicates, dtype=np.int64)[:, None, None] * design.width
    rhs = np.bincount((base + columns).ravel(),
                      weights=(loads * centred[:, :, None]).ravel(),
                      minlength=replicates * design.width).reshape(replicates, design.width)
    return _solve(design, np.repeat(gram, replicates, axis=0), rhs, columns, loads, ones,
                  mean, centred, None)


def _shuffled(design: Design, y: np.ndarray, p: int, orders: np.ndarray) -> Fits:
    replicates, n = orders.shape
    width = design.width
    ones = np.ones((1, n))
    centred1 = (y - y.mean())[None, :]
    columns = design.columns()  # (n, P, 2)
    gram, rhs = _normal_equations(columns.reshape(1, n, -1), design.weight.reshape(1, n, -1),
                                  ones, centred1, width)
    gram = np.repeat(gram, replicates, axis=0)
    rhs = np.repeat(rhs, replicates, axis=0)
    moved_columns = columns[orders, p, :]  # (R, n, 2)
    moved_loads = design.weight[orders, p, :]
    block = slice(design.offsets[p], design.offsets[p] + design.sizes[p])
    rows = np.arange(replicates, dtype=np.int64)[:, None, None, None] * width * width
    for q in range(len(design.sizes)):
        if q == p:
            continue
        cells = rows + moved_columns[:, :, :, None] * width + columns[None, :, q, None, :]
        products = moved_loads[:, :, :, None] * design.weight[None, :, q, None, :]
        cross = np.bincount(cells.ravel(), weights=products.ravel(),
                            minlength=replicates * width * width).reshape(
            replicates, width, width)
        others = slice(design.offsets[q], design.offsets[q] + design.sizes[q])
        gram[:, block, others] = cross[:, block, others]
        gram[:, others, block] = cross[:, block, others].transpose(0, 2, 1)
    base = np.arange(replicates, dtype=np.int64)[:, None, None] * width
    own = np.bincount((base + moved_columns).ravel(),
                      weights=(moved_loads * centred1[0][None, :, None]).ravel(),
                      minlength=replicates * width).reshape(replicates, width)
    rhs[:, block] = own[:, block]
    all_columns = np.repeat(columns[None], replicates, axis=0)
    all_columns[:, :, p, :] = moved_columns
    all_loads = np.repeat(design.weight[None], replicates, axis=0)
    all_loads[:, :, p, :] = moved_loads
    return _solve(design, gram, rhs, all_columns.reshape(replicates, n, -1),
                  all_loads.reshape(replicates, n, -1), np.broadcast_to(ones, (replicates, n)),
                  np.full(replicates, y.mean()), np.broadcast_to(centred1, (replicates, n)),
                  None)


def _solve(
    design: Design, gram: np.ndarray, rhs: np.ndarray, columns: np.ndarray,
    loads: np.ndarray, w: np.ndarray, mean: np.ndarray, centred: np.ndarray,
    smoothing: int | None,
) -> Fits:
    """Solve every replicate's penalised normal equations, at the smoothing of
    :data:`SMOOTHING` that minimises its generalised cross-validation score
    n RSS / (n - dof)^2 (chosen per replicate, so that a permutation null's replicates
    choose as the observed fit did), or at the one ``smoothing`` names."""
    replicates = gram.shape[0]
    n = w.shape[1]
    count = len(design.sizes)
    columns = np.broadcast_to(columns, (replicates, n, columns.shape[-1])).reshape(
        replicates, -1)
    loads = np.broadcast_to(loads, (replicates, n, loads.shape[-1]))
    total = w.sum(axis=1)
    # RSS(beta) = c'Wc - 2 beta'b + beta'G beta: no pass over the trials per smoothing.
    base = (w * centred**2).sum(axis=1)
    chosen = np.full(replicates, np.inf)
    beta = np.zeros_like(rhs)
    rss = np.zeros(replicates)
    dof = np.zeros(replicates)
    index = np.zeros(replicates, dtype=np.int64)
    tried = range(len(design.penalties)) if smoothing is None else [smoothing]
    for k in tried:
        penalty = design.penalties[k]
        inverse = np.linalg.inv(gram + penalty)
        candidate = np.einsum("rij,rj->ri", inverse, rhs)
        residual = np.maximum(base - 2 * np.einsum("ri,ri->r", candidate, rhs)
                              + np.einsum("ri,rij,rj->r", candidate, gram, candidate), 0.0)
        # Effective degrees of freedom: tr((G + L)^-1 G) = D - tr((G + L)^-1 L).
        freedom = design.width - np.einsum("rij,ji->r", inverse, penalty)
        score = total * residual / np.maximum(total - freedom, 1.0) ** 2
        better = score < chosen
        chosen = np.where(better, score, chosen)
        beta = np.where(better[:, None], candidate, beta)
        rss = np.where(better, residual, rss)
        dof = np.where(better, freedom, dof)
        index = np.where(better, k, index)
    entry = np.take_along_axis(beta, columns, axis=1)
    contribution = (entry.reshape(replicates, n, -1) * loads).reshape(
        replicates, n, count, 2).sum(axis=3)
    fitted = contribution.sum(axis=2)
    rest = rss / np.maximum(total - 1.0 - dof, 1.0)
    effects, others = [], []
    for p in range(count):
        values = beta[:, design.offsets[p]:design.offsets[p] + design.sizes[p]]
        centre = _domain_moments(values, design.piecewise[p])[0]
        effects.append(values - centre[:, None])
        # The others' effects averaged over the trials, plus p's own centring constant,
        # so that mean + others + centred effect is the partial dependence.
        without_p = ((fitted - contribution[:, :, p]) * w).sum(axis=1) / total
        others.append(without_p + centre)
    return Fits(effects, design.piecewise, mean, rest, others, index,
                mean[:, None] + fitted)
