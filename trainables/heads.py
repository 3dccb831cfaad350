"""Small heads shared by several methods."""

from __future__ import annotations

import itertools

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


def classifier_mlp(in_dim: int, hidden_dim: int, classes: int) -> nn.Sequential:
    """A pretext task's classifier (rotation, relative position, permutation)."""
    return nn.Sequential(
        nn.Linear(in_dim, hidden_dim), nn.ReLU(inplace=True), nn.Linear(hidden_dim, classes)
    )


class ConvDecoder(nn.Module):
    """Feature map to image logits: three transposed convolutions, each doubling the
    resolution and halving the channels (a 4x4 map of a 32-pixel image returns to 32x32),
    a 3x3 convolution to the image's channels, and a bilinear resize to the requested
    size whenever the encoder's downsampling was not exactly 8."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        widths = [in_channels, max(in_channels // 2, 8), max(in_channels // 4, 8),
                  max(in_channels // 8, 8)]
        layers: list[nn.Module] = []
        for c_in, c_out in itertools.pairwise(widths):
            layers += [nn.ConvTranspose2d(c_in, c_out, 4, stride=2, padding=1),
                       nn.ReLU(inplace=True)]
        layers.append(nn.Conv2d(widths[-1], out_channels, 3, padding=1))
        self.body = nn.Sequential(*layers)

    def forward(self, feature_map: Tensor, size: tuple[int, int]) -> Tensor:
        logits = self.body(feature_map)
        if tuple(logits.shape[2:]) != tuple(size):
            logits = nn.functional.interpolate(logits, size=size, mode="bilinear",
                                               align_corners=False)
        return logits


def image_discriminator(in_channels: int, width: int = 32) -> nn.Sequential:
    """A small convolutional real-vs-fake critic for images (no BatchNorm, so that real
    and generated batches are never normalised together)."""
    return nn.Sequential(
        nn.Conv2d(in_channels, width, 4, stride=2, padding=1), nn.LeakyReLU(0.2, inplace=True),
        nn.Conv2d(width, 2 * width, 4, stride=2, padding=1), nn.LeakyReLU(0.2, inplace=True),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2 * width, 1),
    )
