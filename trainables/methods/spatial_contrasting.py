"""Spatial contrasting: two patches of one image should be closer than patches of others.

Source: ../shared/seeds/002_a5cbedfbf1372821.txt (Hoffer, Hubara, Ailon), section 4,
eq. 1-2. Two patches are taken from every image; their features at a chosen layer are
compared by L2 distance, and each first patch must pick its own image's second patch in
a softmax over negative distances to the second patches of every image of the batch
(the whole data-parallel batch here). The loss is the mean over images; "SC can be
applied to any layer ... at multiple layers": ``layers`` chooses which stage outputs
(spatially averaged to one vector per patch) are contrasted, and several layers'
losses are averaged.

Each patch is cut from its own augmented view of the image. The paper used no other
augmentation than the patch positions; ``aug_strength`` searches how much more the two
patches may differ in crop and colour. The views also take the augmentation family's
fixed flips and greyscale (``AugmentationPolicy``) at any strength, so even at 0 the
two patches are not only two positions of the same image.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Any

import torch
from torch import Tensor

from search_spaces import Hyperparameter
from trainables.augment import AugmentationPolicy, augment, random_patches
from trainables.backbones import pool
from trainables.losses import spatial_contrasting
from trainables.methods.base import SSLMethod

#: Which encoder stages are contrasted, counted from the last.
LAYER_CHOICES = MappingProxyType({
    "last": (-1,), "penultimate": (-2,), "last_two": (-2, -1), "last_three": (-3, -2, -1),
})


class SpatialContrasting(SSLMethod):
    name = "spatial_contrasting"
    source = "002_a5cbedfbf1372821.txt (eq. 1-2)"
    hyperparameters = MappingProxyType({
        "temperature": Hyperparameter(
            "float", 1.0, "divides the L2 distances (1 reproduces the paper)",
            low=0.0, low_open=True,
        ),
        "patch_size": Hyperparameter("int", 16, "side of each square patch in pixels", low=2),
        "layers": Hyperparameter(
            "choice", "last", "encoder stages whose features are contrasted",
            choices=tuple(LAYER_CHOICES),
        ),
    })
    image_parameters = ("patch_size",)

    @classmethod
    def check_image_size(cls, values: Mapping[str, Any], image_size: int) -> None:
        if values["patch_size"] > image_size:
            raise ValueError(f"patch_size: {values['patch_size']}-pixel patches do not fit "
                             f"the {image_size}-pixel images")

    def make_views(
        self, batch: Tensor, policy: AugmentationPolicy, generator: torch.Generator
    ) -> list[Tensor]:
        size = self.values["patch_size"]
        return [random_patches(augment(batch, policy, generator), size, generator)
                for _ in range(2)]

    def forward(self, views: Sequence[Tensor]) -> Tensor:
        first, second = views
        n = first.shape[0]
        stages = LAYER_CHOICES[self.values["layers"]]
        if len(self.encoder.stages) < len(stages):
            raise ValueError(f"layers {self.values['layers']!r} needs {len(stages)} encoder "
                             f"stages, the backbone has {len(self.encoder.stages)}")
        # One encoder pass for both patches, so BatchNorm normalises them together.
        maps = self.encoder.feature_maps(torch.cat([first, second]))
        positives = torch.arange(n, device=first.device) + self.comm.rank * n
        losses = []
        for stage in stages:
            f1, f2 = pool(maps[stage]).chunk(2)
            losses.append(spatial_contrasting(
                f1, self.comm.gather(f2), positives, self.values["temperature"]
            ))
        return torch.stack(losses).mean()
