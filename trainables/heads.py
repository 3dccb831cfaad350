"""Small heads shared by several methods."""

from __future__ import annotations

import torch
from torch import Tensor, nn


def projection_mlp(in_dim: int, hidden_dim: int, out_dim: int) -> nn.Sequential:
    """SimCLR's non-linear projection g(h): Linear, BatchNorm, ReLU, Linear. The loss is
    computed on its output and the head is thrown away after pretraining."""
    return nn.Sequential(
        nn.Linear(in_dim, hidden_dim, bias=False),
        nn.BatchNorm1d(hidden_dim),
        nn.ReLU(inplace=True),
        nn.Linear(hidden_dim, out_dim),
    )


class _ReverseGradient(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:  # type: ignore[override]
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:  # type: ignore[override]
        return -grad


def reverse_gradient(x: Tensor) -> Tensor:
    """Identity forward, negated gradient backward: a discriminator after it minimises its
    loss while everything before it maximises that loss, so a min-max game trains with
    one loss and one optimiser step."""
    return _ReverseGradient.apply(x)


def discriminator_mlp(in_dim: int, hidden_dim: int) -> nn.Sequential:
    """A small MLP giving one real-vs-fake logit per row."""
    return nn.Sequential(
        nn.Linear(in_dim, hidden_dim),
        nn.ReLU(inplace=True),
        nn.Linear(hidden_dim, hidden_dim),
        nn.ReLU(inplace=True),
        nn.Linear(hidden_dim, 1),
    )
