"""Losses against independent NumPy versions of the source formulas and closed forms."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from trainables.losses import info_nce, nt_xent


def nt_xent_reference(z1: np.ndarray, z2: np.ndarray, tau: float) -> float:
    """Algorithm 1 of ../shared/seeds/001 written literally: interleave the views as
    x_{2k-1}, x_{2k}, loop over pairs, average l(2k-1, 2k) + l(2k, 2k-1) over 2N."""
    n = z1.shape[0]
    z = np.empty((2 * n, z1.shape[1]))
    z[0::2], z[1::2] = z1, z2
    s = np.array([[a @ b / (np.linalg.norm(a) * np.linalg.norm(b)) for b in z] for a in z])

    def ell(i: int, j: int) -> float:
        denominator = sum(math.exp(s[i, k] / tau) for k in range(2 * n) if k != i)
        return -math.log(math.exp(s[i, j] / tau) / denominator)

    return sum(ell(2 * k, 2 * k + 1) + ell(2 * k + 1, 2 * k) for k in range(n)) / (2 * n)


def info_nce_reference(q: np.ndarray, k: np.ndarray, queue: np.ndarray, tau: float) -> float:
    """L_q = -log exp(q.k+/t) / sum_{i=0..K} exp(q.k_i/t), averaged over queries."""
    unit = lambda v: v / np.linalg.norm(v)  # noqa: E731
    losses = []
    for qi, ki in zip(q, k, strict=True):
        qi, ki = unit(qi), unit(ki)
        keys = [ki] + [unit(neg) for neg in queue]
        logits = [qi @ key / tau for key in keys]
        losses.append(-math.log(math.exp(logits[0]) / sum(math.exp(v) for v in logits)))
    return float(np.mean(losses))


@pytest.mark.parametrize("n,d,tau", [(1, 3, 0.5), (3, 4, 0.5), (5, 8, 0.1), (4, 2, 1.0)])
def test_nt_xent_matches_algorithm_1(n: int, d: int, tau: float) -> None:
    rng = np.random.default_rng(n * 10 + d)
    z1, z2 = rng.normal(size=(n, d)), rng.normal(size=(n, d))
    got = nt_xent(torch.tensor(z1), torch.tensor(z2), tau).item()
    assert got == pytest.approx(nt_xent_reference(z1, z2, tau), rel=1e-9)


@pytest.mark.parametrize("n", [1, 2, 7])
@pytest.mark.parametrize("tau", [0.01, 0.5, 3.0])
def test_nt_xent_identical_projections_is_log_2n_minus_1(n: int, tau: float) -> None:
    z = torch.ones(n, 5)
    expected = math.log(2 * n - 1) if n > 1 else 0.0
    assert nt_xent(z, z.clone(), tau).item() == pytest.approx(expected, abs=1e-6)


def test_nt_xent_is_scale_invariant_and_symmetric() -> None:
    z1, z2 = torch.randn(6, 4), torch.randn(6, 4)
    base = nt_xent(z1, z2, 0.3)
    assert nt_xent(10 * z1, 0.1 * z2, 0.3).item() == pytest.approx(base.item(), rel=1e-5)
    assert nt_xent(z2, z1, 0.3).item() == pytest.approx(base.item(), rel=1e-5)


def test_nt_xent_perfect_alignment_closed_form() -> None:
    """Pairs identical, different pairs orthogonal: each anchor sees its positive at s=1
    and 2N-2 others at s=0, so l = -log(e^{1/t} / (e^{1/t} + 2N - 2))."""
    n, tau = 4, 0.2
    z = torch.eye(n)
    expected = -math.log(math.exp(1 / tau) / (math.exp(1 / tau) + 2 * n - 2))
    assert nt_xent(z, z.clone(), tau).item() == pytest.approx(expected, rel=1e-6)


def test_nt_xent_finite_with_gradients_at_tiny_temperature() -> None:
    z1 = torch.randn(16, 8, requires_grad=True)
    z2 = torch.randn(16, 8, requires_grad=True)
    loss = nt_xent(z1, z2, 0.001)
    loss.backward()
    assert torch.isfinite(loss)
    assert torch.isfinite(z1.grad).all() and torch.isfinite(z2.grad).all()


@pytest.mark.parametrize("k_size,tau", [(1, 0.5), (5, 0.2), (12, 0.07)])
def test_info_nce_matches_reference(k_size: int, tau: float) -> None:
    rng = np.random.default_rng(k_size)
    q, k = rng.normal(size=(4, 6)), rng.normal(size=(4, 6))
    queue = rng.normal(size=(k_size, 6))
    got = info_nce(torch.tensor(q), torch.tensor(k), torch.tensor(queue), tau).item()
    assert got == pytest.approx(info_nce_reference(q, k, queue, tau), rel=1e-9)


def test_info_nce_closed_form_orthogonal_queue() -> None:
    """k = q and every negative orthogonal to q: loss = log(1 + K e^{-1/t})."""
    tau, size = 0.1, 6
    q = torch.tensor([[1.0, 0.0, 0.0, 0.0]], dtype=torch.float64)
    queue = torch.tensor([[0.0, 1.0, 0.0, 0.0]] * size, dtype=torch.float64)
    expected = math.log(1 + size * math.exp(-1 / tau))
    assert info_nce(q, q.clone(), queue, tau).item() == pytest.approx(expected, rel=1e-6)


def test_info_nce_finite_at_tiny_temperature() -> None:
    loss = info_nce(torch.randn(8, 4), torch.randn(8, 4), torch.randn(32, 4), 0.001)
    assert torch.isfinite(loss)


@pytest.mark.parametrize(
    "call",
    [
        lambda: nt_xent(torch.randn(3, 4), torch.randn(4, 4), 0.5),
        lambda: nt_xent(torch.randn(3, 4), torch.randn(3, 4), 0.0),
        lambda: nt_xent(torch.randn(3), torch.randn(3), 0.5),
        lambda: info_nce(torch.randn(3, 4), torch.randn(3, 4), torch.randn(5, 3), 0.5),
        lambda: info_nce(torch.randn(3, 4), torch.randn(2, 4), torch.randn(5, 4), 0.5),
        lambda: info_nce(torch.randn(3, 4), torch.randn(3, 4), torch.randn(5, 4), -1.0),
    ],
)
def test_losses_reject_bad_arguments(call) -> None:
    with pytest.raises(ValueError):
        call()
