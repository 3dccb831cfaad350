"""Self-supervised losses as pure functions on tensors.

Every loss is written in the log-softmax / cross-entropy form: computing ``exp`` and then
``log`` overflows for temperatures around 0.01, while ``cross_entropy`` subtracts the row
maximum first and stays finite. Labels are always built from the actual batch, never
from a configured batch size, so a last partial batch is handled correctly.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def _check_temperature(temperature: float) -> None:
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")


def nt_xent(z1: Tensor, z2: Tensor, temperature: float) -> Tensor:
    """SimCLR's normalised temperature-scaled cross entropy (NT-Xent).

    Source: ../shared/seeds/001_a60f3e13f8331ac6.txt, Algorithm 1. For the 2N projections
    ``s_ij`` is the cosine similarity and
    ``l(i, j) = -log exp(s_ij / t) / sum_{k != i} exp(s_ik / t)``; the loss is the mean of
    ``l(2k-1, 2k) + l(2k, 2k-1)`` over the 2N anchors. The positive stays in the
    denominator, which runs over the 2N - 1 samples other than the anchor.

    Args:
        z1: (N, D) projections of the first views.
        z2: (N, D) projections of the second views; row i pairs with row i of ``z1``.
        temperature: tau > 0.
    """
    if z1.ndim != 2 or z1.shape != z2.shape:
        raise ValueError(f"z1 and z2 must be (N, D) of equal shape, got {tuple(z1.shape)} "
                         f"and {tuple(z2.shape)}")
    _check_temperature(temperature)
    n = z1.shape[0]
    z = F.normalize(torch.cat([z1, z2]), dim=1)
    logits = (z @ z.T) / temperature
    self_mask = torch.eye(2 * n, dtype=torch.bool, device=z.device)
    logits = logits.masked_fill(self_mask, float("-inf"))
    idx = torch.arange(n, device=z.device)
    positives = torch.cat([idx + n, idx])
    return F.cross_entropy(logits, positives)


def info_nce(q: Tensor, k: Tensor, queue: Tensor, temperature: float) -> Tensor:
    """MoCo's InfoNCE over a dictionary of keys.

    Source: ../shared/seeds/001_a60f3e13f8331ac6.txt, "Loss Function":
    ``L_q = -log exp(q.k+ / t) / sum_{i=0..K} exp(q.k_i / t)``, where the sum runs over the
    positive key and the K negatives of the queue. The positive is class 0 of a
    (K + 1)-way softmax; the result is the mean over the N queries.

    Args:
        q: (N, D) queries.
        k: (N, D) positive keys; row i is the positive of query i.
        queue: (K, D) negative keys.
        temperature: tau > 0.
    """
    if q.ndim != 2 or q.shape != k.shape:
        raise ValueError(f"q and k must be (N, D) of equal shape, got {tuple(q.shape)} "
                         f"and {tuple(k.shape)}")
    if queue.ndim != 2 or queue.shape[1] != q.shape[1]:
        raise ValueError(f"queue must be (K, {q.shape[1]}), got {tuple(queue.shape)}")
    _check_temperature(temperature)
    q = F.normalize(q, dim=1)
    k = F.normalize(k, dim=1)
    queue = F.normalize(queue, dim=1)
    positive = (q * k).sum(dim=1, keepdim=True)
    negatives = q @ queue.T
    logits = torch.cat([positive, negatives], dim=1) / temperature
    labels = torch.zeros(q.shape[0], dtype=torch.long, device=q.device)
    return F.cross_entropy(logits, labels)
