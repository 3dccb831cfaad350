"""CPC, spatial contrasting, triplet and Deep InfoMax losses against literal NumPy
versions of the sources' formulas, and against closed forms."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from trainables.heads import reverse_gradient
from trainables.losses import (
    cpc_info_nce,
    discriminator_loss,
    infomax_bound,
    semi_hard_negatives,
    spatial_contrasting,
    triplet_margin,
)


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v)


def cpc_reference(pred: np.ndarray, cand: np.ndarray, targets: np.ndarray, tau: float) -> float:
    """-log exp(q.k+/t) / sum_i exp(q.k_i/t) per prediction, on unit vectors, averaged."""
    losses = []
    for q, target in zip(pred, targets, strict=True):
        logits = [_unit(q) @ _unit(k) / tau for k in cand]
        losses.append(-math.log(math.exp(logits[target]) / sum(math.exp(v) for v in logits)))
    return float(np.mean(losses))


def sc_reference(f1: np.ndarray, f2: np.ndarray, tau: float) -> float:
    """Eq. 2 of ../shared/seeds/002 written out: the anchor f_i^(1) against every f_j^(2)."""
    n = len(f1)
    total = 0.0
    for i in range(n):
        numerator = math.exp(-np.linalg.norm(f1[i] - f2[i]) / tau)
        denominator = sum(math.exp(-np.linalg.norm(f1[i] - f2[j]) / tau) for j in range(n))
        total += math.log(numerator / denominator)
    return -total / n


def infomax_reference(scores: np.ndarray, estimator: str) -> float:
    """The three bounds by explicit enumeration of joint and marginal pairs (image n's
    own index is n)."""
    n, m, locations = scores.shape
    joint = [scores[i, i, loc] for i in range(n) for loc in range(locations)]
    marginal = [scores[i, j, loc] for i in range(n) for j in range(m) if j != i
                for loc in range(locations)]
    softplus = lambda x: math.log1p(math.exp(x))  # noqa: E731
    if estimator == "jsd":
        return np.mean([-softplus(-t) for t in joint]) - np.mean([softplus(t) for t in marginal])
    if estimator == "dv":
        return np.mean(joint) - math.log(np.mean([math.exp(t) for t in marginal]))
    terms = []
    for i in range(n):
        negatives = [scores[i, j, loc] for j in range(m) if j != i for loc in range(locations)]
        for loc in range(locations):
            positive = scores[i, i, loc]
            terms.append(positive - math.log(math.exp(positive)
                                             + sum(math.exp(t) for t in negatives)))
    return float(np.mean(terms))


@pytest.mark.parametrize("p,m,d,tau", [(1, 1, 3, 0.5), (4, 6, 3, 0.1), (7, 5, 8, 1.0)])
def test_cpc_matches_the_info_nce_formula(p: int, m: int, d: int, tau: float) -> None:
    rng = np.random.default_rng(p + m)
    pred, cand = rng.normal(size=(p, d)), rng.normal(size=(m, d))
    targets = rng.integers(0, m, size=p)
    got = cpc_info_nce(torch.tensor(pred), torch.tensor(cand), torch.tensor(targets), tau)
    assert got.item() == pytest.approx(cpc_reference(pred, cand, targets, tau), rel=1e-9)


def test_cpc_with_indistinguishable_candidates_is_log_m() -> None:
    cand = torch.ones(9, 4)
    loss = cpc_info_nce(torch.randn(5, 4), cand, torch.zeros(5, dtype=torch.long), 0.05)
    assert loss.item() == pytest.approx(math.log(9), abs=1e-6)


def test_cpc_stays_finite_at_tiny_temperature() -> None:
    loss = cpc_info_nce(torch.randn(6, 4), torch.randn(8, 4), torch.arange(6), 1e-3)
    assert torch.isfinite(loss)


@pytest.mark.parametrize("n,d,tau", [(1, 2, 1.0), (3, 4, 1.0), (6, 5, 0.3), (4, 3, 2.5)])
def test_spatial_contrasting_matches_eq_2(n: int, d: int, tau: float) -> None:
    rng = np.random.default_rng(n * d)
    f1, f2 = rng.normal(size=(n, d)), rng.normal(size=(n, d))
    got = spatial_contrasting(torch.tensor(f1), torch.tensor(f2), torch.arange(n), tau)
    assert got.item() == pytest.approx(sc_reference(f1, f2, tau), rel=1e-9)


def test_spatial_contrasting_of_two_images_is_eq_1() -> None:
    """With N = 2 each term of eq. 2 is eq. 1's two-way softmax between the positive and
    the other image's patch."""
    f = torch.randn(2, 2, 4, dtype=torch.float64)  # image, patch, feature
    got = spatial_contrasting(f[:, 0], f[:, 1], torch.arange(2))
    d = lambda a, b: torch.linalg.norm(a - b)  # noqa: E731
    eq1 = [-torch.log(torch.exp(-d(f[i, 0], f[i, 1]))
                      / (torch.exp(-d(f[i, 0], f[i, 1])) + torch.exp(-d(f[i, 0], f[1 - i, 1]))))
           for i in range(2)]
    assert got.item() == pytest.approx(float(sum(eq1) / 2), rel=1e-9)


