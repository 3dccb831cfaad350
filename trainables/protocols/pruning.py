"""Global iterative magnitude pruning during fine-tuning, then low-bit quantization.

../shared/seeds/003_c80d734d47a8bbd6.txt (Table 2, "prune S% *"): the SimCLR network is
pruned globally and iteratively while it is fine-tuned, to 70, 90, 95 and 99% sparsity,
and its weights are quantized to 6 bits for evaluation.

*Global*: one magnitude threshold over every convolution and linear weight of the
network (torch's ``prune.global_unstructured`` with the L1 criterion), so layers lose
different shares of their weights. *Iterative*: the sparsity grows after each epoch of
the first two thirds of fine-tuning along Zhu and Gupta's cubic schedule
s_t = S (1 - (1 - t/T)^3), and the last third (where the learning rate is a tenth)
recovers from the last cut. Pruned weights stay at zero through training (the mask
multiplies them), and the masks are made permanent before quantization.

*Quantization*: per tensor and symmetric, w -> round(w / scale) * scale with
scale = max|w| / (2^(bits-1) - 1): at most 2^bits - 1 distinct values per tensor, zero
among them, so quantizing keeps the sparsity. Biases and BatchNorm parameters (a few
hundred numbers) are neither pruned nor quantized.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor, nn
from torch.nn.utils import prune

from trainables.evaluation import train_classifier
from trainables.protocols.finetune import FitSettings, HeadKind, classifier
from trainables.protocols.labels import LabelBudget

_PRUNABLE = (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)


@dataclass(frozen=True)
class PruningSettings:
    sparsities: tuple[float, ...] = (0.7, 0.9, 0.95, 0.99)
    bits: int = 6
    budgets: tuple[LabelBudget, ...] = ()
    fit: FitSettings = field(default_factory=FitSettings)


def used_weights(network: nn.Module, example: Tensor) -> list[tuple[nn.Module, str]]:
    """The weights of the convolutions and linear layers that ``example`` (a float batch)
    passes through: an evaluated intermediate stage leaves the deeper ones unused, and
    their weights must not count towards the global threshold or the sparsity."""
    reached: list[nn.Module] = []
    hooks = [m.register_forward_hook(lambda module, _i, _o: reached.append(module))
             for m in network.modules() if isinstance(m, _PRUNABLE)]
    was_training = network.training
    network.eval()
    try:
        with torch.no_grad():
            network(example)
    finally:
        network.train(was_training)
        for hook in hooks:
            hook.remove()
    unique = list(dict.fromkeys(reached))
    return [(module, "weight") for module in unique]


def cubic_schedule(target: float, epochs: int) -> dict[int, float]:
    """Epoch (1-based) -> the sparsity to reach after it: the cubic ramp over the first
    two thirds of ``epochs`` (at least the first epoch), ending at ``target``."""
    ramp = max(1, (2 * epochs) // 3)
    return {t: target * (1.0 - (1.0 - t / ramp) ** 3) for t in range(1, ramp + 1)}


def sparsity(weights: list[tuple[nn.Module, str]]) -> float:
    """The share of exactly-zero entries over all ``weights``."""
    zeros = sum(int((getattr(m, name) == 0).sum()) for m, name in weights)
    total = sum(getattr(m, name).numel() for m, name in weights)
    return zeros / total


class GradualPruning:
    """The ``after_epoch`` hook of ``train_classifier`` that prunes ``weights`` globally
    to the schedule's sparsity after each epoch."""

    def __init__(self, weights: list[tuple[nn.Module, str]], target: float,
                 epochs: int) -> None:
        self.weights = weights
        self.schedule = cubic_schedule(target, epochs)
        self.total = sum(getattr(m, name).numel() for m, name in weights)
        self.pruned = 0

    def __call__(self, epoch: int) -> None:
        if epoch not in self.schedule:
            return
        goal = round(self.schedule[epoch] * self.total)
        # torch prunes ``amount`` more entries among those still unpruned.
        if goal > self.pruned:
            prune.global_unstructured(self.weights, pruning_method=prune.L1Unstructured,
                                      amount=goal - self.pruned)
            self.pruned = goal

    def finish(self) -> None:
        """Make the masks permanent: plain ``weight`` tensors with zeros in them."""
        for module, name in self.weights:
            if prune.is_pruned(module):
                prune.remove(module, name)


@torch.no_grad()
def quantize_(weights: list[tuple[nn.Module, str]], bits: int) -> None:
    """Per-tensor symmetric quantization to ``bits`` bits, in place."""
    levels = 2 ** (bits - 1) - 1
    for module, name in weights:
        weight = getattr(module, name)
        scale = weight.abs().max() / levels
        if scale > 0:
            weight.copy_(torch.round(weight / scale) * scale)


def pruned_network(
    trunk: nn.Module, feature_dim: int, images: Tensor, labels: Tensor, num_classes: int,
    kind: HeadKind, target: float, bits: int, fit: FitSettings, device: torch.device,
    seed: int,
) -> tuple[nn.Sequential, list[tuple[nn.Module, str]]]:
    """A copy of ``trunk`` with a head, fine-tuned on ``images`` while pruned to
    ``target`` sparsity, then quantized to ``bits`` bits; with its pruned weights."""
    # The standard layout: torch's global pruning flattens the weights with ``view``,
    # which the channels-last layout of a GPU trial's encoder refuses.
    network = classifier(trunk, feature_dim, num_classes, kind).to(
        device, memory_format=torch.contiguous_format)
    weights = used_weights(network, images[:2].to(device).float().div(255.0))
    pruning = GradualPruning(weights, target, fit.epochs)
    train_classifier(network, images, labels, device, fit.epochs, seed, fit.batch_size,
                     fit.lr, after_epoch=pruning)
    pruning.finish()
    quantize_(weights, bits)
    return network, weights
