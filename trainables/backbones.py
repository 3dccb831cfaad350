"""Encoders that map images in [0, 1] to a feature vector, stage by stage.

Every encoder is an ``Encoder``: normalisation, a list of stages (convolutional blocks)
and global average pooling of the last stage. Methods that work on intermediate feature
maps (Deep InfoMax's local map, spatial contrasting at chosen layers) and evaluation from
an intermediate block ask for the stage outputs instead of re-implementing the network.

The backbones are built for small images: the CIFAR-style ResNet-18 replaces the ImageNet
stem (7x7 stride-2 convolution and max-pool, which would shrink a 32x32 image to 8x8
before the first block) with a 3x3 stride-1 convolution and no pooling.
"""

from __future__ import annotations

from collections.abc import Sequence
from types import MappingProxyType
from typing import Literal

import torch
from torch import Tensor, nn

BACKBONES = ("small_cnn", "resnet18", "layerwise_conv")
#: How a feature map becomes a vector: global average or global max pooling.
Pooling = Literal["mean", "max"]
#: Stages of each study-wide backbone, for validating ``train.eval_layer`` up front.
BACKBONE_STAGES = MappingProxyType({"small_cnn": 4, "resnet18": 5, "layerwise_conv": 2})


class Normalize(nn.Module):
    """Per-channel standardisation with the dataset's statistics, kept inside the encoder
    so that evaluation and pretraining can never disagree on preprocessing."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        return (x - self.mean) / self.std


class Encoder(nn.Module):
    """Normalisation, then ``stages``, then global average pooling of the last stage."""

    def __init__(
        self, normalize: Normalize, stages: Sequence[nn.Module], channels: Sequence[int]
    ) -> None:
        super().__init__()
        self.normalize = normalize
        self.stages = nn.ModuleList(stages)
        #: Output channels of each stage; ``channels[-1]`` is the feature dimension.
        self.channels = tuple(channels)

    @property
    def feature_dim(self) -> int:
        return self.channels[-1]

    def feature_maps(self, x: Tensor, depth: int | None = None) -> list[Tensor]:
        """Outputs of the first ``depth`` stages (all by default), shallowest first."""
        x = self.normalize(x)
        maps = []
        for stage in self.stages[:depth]:
            x = stage(x)
            maps.append(x)
        return maps

    def forward(self, x: Tensor) -> Tensor:
        return pool(self.feature_maps(x)[-1])


class StageFeatures(nn.Module):
    """An encoder cut after stage ``depth`` (1-based), pooled (by the mean unless told
    otherwise): evaluation from an intermediate block. Shares the encoder's parameters and
    its train/eval mode; holds no state of its own."""

    def __init__(self, encoder: Encoder, depth: int, pooling: Pooling = "mean") -> None:
        super().__init__()
        check_depth(encoder, depth)
        self.encoder = encoder
        self.depth = depth
        self.pooling: Pooling = pooling
        self.train(encoder.training)

    def forward(self, x: Tensor) -> Tensor:
        return pool(self.encoder.feature_maps(x, self.depth)[-1], self.pooling)


def check_depth(encoder: Encoder, depth: int) -> None:
    """Raise ValueError naming ``eval_layer`` unless ``encoder`` has a stage ``depth``."""
    if not 1 <= depth <= len(encoder.stages):
        raise ValueError(f"eval_layer: got {depth}, allowed: 1 to {len(encoder.stages)} "
                         f"(the backbone's stages)")


def pool(feature_map: Tensor, pooling: Pooling = "mean") -> Tensor:
    """Global average (or max) pooling of an (N, C, H, W) map to (N, C)."""
    return feature_map.mean(dim=(2, 3)) if pooling == "mean" else feature_map.amax(dim=(2, 3))


def _conv_bn_relu(c_in: int, c_out: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


def small_cnn(in_channels: int, width: int = 16) -> tuple[list[nn.Module], list[int]]:
    """Four 3x3 conv blocks (three of them stride 2): a few million multiply-adds per 32x32
    image, so that a study runs on a laptop CPU."""
    widths = [width, 2 * width, 4 * width, 8 * width]
    strides = [1, 2, 2, 2]
    c_in = [in_channels, *widths[:-1]]
    stages = [_conv_bn_relu(i, o, s) for i, o, s in zip(c_in, widths, strides, strict=True)]
    return stages, widths


def cifar_resnet18(in_channels: int) -> tuple[list[nn.Module], list[int]]:
    # Imported here: torchvision's models pull in torch._dynamo (about 2 s on 2 cores),
    # which a trial of another backbone, a fresh Ray worker each, need not pay.
    import torchvision

    net = torchvision.models.resnet18(weights=None)
    stem = nn.Sequential(
        nn.Conv2d(in_channels, 64, kernel_size=3, stride=1, padding=1, bias=False),
        net.bn1,
        net.relu,
    )
    return [stem, net.layer1, net.layer2, net.layer3, net.layer4], [64, 64, 128, 256, 512]


def conv_pool_layer(c_in: int, c_out: int, kernel: int) -> nn.Sequential:
    """One unpadded convolution, ReLU and 2x2 max-pooling: the unit that the layer-wise
    method (../shared/seeds/000_a0c2eea34e4d74c8.txt) trains one at a time."""
    return nn.Sequential(nn.Conv2d(c_in, c_out, kernel), nn.ReLU(inplace=True), nn.MaxPool2d(2))


def layerwise_conv(
    in_channels: int, filters: Sequence[int], kernels: Sequence[int]
) -> tuple[list[nn.Module], list[int]]:
    """The layer-wise method's shallow network: one ``conv_pool_layer`` per entry."""
    c_in = [in_channels, *filters[:-1]]
    stages = [conv_pool_layer(i, o, k) for i, o, k in zip(c_in, filters, kernels, strict=True)]
    return stages, list(filters)


def build_encoder(
    name: str,
    in_channels: int,
    mean: Sequence[float],
    std: Sequence[float],
    filters: Sequence[int] = (32, 64),
    kernels: Sequence[int] = (6, 3),
) -> Encoder:
    """The encoder ``name``; ``filters`` and ``kernels`` shape ``layerwise_conv`` only."""
    if name == "small_cnn":
        stages, channels = small_cnn(in_channels)
    elif name == "resnet18":
        stages, channels = cifar_resnet18(in_channels)
    elif name == "layerwise_conv":
        stages, channels = layerwise_conv(in_channels, filters, kernels)
    else:
        raise ValueError(f"backbone: unknown {name!r}; allowed: {', '.join(BACKBONES)}")
    return Encoder(Normalize(mean, std), stages, channels)
