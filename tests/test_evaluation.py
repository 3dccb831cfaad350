"""kNN and linear probe on frozen features, with closed-form cases."""

from __future__ import annotations

import torch
from torch import nn

from trainables.evaluation import (
    extract_features,
    knn_accuracy,
    linear_probe_accuracy,
    mlp_probe_accuracy,
)


def _clusters(n_per_class: int, classes: int, dim: int, spread: float, seed: int):
    gen = torch.Generator().manual_seed(seed)
    centres = torch.randn(classes, dim, generator=gen) * 3
    labels = torch.arange(classes).repeat_interleave(n_per_class)
    features = centres[labels] + spread * torch.randn(len(labels), dim, generator=gen)
    return features, labels


def test_knn_perfect_on_separated_clusters() -> None:
    train, train_y = _clusters(20, 4, 8, 0.1, 0)
    test, test_y = _clusters(5, 4, 8, 0.1, 0)
    assert knn_accuracy(train, train_y, test, test_y, 4, k=10) == 1.0


def test_knn_weighting_closed_form() -> None:
    """Query along e1: one neighbour of class 0 at cosine 1 and two of class 1 at
    cosine 0.6. Weights exp(1/T) vs 2 exp(0.6/T): class 0 wins for T=0.1, but class 1
    wins when T is large and the vote becomes a plain count."""
    bank = torch.tensor([[1.0, 0.0], [0.6, 0.8], [0.6, -0.8]])
    labels = torch.tensor([0, 1, 1])
    query, truth = torch.tensor([[1.0, 0.0]]), torch.tensor([0])
    assert knn_accuracy(bank, labels, query, truth, 2, k=3, temperature=0.1) == 1.0
    assert knn_accuracy(bank, labels, query, truth, 2, k=3, temperature=100.0) == 0.0


def test_knn_k_larger_than_bank_is_clamped() -> None:
    train, train_y = _clusters(3, 2, 4, 0.1, 1)
    assert knn_accuracy(train, train_y, train, train_y, 2, k=200) == 1.0


def test_linear_probe_separates_linear_classes_and_not_noise() -> None:
    train, train_y = _clusters(50, 3, 6, 0.5, 2)
    test, test_y = _clusters(20, 3, 6, 0.5, 2)
    assert linear_probe_accuracy(train, train_y, test, test_y, 3) > 0.95
    noise = torch.randn_like(train)
    shuffled = torch.randn_like(test)
    assert linear_probe_accuracy(noise, train_y, shuffled, test_y, 3) < 0.6


def test_evaluation_never_changes_the_encoder() -> None:
    """The probe-that-fine-tunes trap: parameters, BatchNorm statistics and train mode
    of the encoder are the same after feature extraction and probing."""
    encoder = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(),
                            nn.AdaptiveAvgPool2d(1), nn.Flatten())
    encoder.train()
    before = {k: v.clone() for k, v in encoder.state_dict().items()}
    images = torch.randint(0, 256, (40, 3, 8, 8), dtype=torch.uint8)
    labels = torch.arange(40) % 2
    features = extract_features(encoder, images, torch.device("cpu"), batch_size=16)
    assert not features.requires_grad
    linear_probe_accuracy(features, labels, features, labels, 2)
    knn_accuracy(features, labels, features, labels, 2)
    assert encoder.training
    for key, value in encoder.state_dict().items():
        assert torch.equal(value, before[key]), key


def test_the_probes_leave_every_global_random_state_as_it_was(monkeypatch) -> None:
    """Their own initialisation touches neither the CPU's random state (restored) nor a
    GPU's (never reseeded: restoring it is not asked of fork_rng on the CPU)."""
    reseeded: list[int] = []
    monkeypatch.setattr(torch.cuda, "manual_seed_all", reseeded.append)
    gen = torch.Generator().manual_seed(0)
    labels = torch.arange(60) % 3
    features = torch.randn(3, 8, generator=gen)[labels] + torch.randn(60, 8, generator=gen)
    args = (features[:40], labels[:40], features[40:], labels[40:], 3)
    torch.manual_seed(5)
    before = torch.get_rng_state()
    reseeded.clear()
    linear_probe_accuracy(*args)
    mlp_probe_accuracy(*args, steps=5)
    assert torch.equal(torch.get_rng_state(), before)
    assert reseeded == []
