"""LARS, the optimiser SimCLR trains with at large batches.

Source: ../shared/seeds/003_c80d734d47a8bbd6.txt ("Use LARS optimizer instead of
SGD/momentum to stabilize training for large batch sizes"); the rule is You, Gitman and
Ginsburg's layer-wise adaptive rate scaling ("Large Batch Training of Convolutional
Networks", 2017), in the form SimCLR's code uses it. For each parameter tensor w with
gradient g, at learning rate lr, momentum m, weight decay wd and trust coefficient eta:

    g <- g + wd * w                                   (decay)
    r  = eta * ||w|| / ||g||   (1 if either norm is 0) (trust ratio)
    v <- m * v + lr * r * g                           (momentum on the scaled step)
    w <- w - v

Biases and normalisation parameters (tensors of at most one dimension) get neither the
decay nor the trust ratio, as in SimCLR: their norms say nothing about a layer's scale,
and decaying BatchNorm's scale towards zero only hurts.

Written here rather than taken from lightly (whose ``LARS`` is the nearest well-kept
implementation): lightly is an optional benchmark dependency that brings PyTorch
Lightning with it, too much for one optimiser in the torch core.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import Tensor, nn

#: SimCLR's trust coefficient.
TRUST_COEFFICIENT = 1e-3


class LARS(torch.optim.Optimizer):
    """LARS with momentum; a parameter group with ``adapt`` False is plain momentum SGD
    (no trust ratio), and its ``weight_decay`` is its own."""

    def __init__(self, params: Iterable[Tensor] | Iterable[dict], lr: float,
                 momentum: float = 0.9, weight_decay: float = 0.0,
                 trust_coefficient: float = TRUST_COEFFICIENT) -> None:
        if lr < 0 or not 0.0 <= momentum < 1.0 or weight_decay < 0 or trust_coefficient <= 0:
            raise ValueError(f"LARS: invalid lr {lr}, momentum {momentum}, weight_decay "
                             f"{weight_decay} or trust_coefficient {trust_coefficient}")
        super().__init__(params, {"lr": lr, "momentum": momentum,
                                  "weight_decay": weight_decay,
                                  "trust_coefficient": trust_coefficient, "adapt": True})

    @torch.no_grad()
    def step(self, closure: Callable[[], Tensor] | None = None) -> Tensor | None:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for w in group["params"]:
                if w.grad is None:
                    continue
                g = w.grad
                if group["weight_decay"]:
                    g = g.add(w, alpha=group["weight_decay"])
                if group["adapt"]:
                    # On the device, without a host synchronisation per tensor.
                    w_norm, g_norm = torch.linalg.vector_norm(w), torch.linalg.vector_norm(g)
                    ratio = torch.where((w_norm > 0) & (g_norm > 0),
                                        group["trust_coefficient"] * w_norm / g_norm,
                                        torch.ones_like(w_norm))
                    g = g * ratio
                state = self.state[w]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = torch.zeros_like(w)
                velocity = state["momentum_buffer"]
                velocity.mul_(group["momentum"]).add_(g, alpha=group["lr"])
                w.sub_(velocity)
        return loss


def lars_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """``model``'s trainable parameters in two groups: weights (decayed and adapted), and
    biases and normalisation parameters (neither)."""
    trainable = [p for p in model.parameters() if p.requires_grad]
    return [
        {"params": [p for p in trainable if p.ndim > 1], "weight_decay": weight_decay,
         "adapt": True},
        {"params": [p for p in trainable if p.ndim <= 1], "weight_decay": 0.0,
         "adapt": False},
    ]
