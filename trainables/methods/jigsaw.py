"""Jigsaw puzzles: recognise which permutation shuffled the nine tiles of an image.

Source: ../shared/seeds/001_a60f3e13f8331ac6.txt mentions jigsaw among the pretext
tasks; the construction follows Noroozi and Favaro (2016): a square region is cut into a
3x3 grid, a tile is taken at a random place within each cell (the slack between tile
and cell stops the network from matching borders), the tiles are shuffled by one of a
fixed set of permutations, every tile goes through the shared encoder, and a classifier
on the concatenated encodings predicts the permutation's index. The set is chosen
greedily for a large minimal Hamming distance between its permutations (Noroozi and
Favaro's maximal-distance set), deterministically, so every worker and every trial of
a study uses the same puzzles; its size ``num_permutations`` is the task's difficulty.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Any

import numpy as np
import torch
from torch import Tensor

from search_spaces import Hyperparameter
from trainables.augment import AugmentationPolicy, augment, crop_at, random_offsets
from trainables.heads import classifier_mlp
from trainables.losses import pretext_classification
from trainables.methods.base import SSLMethod

TILES = 9


def maximal_hamming_permutations(count: int, seed: int = 0) -> np.ndarray:
    """``count`` permutations of 9 elements, each added greedily as the one farthest (in
    Hamming distance) from those already chosen; (count, 9) int64."""
    every = np.array(list(itertools.permutations(range(TILES))), dtype=np.int8)
    if not 1 <= count <= len(every):
        raise ValueError(f"num_permutations: got {count}, allowed: 1 to {len(every)}")
    chosen = [int(np.random.default_rng(seed).integers(len(every)))]
    nearest = (every != every[chosen[0]]).sum(axis=1)
    for _ in range(count - 1):
        chosen.append(int(np.argmax(nearest)))
        nearest = np.minimum(nearest, (every != every[chosen[-1]]).sum(axis=1))
    return every[chosen].astype(np.int64)


def grid_span(tile: int, slack: int) -> int:
    """Side of the region the 3x3 grid of cells covers: each cell a tile and its play."""
    return 3 * (tile + slack)


class Jigsaw(SSLMethod):
    name = "jigsaw"
    source = "001_a60f3e13f8331ac6.txt (jigsaw among the pretext tasks; Noroozi & Favaro)"
    hyperparameters = MappingProxyType({
        "num_permutations": Hyperparameter("int", 24, "size of the permutation set (classes)",
                                           low=2, high=1000),
        "tile_size": Hyperparameter("int", 8, "side of each tile in pixels", low=2),
        "tile_slack": Hyperparameter("int", 2, "cell side minus tile side: the tile's random play",
                                     low=0),
        "head_hidden_dim": Hyperparameter("int", 512, "hidden width of the permutation classifier",
                                          low=1),
    })
    image_parameters = ("tile_size", "tile_slack")

    @classmethod
    def check_image_size(cls, values: Mapping[str, Any], image_size: int) -> None:
        tile, slack = values["tile_size"], values["tile_slack"]
        span = grid_span(tile, slack)
        if span > image_size:
            raise ValueError(
                f"tile_size and tile_slack: the 3x3 grid of {tile + slack}-pixel cells "
                f"({tile}-pixel tiles with {slack} pixels of play) spans {span} pixels, "
                f"more than the {image_size}-pixel images"
            )

    def build(self) -> None:
        permutations = maximal_hamming_permutations(self.values["num_permutations"])
        self.register_buffer("permutations", torch.from_numpy(permutations))
        self.classifier = classifier_mlp(
            TILES * self.feature_dim, self.values["head_hidden_dim"], len(permutations)
        )

    def make_views(
        self, batch: Tensor, policy: AugmentationPolicy, generator: torch.Generator
    ) -> list[Tensor]:
        x = augment(batch, policy, generator)
        tile, slack = self.values["tile_size"], self.values["tile_slack"]
        cell = tile + slack
        n, device = x.shape[0], x.device
        top, left = random_offsets(n, x.shape[2] - grid_span(tile, slack), generator, device)
        tiles = []
        for index in range(TILES):
            row, col = divmod(index, 3)
            dy, dx = random_offsets(n, slack, generator, device)
            tiles.append(crop_at(x, top + row * cell + dy, left + col * cell + dx, tile))
        tiles_in_order = torch.stack(tiles, dim=1)  # N, 9, C, t, t
        labels = torch.randint(0, len(self.permutations), (n,), generator=generator,
                               device=device)
        order = self.permutations.to(device)[labels]  # position i shows tile order[i]
        shuffled = tiles_in_order[torch.arange(n, device=device)[:, None], order]
        return [shuffled, labels]

    def forward(self, views: Sequence[Tensor]) -> Tensor:
        tiles, labels = views
        n = tiles.shape[0]
        features = self.encoder(tiles.flatten(0, 1)).view(n, -1)
        return pretext_classification(self.classifier(features), labels)
