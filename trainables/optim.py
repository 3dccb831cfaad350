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
        """One step of every group as multi-tensor (``_foreach``) operations, the way
        torch's own optimisers batch theirs, and nothing waits on the host. Only the
        scaling by each tensor's trust ratio (a 0-d tensor per weight) runs tensor by
        tensor: a ResNet-18 step is a few dozen kernel launches on a GPU, where the
        per-tensor loop launched hundreds."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            weights = [w for w in group["params"] if w.grad is not None]
            if not weights:
                continue
            grads = [w.grad for w in weights]
            if group["weight_decay"]:
                grads = torch._foreach_add(grads, weights, alpha=group["weight_decay"])
            if group["adapt"]:
                w_norms = torch.stack(torch._foreach_norm(weights))
                g_norms = torch.stack(torch._foreach_norm(grads))
                ratios = torch.where((w_norms > 0) & (g_norms > 0),
                                     group["trust_coefficient"] * w_norms / g_norms,
                                     torch.ones_like(w_norms))
                grads = torch._foreach_mul(grads, list(ratios.unbind()))
            velocities = []
            for w in weights:
                state = self.state[w]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = torch.zeros_like(w)
                velocities.append(state["momentum_buffer"])
            torch._foreach_mul_(velocities, group["momentum"])
            torch._foreach_add_(velocities, grads, alpha=group["lr"])
            torch._foreach_sub_(weights, velocities)
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