def test_spatial_contrasting_of_identical_features_is_log_n_with_finite_gradient() -> None:
    f = torch.ones(5, 3, requires_grad=True)
    loss = spatial_contrasting(f, f, torch.arange(5))
    loss.backward()
    assert loss.item() == pytest.approx(math.log(5), abs=1e-6)
    assert torch.isfinite(f.grad).all()


def test_triplet_margin_matches_the_hinge_formula() -> None:
    rng = np.random.default_rng(0)
    a, p, n = (rng.normal(size=(6, 4)) for _ in range(3))
    for distance, dist in (("euclidean", lambda x, y: np.linalg.norm(x - y)),
                           ("cosine", lambda x, y: 1 - _unit(x) @ _unit(y))):
        expected = np.mean([max(0.0, dist(a[i], p[i]) - dist(a[i], n[i]) + 0.3)
                            for i in range(6)])
        got = triplet_margin(torch.tensor(a), torch.tensor(p), torch.tensor(n), 0.3, distance)
        assert got.item() == pytest.approx(expected, rel=1e-9), distance


def test_triplet_margin_closed_forms() -> None:
    a = torch.randn(4, 3)
    # Cosine: positive identical (d = 0), negative opposite (d = 2).
    assert triplet_margin(a, a, -a, 0.5, "cosine").item() == pytest.approx(0.0, abs=1e-6)
    assert triplet_margin(a, a, -a, 2.5, "cosine").item() == pytest.approx(0.5, abs=1e-6)
    # Negative equal to the positive: the loss is exactly the margin.
    p = torch.randn(4, 3)
    assert triplet_margin(a, p, p, 0.7, "euclidean").item() == pytest.approx(0.7, abs=1e-6)


def test_semi_hard_negative_is_the_closest_farther_than_the_positive() -> None:
    anchors = torch.tensor([[0.0], [10.0]])
    # Candidate distances from anchor 0: 1 (own positive), 0.5, 3, 2; from anchor 1 the
    # own positive is index 1 at distance 0.5 and every other candidate is farther.
    candidates = torch.tensor([[1.0], [9.5], [3.0], [2.0]])
    chosen = semi_hard_negatives(anchors, candidates, torch.tensor([0, 1]), "euclidean")
    assert chosen.tolist() == [3, 2]
    # Nothing farther than the positive: fall back to the farthest other candidate.
    chosen = semi_hard_negatives(torch.tensor([[0.0]]), torch.tensor([[5.0], [1.0], [2.0]]),
                                 torch.tensor([0]), "euclidean")
    assert chosen.tolist() == [2]


