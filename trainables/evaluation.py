"""Evaluation of a frozen encoder on the held-out labelled split.

Features are extracted once, under ``torch.no_grad()`` and in eval mode, into plain
tensors; the classifiers below only ever see those tensors, so no evaluation can update
the encoder (the "probe that silently fine-tunes the backbone" trap).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn


@torch.no_grad()
def extract_features(
    encoder: nn.Module, images: Tensor, device: torch.device, batch_size: int = 512
) -> Tensor:
    """Features of uint8 images (no augmentation), as a float32 tensor on ``device``."""
    was_training = encoder.training
    encoder.eval()
    try:
        chunks = [
            encoder(images[i : i + batch_size].to(device).float().div_(255.0)).float()
            for i in range(0, len(images), batch_size)
        ]
    finally:
        encoder.train(was_training)
    return torch.cat(chunks)


@torch.no_grad()
def knn_accuracy(
    train_features: Tensor,
    train_labels: Tensor,
    test_features: Tensor,
    test_labels: Tensor,
    num_classes: int,
    k: int = 200,
    temperature: float = 0.1,
    chunk_size: int = 1024,
) -> float:
    """Weighted kNN (Wu et al. 2018, as in MoCo's monitor): each of the k nearest training
    features by cosine similarity votes for its label with weight exp(sim / T)."""
    if k < 1 or temperature <= 0:
        raise ValueError(f"knn needs k >= 1 and temperature > 0, got k={k}, T={temperature}")
    bank = F.normalize(train_features, dim=1)
    bank_labels = train_labels.to(bank.device)
    k = min(k, bank.shape[0])
    correct = 0
    for start in range(0, test_features.shape[0], chunk_size):
        queries = F.normalize(test_features[start : start + chunk_size], dim=1)
        sims, idx = (queries @ bank.T).topk(k, dim=1)
        weights = (sims / temperature).exp()
        votes = torch.zeros(queries.shape[0], num_classes, device=bank.device)
        votes.scatter_add_(1, bank_labels[idx], weights)
        predicted = votes.argmax(dim=1)
        correct += (predicted == test_labels[start : start + chunk_size].to(bank.device)).sum()
    return float(correct) / test_features.shape[0]


def _standardise(train_features: Tensor, test_features: Tensor) -> tuple[Tensor, Tensor]:
    """Both splits scaled by the train split's per-feature mean and std, detached."""
    train_features, test_features = train_features.detach(), test_features.detach()
    mean = train_features.mean(dim=0, keepdim=True)
    std = train_features.std(dim=0, keepdim=True).clamp(min=1e-6)
    return (train_features - mean) / std, (test_features - mean) / std


def linear_probe_accuracy(
    train_features: Tensor,
    train_labels: Tensor,
    test_features: Tensor,
    test_labels: Tensor,
    num_classes: int,
    l2: float = 1e-4,
    max_iter: int = 200,
) -> float:
    """Multinomial logistic regression on standardised frozen features.

    The problem is convex, so full-batch L-BFGS reaches the optimum in a few hundred
    iterations without a learning rate to tune; the small L2 penalty keeps the solution
    unique when classes are separable.

    The solve runs on the CPU, wherever the features were computed: L-BFGS reads the loss
    back at every step of its line search, so on a GPU it runs at the pace of host-device
    round trips, and far slower when packed trials share the GPU by time-slicing. Measured
    on an H200, the validation and test probes of one trial (512-d ResNet-18 features of
    7,372 and 8,192 images) took 4.1 s alone and 37 s with four trials on the GPU; on 2
    CPU threads one such probe takes 1.8 s at most (200 iterations on features that never
    separate).
    """
    cpu = torch.device("cpu")
    x_train, x_test = _standardise(train_features.to(cpu, torch.float32),
                                   test_features.to(cpu, torch.float32))
    y_train = train_labels.to(cpu)
    # Initialised from a random state of its own: drawn from the global one, it would
    # shift the draws that training makes after the evaluation. The CPU's generator alone
    # is reseeded (the probe is made there): torch.manual_seed would also reseed the
    # GPU's, which fork_rng(devices=[]) does not restore.
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(0)
        probe = nn.Linear(x_train.shape[1], num_classes)
    optimizer = torch.optim.LBFGS(
        probe.parameters(), lr=1.0, max_iter=max_iter, line_search_fn="strong_wolfe"
    )

    def closure() -> Tensor:
        optimizer.zero_grad()
        loss = F.cross_entropy(probe(x_train), y_train) + l2 * probe.weight.pow(2).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    with torch.no_grad():
        predicted = probe(x_test).argmax(dim=1)
    return float((predicted == test_labels.to(cpu)).float().mean())


def train_classifier(
    model: nn.Module,
    images: Tensor,
    labels: Tensor,
    device: torch.device,
    epochs: int,
    seed: int = 0,
    batch_size: int = 128,
    lr: float = 1e-3,
    after_epoch: Callable[[int], None] | None = None,
) -> nn.Module:
    """Train a classifier on labelled uint8 images, in place, and return it.

    Only parameters with ``requires_grad`` are updated, so a caller freezes transferred
    layers by turning it off. Adam at ``lr`` for the first two thirds of the epochs and
    ``lr / 10`` after, the schedule of ../shared/seeds/000_a0c2eea34e4d74c8.txt (Figure 3).
    ``after_epoch(epoch)`` (1-based) runs after each epoch: gradual pruning hooks in there.
    """
    model = model.to(device)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(trainable, lr=lr)
    drop_at = max(1, (2 * epochs) // 3)
    order_generator = torch.Generator().manual_seed(seed)
    images, labels = images.to(device), labels.to(device)
    model.train()
    for epoch in range(epochs):
        if epoch == drop_at:
            for group in optimizer.param_groups:
                group["lr"] = lr / 10
        order = torch.randperm(len(images), generator=order_generator).to(device)
        for start in range(0, len(images), batch_size):
            idx = order[start : start + batch_size]
            if len(idx) == 1 and start:
                break  # a lone last image: BatchNorm cannot normalise a batch of one
            loss = F.cross_entropy(model(images[idx].float().div_(255.0)), labels[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        if after_epoch is not None:
            after_epoch(epoch + 1)
    return model


def classifier_accuracy(
    model: nn.Module, images: Tensor, labels: Tensor, device: torch.device
) -> float:
    """Accuracy of a classifier (images to logits) on labelled uint8 images, in eval mode."""
    logits = extract_features(model, images, device)
    return float((logits.argmax(dim=1) == labels.to(device)).float().mean())


def supervised_accuracy(
    model: nn.Module,
    train_images: Tensor,
    train_labels: Tensor,
    test_images: Tensor,
    test_labels: Tensor,
    device: torch.device,
    epochs: int,
    seed: int = 0,
    batch_size: int = 128,
    lr: float = 1e-3,
) -> float:
    """Train a classifier (``train_classifier``) and return its held-out accuracy."""
    train_classifier(model, train_images, train_labels, device, epochs, seed, batch_size, lr)
    return classifier_accuracy(model, test_images, test_labels, device)


def mlp_probe_accuracy(
    train_features: Tensor,
    train_labels: Tensor,
    test_features: Tensor,
    test_labels: Tensor,
    num_classes: int,
    hidden_dim: int = 256,
    steps: int = 300,
    lr: float = 1e-3,
    weight_decay: float = 1e-4,
) -> float:
    """A one-hidden-layer MLP on standardised frozen features.

    Pretext features (RotNet's above all, ../shared/seeds/003_c80d734d47a8bbd6.txt, which
    evaluates RotNet with a non-linear head) are often not linearly separable, so a linear
    probe understates them. Full-batch Adam on the feature tensors: the encoder is not
    involved, and a fixed seed makes the score a function of the features alone.
    """
    device = train_features.device
    x_train, x_test = _standardise(train_features, test_features)
    y_train = train_labels.to(device)
    with torch.random.fork_rng(devices=[]):  # as the linear probe's
        torch.default_generator.manual_seed(0)
        probe = nn.Sequential(
            nn.Linear(x_train.shape[1], hidden_dim), nn.ReLU(), nn.Linear(hidden_dim, num_classes)
        ).to(device)
    optimizer = torch.optim.AdamW(probe.parameters(), lr=lr, weight_decay=weight_decay)
    for _ in range(steps):
        loss = F.cross_entropy(probe(x_train), y_train)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        predicted = probe(x_test).argmax(dim=1)
    return float((predicted == test_labels.to(device)).float().mean())
