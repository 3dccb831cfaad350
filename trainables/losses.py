"""Self-supervised losses as pure functions on tensors.

Every loss is written in the log-softmax / cross-entropy form: computing ``exp`` and then
``log`` overflows for temperatures around 0.01, while ``cross_entropy`` subtracts the row
maximum first and stays finite. Labels are always built from the actual batch, never
from a configured batch size, so a last partial batch is handled correctly.
"""

from __future__ import annotations

import math

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


def _check_indexed_candidates(
    queries: Tensor, candidates: Tensor, index: Tensor, names: tuple[str, str]
) -> None:
    """(N, D) queries, (M, D) candidates and one candidate index per query."""
    query_name, index_name = names
    if queries.ndim != 2 or candidates.ndim != 2 or queries.shape[1] != candidates.shape[1]:
        raise ValueError(f"{query_name} (N, D) and candidates (M, D) must share D, got "
                         f"{tuple(queries.shape)} and {tuple(candidates.shape)}")
    if index.shape != queries.shape[:1]:
        raise ValueError(f"{index_name} must be ({queries.shape[0]},), got {tuple(index.shape)}")


def cpc_info_nce(
    predictions: Tensor, candidates: Tensor, targets: Tensor, temperature: float
) -> Tensor:
    """CPC's InfoNCE: every prediction picks its true patch encoding among candidates.

    Source: ../shared/seeds/001_a60f3e13f8331ac6.txt, "Loss Function" (credited there to
    Contrastive Predictive Coding): ``-log exp(q.k+ / t) / sum_i exp(q.k_i / t)``, with q
    the prediction ``W_k c_{i,j}`` of the encoding of the patch k rows below and the k_i
    every patch encoding of the batch. Both sides are L2-normalised so that ``t`` is the
    only scale; the mean runs over predictions.

    Args:
        predictions: (P, D) predicted encodings.
        candidates: (M, D) patch encodings; the positives are among them.
        targets: (P,) index into ``candidates`` of each prediction's true patch.
        temperature: tau > 0.
    """
    _check_indexed_candidates(predictions, candidates, targets, ("predictions", "targets"))
    _check_temperature(temperature)
    logits = F.normalize(predictions, dim=1) @ F.normalize(candidates, dim=1).T
    return F.cross_entropy(logits / temperature, targets)


def euclidean_distances(a: Tensor, b: Tensor) -> Tensor:
    """(N, M) L2 distances between rows, with a finite gradient at distance zero (the
    square root's derivative is unbounded there, so the squared distance is floored at a
    negligible 1e-12)."""
    return (a[:, None, :] - b[None, :, :]).pow(2).sum(-1).clamp_min(1e-12).sqrt()


def spatial_contrasting(
    anchors: Tensor, candidates: Tensor, positives: Tensor, temperature: float = 1.0
) -> Tensor:
    """The spatial contrasting loss of ../shared/seeds/002_a5cbedfbf1372821.txt, eq. 2.

    ``L = -1/N sum_i log exp(-||f_i1 - f_i2|| / t) / sum_j exp(-||f_i1 - f_j2|| / t)``:
    a softmax over negative L2 distances from the first patch of image i to the second
    patch of every image j of the batch (j = i included), the positive being j = i. The
    paper has no temperature (t = 1 reproduces it); it is exposed because the scale of the
    distances decides how hard the softmax is.

    Args:
        anchors: (N, D) features of the first patches.
        candidates: (M, D) features of the second patches of the whole batch.
        positives: (N,) index into ``candidates`` of each anchor's own second patch.
        temperature: t > 0 dividing the distances.
    """
    _check_indexed_candidates(anchors, candidates, positives, ("anchors", "positives"))
    _check_temperature(temperature)
    return F.cross_entropy(-euclidean_distances(anchors, candidates) / temperature, positives)


TRIPLET_DISTANCES = ("cosine", "euclidean")


