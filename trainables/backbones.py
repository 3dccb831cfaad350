"""Encoders that map normalised images to a feature vector.

Both backbones are built for small images: the CIFAR-style ResNet-18 replaces the ImageNet
stem (7x7 stride-2 convolution and max-pool, which would shrink a 32x32 image to 8x8
before the first block) with a 3x3 stride-1 convolution and no pooling.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torchvision
from torch import Tensor, nn

BACKBONES = ("small_cnn", "resnet18")


class Normalize(nn.Module):
    """Per-channel standardisation with the dataset's statistics, kept inside the encoder
    so that evaluation and pretraining can never disagree on preprocessing."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        return (x - self.mean) / self.std


def _conv_bn_relu(c_in: int, c_out: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


def small_cnn(in_channels: int, width: int = 16) -> tuple[nn.Module, int]:
    """Four 3x3 conv blocks (three of them stride 2) and global average pooling: a few
    million multiply-adds per 32x32 image, so that a study runs on a laptop CPU."""
    body = nn.Sequential(
        _conv_bn_relu(in_channels, width, 1),
        _conv_bn_relu(width, 2 * width, 2),
        _conv_bn_relu(2 * width, 4 * width, 2),
        _conv_bn_relu(4 * width, 8 * width, 2),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
    )
    return body, 8 * width


def cifar_resnet18(in_channels: int) -> tuple[nn.Module, int]:
    net = torchvision.models.resnet18(weights=None)
    net.conv1 = nn.Conv2d(in_channels, 64, kernel_size=3, stride=1, padding=1, bias=False)
    net.maxpool = nn.Identity()
    feature_dim = net.fc.in_features
    net.fc = nn.Identity()
    return net, feature_dim


def build_encoder(
    name: str, in_channels: int, mean: Sequence[float], std: Sequence[float]
) -> tuple[nn.Module, int]:
    """Return ``(encoder, feature_dim)``; the encoder takes images in [0, 1]."""
    if name == "small_cnn":
        body, dim = small_cnn(in_channels)
    elif name == "resnet18":
        body, dim = cifar_resnet18(in_channels)
    else:
        raise ValueError(f"backbone: unknown {name!r}; allowed: {', '.join(BACKBONES)}")
    return nn.Sequential(Normalize(mean, std), body), dim
