"""Relative patch location: which of the 8 neighbours of the centre patch is this?

Source: ../shared/seeds/001_a60f3e13f8331ac6.txt ("Predicting Image Patch Locations",
after Doersch et al., 2015): two patches of a 3x3 grid of one image, the centre and one
of its eight neighbours, go through a siamese encoder, and a classifier on the two
encodings predicts the position of the second relative to the first. As in Doersch et
al., the grid leaves ``gap`` pixels between patches and every patch is moved by up to
``jitter`` pixels, so that continuing edges and textures across the border cannot solve
the task. Two neighbours can move ``2 * jitter`` pixels towards each other, so a gap below
that lets them overlap and the task be solved by matching the shared pixels, the very
shortcut gap and jitter exist to prevent: ``gap >= 2 * jitter`` is a declared constraint
(refused in a trial's values and in a search space that admits a violation).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Any

import torch
from torch import Tensor

from search_spaces import AtLeast, Hyperparameter
from trainables.augment import AugmentationPolicy, augment, crop_at, random_offsets
from trainables.heads import classifier_mlp
from trainables.losses import pretext_classification
from trainables.methods.base import SSLMethod

#: (row, column) of the eight neighbours in the 3x3 grid, in label order.
NEIGHBOURS = ((0, 0), (0, 1), (0, 2), (1, 0), (1, 2), (2, 0), (2, 1), (2, 2))


def grid_span(size: int, gap: int, jitter: int) -> int:
    """Side of the region the 3x3 grid of patches may cover, its jitter included."""
    return 3 * size + 2 * gap + 2 * jitter


class RelativePatchLocation(SSLMethod):
    name = "relative_patch"
    source = "001_a60f3e13f8331ac6.txt (Predicting Image Patch Locations)"
    hyperparameters = MappingProxyType({
        "patch_size": Hyperparameter("int", 8, "side of each patch in pixels", low=2),
        "gap": Hyperparameter("int", 2, "pixels between neighbouring grid cells", low=0),
        "jitter": Hyperparameter("int", 1, "largest random shift of each patch, in pixels", low=0),
        "head_hidden_dim": Hyperparameter("int", 256, "hidden width of the position classifier",
                                          low=1),
    })
    constraints = (AtLeast("gap", 2, "jitter", "neighbouring patches must not overlap"),)
    image_parameters = ("patch_size", "gap", "jitter")

    @classmethod
    def check_image_size(cls, values: Mapping[str, Any], image_size: int) -> None:
        size, gap, jitter = (values[k] for k in ("patch_size", "gap", "jitter"))
        span = grid_span(size, gap, jitter)
        if span > image_size:
            raise ValueError(
                f"patch_size, gap and jitter: the 3x3 grid of {size}-pixel patches with "
                f"{gap}-pixel gaps and {jitter}-pixel jitter spans {span} pixels "
                f"(3 * patch_size + 2 * gap + 2 * jitter), more than the "
                f"{image_size}-pixel images"
            )

    def build(self) -> None:
        self.classifier = classifier_mlp(
            2 * self.feature_dim, self.values["head_hidden_dim"], len(NEIGHBOURS)
        )

    def make_views(
        self, batch: Tensor, policy: AugmentationPolicy, generator: torch.Generator
    ) -> list[Tensor]:
        x = augment(batch, policy, generator)
        size, gap, jitter = (self.values[k] for k in ("patch_size", "gap", "jitter"))
        n, device = x.shape[0], x.device
        top, left = random_offsets(n, x.shape[2] - grid_span(size, gap, jitter), generator,
                                   device)
        labels = torch.randint(0, len(NEIGHBOURS), (n,), generator=generator, device=device)
        cells = torch.tensor(NEIGHBOURS, device=device)[labels]

        def patch(row: Tensor, col: Tensor) -> Tensor:
            shift_y, shift_x = (
                torch.randint(-jitter, jitter + 1, (n,), generator=generator, device=device)
                for _ in range(2)
            )
            return crop_at(x, top + jitter + row * (size + gap) + shift_y,
                           left + jitter + col * (size + gap) + shift_x, size)

        centre = patch(torch.ones_like(labels), torch.ones_like(labels))
        return [centre, patch(cells[:, 0], cells[:, 1]), labels]

    def forward(self, views: Sequence[Tensor]) -> Tensor:
        centre, neighbour, labels = views
        first, second = self.encoder(torch.cat([centre, neighbour])).chunk(2)
        return pretext_classification(self.classifier(torch.cat([first, second], 1)), labels)