@pytest.mark.parametrize("estimator", ["jsd", "dv", "infonce"])
@pytest.mark.parametrize("shape", [(2, 2, 1), (3, 3, 4), (5, 5, 2)])
def test_infomax_bounds_match_their_definitions(estimator: str, shape) -> None:
    rng = np.random.default_rng(sum(shape))
    scores = rng.normal(size=shape) * 2
    got = infomax_bound(torch.tensor(scores), torch.arange(shape[0]), estimator).item()
    assert got == pytest.approx(infomax_reference(scores, estimator), rel=1e-9)


def test_infomax_bounds_of_uninformative_critic() -> None:
    """A constant critic c carries no information: DV is exactly 0, JSD is
    -softplus(-c) - softplus(c), InfoNCE is -log(1 + number of negatives)."""
    n, locations, c = 4, 3, 0.7
    scores = torch.full((n, n, locations), c, dtype=torch.float64)
    own = torch.arange(n)
    softplus = lambda x: math.log1p(math.exp(x))  # noqa: E731
    assert infomax_bound(scores, own, "dv").item() == pytest.approx(0.0, abs=1e-12)
    assert infomax_bound(scores, own, "jsd").item() == pytest.approx(
        -softplus(-c) - softplus(c), rel=1e-12)
    assert infomax_bound(scores, own, "infonce").item() == pytest.approx(
        -math.log(1 + (n - 1) * locations), rel=1e-12)


def test_infomax_bounds_grow_when_joint_scores_separate() -> None:
    scores = torch.zeros(4, 4, 2, dtype=torch.float64)
    informative = scores.clone()
    informative[torch.arange(4), torch.arange(4)] = 5.0
    for estimator in ("jsd", "dv", "infonce"):
        assert (infomax_bound(informative, torch.arange(4), estimator)
                > infomax_bound(scores, torch.arange(4), estimator)), estimator


def test_infomax_uses_the_given_positive_index() -> None:
    scores = torch.randn(2, 4, 3, dtype=torch.float64)
    moved = scores[:, [2, 3, 0, 1]]
    for estimator in ("jsd", "dv", "infonce"):
        assert infomax_bound(scores, torch.tensor([0, 1]), estimator).item() == pytest.approx(
            infomax_bound(moved, torch.tensor([2, 3]), estimator).item(), rel=1e-12)


def test_discriminator_loss_at_chance_is_2_log_2() -> None:
    zeros = torch.zeros(6, 1)
    assert discriminator_loss(zeros, zeros).item() == pytest.approx(2 * math.log(2), rel=1e-6)


def test_reverse_gradient_negates_only_the_backward_pass() -> None:
    x = torch.randn(3, requires_grad=True)
    y = reverse_gradient(x)
    torch.testing.assert_close(y, x)
    (2 * y).sum().backward()
    torch.testing.assert_close(x.grad, torch.full((3,), -2.0))


@pytest.mark.parametrize("bad", [
    lambda: cpc_info_nce(torch.randn(2, 3), torch.randn(4, 2), torch.zeros(2, dtype=torch.long),
                         0.1),
    lambda: cpc_info_nce(torch.randn(2, 3), torch.randn(4, 3), torch.zeros(3, dtype=torch.long),
                         0.1),
    lambda: spatial_contrasting(torch.randn(2, 3), torch.randn(2, 3), torch.arange(2), 0.0),
    lambda: triplet_margin(torch.randn(2, 3), torch.randn(2, 3), torch.randn(2, 3), -1.0,
                           "cosine"),
    lambda: triplet_margin(torch.randn(2, 3), torch.randn(2, 3), torch.randn(2, 3), 1.0, "l1"),
    lambda: infomax_bound(torch.randn(2, 2), torch.arange(2), "jsd"),
    lambda: infomax_bound(torch.randn(2, 1, 3), torch.arange(2), "jsd"),
    lambda: infomax_bound(torch.randn(2, 2, 3), torch.arange(2), "mine"),
])
def test_invalid_arguments_are_refused(bad) -> None:
    with pytest.raises(ValueError):
        bad()