def distance_matrix(a: Tensor, b: Tensor, distance: str) -> Tensor:
    """(N, M) distances between rows: ``1 - cos`` or L2."""
    if distance == "cosine":
        return 1.0 - F.normalize(a, dim=1) @ F.normalize(b, dim=1).T
    if distance == "euclidean":
        return euclidean_distances(a, b)
    raise ValueError(f"distance: unknown {distance!r}; allowed: {', '.join(TRIPLET_DISTANCES)}")


def triplet_margin(
    anchors: Tensor, positives: Tensor, negatives: Tensor, margin: float, distance: str
) -> Tensor:
    """Mean hinge ``max(0, d(a, p) - d(a, n) + margin)`` over the triplets (rows)."""
    if not anchors.shape == positives.shape == negatives.shape or anchors.ndim != 2:
        raise ValueError(f"anchors, positives and negatives must be (N, D) of equal shape, got "
                         f"{tuple(anchors.shape)}, {tuple(positives.shape)}, "
                         f"{tuple(negatives.shape)}")
    if margin < 0:
        raise ValueError(f"margin must be >= 0, got {margin}")
    d_ap = distance_matrix(anchors, positives, distance).diagonal()
    d_an = distance_matrix(anchors, negatives, distance).diagonal()
    return F.relu(d_ap - d_an + margin).mean()


@torch.no_grad()
def semi_hard_negatives(
    anchors: Tensor, candidates: Tensor, positives: Tensor, distance: str
) -> Tensor:
    """Index of each anchor's semi-hard negative among ``candidates`` (FaceNet's mining):
    the closest candidate that is still farther than the anchor's positive
    (``candidates[positives[i]]``, never chosen as a negative). An anchor without such a
    candidate takes its farthest one, whose hinge is then usually inactive."""
    if candidates.shape[0] < 2:
        raise ValueError("semi-hard mining needs at least 2 candidates")
    d = distance_matrix(anchors, candidates, distance)
    rows = torch.arange(anchors.shape[0], device=d.device)
    d_ap = d[rows, positives].unsqueeze(1)
    own = torch.zeros_like(d, dtype=torch.bool)
    own[rows, positives] = True
    semi_hard = (d > d_ap) & ~own
    closest_farther = d.masked_fill(~semi_hard, float("inf")).argmin(dim=1)
    farthest = d.masked_fill(own, float("-inf")).argmax(dim=1)
    return torch.where(semi_hard.any(dim=1), closest_farther, farthest)


MI_ESTIMATORS = ("jsd", "dv", "infonce")


def infomax_bound(scores: Tensor, positives: Tensor, estimator: str) -> Tensor:
    """A lower bound on mutual information from critic scores, to be maximised.

    Source: ../shared/seeds/004_e6ad71d192551e5a.txt, section 2.2 (after Hjelm et al.,
    Deep InfoMax). ``scores[n, m, l] = T(C_l(x_m), E(x_n))`` scores local feature l of
    image m against the global vector of image n; pairs with ``m == positives[n]`` are
    drawn from the joint, the others from the product of marginals.

    - ``"dv"``: the Donsker-Varadhan representation the source names,
      ``E_joint[T] - log E_marginals[e^T]`` (the source prints it without the log, which
      is the looser f-divergence form; the log is Donsker-Varadhan's).
    - ``"jsd"``: DIM's Jensen-Shannon estimator,
      ``E_joint[-softplus(-T)] - E_marginals[softplus(T)]``.
    - ``"infonce"``: DIM's noise-contrastive form, the mean over joint pairs (n, l) of
      ``log e^{T_pos} / (e^{T_pos} + sum of e^{T} over every local feature of every other
      image scored against n)``.

    Args:
        scores: (N, M, L) critic scores; L = 1 for the global objective.
        positives: (N,) for each n, the index m of its own image.
        estimator: one of ``MI_ESTIMATORS``.
    """
    if scores.ndim != 3:
        raise ValueError(f"scores must be (N, M, L), got {tuple(scores.shape)}")
    n, m, _ = scores.shape
    if m < 2:
        raise ValueError("a mutual-information bound needs at least 2 images (negatives)")
    if positives.shape != (n,):
        raise ValueError(f"positives must be ({n},), got {tuple(positives.shape)}")
    joint = torch.zeros(n, m, dtype=torch.bool, device=scores.device)
    joint[torch.arange(n, device=scores.device), positives] = True
    pos = scores[joint]  # (N, L)
    neg = scores[~joint]  # (N * (M - 1), L), rows grouped by n
    if estimator == "jsd":
        return (-F.softplus(-pos)).mean() - F.softplus(neg).mean()
    if estimator == "dv":
        return pos.mean() - (torch.logsumexp(neg.flatten(), 0) - math.log(neg.numel()))
    if estimator == "infonce":
        # Every local position of n shares the same negatives: one log-sum-exp per n.
        neg_lse = torch.logsumexp(neg.reshape(n, -1), dim=1, keepdim=True)
        return (pos - torch.logaddexp(pos, neg_lse)).mean()
    raise ValueError(f"estimator: unknown {estimator!r}; allowed: {', '.join(MI_ESTIMATORS)}")


