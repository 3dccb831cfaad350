"""Small heads shared by several methods."""

from __future__ import annotations

from torch import nn


def projection_mlp(in_dim: int, hidden_dim: int, out_dim: int) -> nn.Sequential:
    """SimCLR's non-linear projection g(h): Linear, BatchNorm, ReLU, Linear. The loss is
    computed on its output and the head is thrown away after pretraining."""
    return nn.Sequential(
        nn.Linear(in_dim, hidden_dim, bias=False),
        nn.BatchNorm1d(hidden_dim),
        nn.ReLU(inplace=True),
        nn.Linear(hidden_dim, out_dim),
    )