def discriminator_loss(real_logits: Tensor, fake_logits: Tensor) -> Tensor:
    """The GAN discriminator's loss ``-E[log D(real)] - E[log(1 - D(fake))]`` on logits
    (``log sigmoid`` written as ``-softplus(-x)``, finite for any logit). Used for Deep
    InfoMax's prior matching; the generator side comes from a gradient reversal."""
    return F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean()


def pretext_classification(logits: Tensor, labels: Tensor) -> Tensor:
    """Cross entropy of a pretext classifier (which rotation, which relative position,
    which permutation): ``-log softmax(logits)[label]`` averaged over the examples."""
    if logits.ndim != 2 or labels.shape != logits.shape[:1]:
        raise ValueError(f"logits must be (N, K) and labels (N,), got {tuple(logits.shape)} "
                         f"and {tuple(labels.shape)}")
    return F.cross_entropy(logits, labels)


RECONSTRUCTION_LOSSES = ("mse", "bce")


def reconstruction_loss(
    logits: Tensor, target: Tensor, kind: str, mask: Tensor | None = None
) -> Tensor:
    """Pixel reconstruction from decoder logits (the image is ``sigmoid(logits)``).

    ``"mse"``: squared error of ``sigmoid(logits)``; ``"bce"``: the cross entropy of
    pixels in [0, 1] (the two losses ../shared/seeds/001_a60f3e13f8331ac6.txt shows for
    the denoising autoencoder). With ``mask`` (1 where the loss applies, broadcastable to
    the image) each image's sum runs over its masked elements only and is divided by
    their number: the context encoder's ``||M (x - F((1 - M) x))||^2`` per masked
    element, averaged over images (per image, so that any split of the batch over
    workers averages to the same value).
    """
    if logits.shape != target.shape:
        raise ValueError(f"logits and target must have equal shapes, got "
                         f"{tuple(logits.shape)} and {tuple(target.shape)}")
    if kind == "mse":
        per_element = (torch.sigmoid(logits) - target).pow(2)
    elif kind == "bce":
        per_element = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    else:
        raise ValueError(f"loss: unknown {kind!r}; allowed: {', '.join(RECONSTRUCTION_LOSSES)}")
    if mask is None:
        return per_element.mean()
    weights = mask.expand_as(per_element).to(per_element.dtype).flatten(1)
    per_image = (per_element.flatten(1) * weights).sum(1) / weights.sum(1).clamp_min(1.0)
    return per_image.mean()


def transformation_regression(predicted: Tensor, true: Tensor) -> Tensor:
    """AET's parametrised loss ``||theta_hat - theta||_2^2`` (../shared/seeds/
    004_e6ad71d192551e5a.txt, section 3.3), summed over parameters, mean over images."""
    if predicted.shape != true.shape or predicted.ndim != 2:
        raise ValueError(f"predicted and true must be (N, P) of equal shape, got "
                         f"{tuple(predicted.shape)} and {tuple(true.shape)}")
    return (predicted - true).pow(2).sum(dim=1).mean()
