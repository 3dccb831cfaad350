"""CPC for images: predict the encodings of patches below from a context of those above.

Source: ../shared/seeds/001_a60f3e13f8331ac6.txt, "Loss Function" (the InfoNCE loss it
credits to Contrastive Predictive Coding, Oord et al. 2018) and its mention of CPC among
the pretext tasks. Following CPC's image version: the image is cut into a grid of
overlapping patches (50% overlap), the encoder encodes every patch, a context network
with vertically masked convolutions turns the grid into contexts ``c_{i,j}`` that see
only rows <= i, and one linear predictor per step predicts a patch encoding below from
``W_k c_{i,j}``. With overlapping patches the row right below row i shares half its
pixels with row i, which the context has encoded: predicting it would partly be copying.
As CPC v2 implementations do (Henaff et al., 2019), the targets start at the first row
that shares no pixel with rows <= i (``first_target_offset``: 2 rows down at half
overlap), so step k predicts ``z_{i+o+k-1,j}`` with o that offset, and ``pred_steps``
counts the rows predicted from there. A grid must then have at least ``o + pred_steps``
rows (``check_image_size``): on 32-pixel images 16-pixel patches (3 rows) allow one step,
12-pixel ones (4 rows) two, 8-pixel ones (7 rows) five. Each prediction is contrasted by
InfoNCE against every patch encoding of the (global) batch. The per-step losses are
averaged, so that each step counts the same however many rows it has. For evaluation the
encoder sees the same grid and its patch encodings are averaged, as in CPC's linear
evaluation.

The patches go through the backbone as it is, BatchNorm included. CPC v2 replaced batch
normalisation by layer normalisation because batch statistics carry information between
the patches they pool. Here they pool every patch of the batch (256 images x 49 patches
at the defaults), and layer normalisation learned slower on the built-in shapes
(one run each, 4,096 images, batches of 64, kNN accuracy from random init: 8-pixel
patches after 2 epochs 0.248 -> 0.281 with BatchNorm, 0.263 -> 0.247 with layer
normalisation; 16-pixel patches after 4 epochs 0.181 -> 0.320 and 0.188 -> 0.307), so
the backbones stay the same for every method.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from search_spaces import Hyperparameter
from trainables.augment import patch_grid
from trainables.losses import cpc_info_nce
from trainables.methods.base import SSLMethod


def grid_stride(patch_size: int) -> int:
    """The step between neighbouring grid patches: half a patch (50% overlap)."""
    return max(1, patch_size // 2)


def grid_rows(image_size: int, patch_size: int) -> int:
    """Rows of the patch grid on a square image of ``image_size`` pixels."""
    if patch_size > image_size:
        return 0
    return (image_size - patch_size) // grid_stride(patch_size) + 1


def first_target_offset(patch_size: int) -> int:
    """Rows from a context row i to the first row that shares no pixel with rows <= i:
    row i covers pixel rows up to ``i * stride + patch_size``, row i + o starts at
    ``(i + o) * stride``, so o is the smallest with ``o * stride >= patch_size``."""
    return -(-patch_size // grid_stride(patch_size))


class PatchGridEncoder(nn.Module):
    """Images to the (N, D, rows, cols) grid of their patch encodings; ``forward`` gives
    the grid's mean, the representation CPC evaluates."""

    def __init__(self, encoder: nn.Module, patch_size: int) -> None:
        super().__init__()
        self.encoder = encoder
        self.patch_size = patch_size

    def encode_grid(self, x: Tensor) -> Tensor:
        patches = patch_grid(x, self.patch_size, grid_stride(self.patch_size))
        n, rows, cols = patches.shape[:3]
        z = self.encoder(patches.reshape(n * rows * cols, *patches.shape[3:]))
        return z.view(n, rows, cols, -1).permute(0, 3, 1, 2)

    def forward(self, x: Tensor) -> Tensor:
        return self.encode_grid(x).mean(dim=(2, 3))


class MaskedConvContext(nn.Module):
    """Residual (2 x 3) convolutions padded only from above: the output at row i depends
    on grid rows <= i (any column), never on the rows it will be asked to predict."""

    def __init__(self, dim: int, layers: int) -> None:
        super().__init__()
        self.convs = nn.ModuleList(nn.Conv2d(dim, dim, (2, 3)) for _ in range(layers))

    def forward(self, z: Tensor) -> Tensor:
        c = z
        for conv in self.convs:
            c = c + F.relu(conv(F.pad(c, (1, 1, 1, 0))))
        return c


class CPC(SSLMethod):
    name = "cpc"
    source = "001_a60f3e13f8331ac6.txt (InfoNCE loss of Contrastive Predictive Coding)"
    num_views = 1
    hyperparameters = MappingProxyType({
        "temperature": Hyperparameter(
            "float", 0.1, "InfoNCE temperature tau", low=0.0, low_open=True
        ),
        "pred_steps": Hyperparameter(
            "int", 2, "rows predicted, from the first sharing no pixel with the context "
            "(one linear W_k per k)", low=1
        ),
        "patch_size": Hyperparameter(
            "int", 8, "side of a grid patch in pixels (stride: half of it)", low=2
        ),
        "context_layers": Hyperparameter(
            "int", 2, "masked convolutions in the context network", low=1
        ),
    })
    image_parameters = ("patch_size", "pred_steps")

    @classmethod
    def check_image_size(cls, values: Mapping[str, Any], image_size: int) -> None:
        size, steps = values["patch_size"], values["pred_steps"]
        rows, offset = grid_rows(image_size, size), first_target_offset(size)
        if rows < offset + steps:
            raise ValueError(
                f"pred_steps and patch_size: predicting {steps} row(s) with {size}-pixel "
                f"patches needs a grid of at least {offset + steps} rows (targets start "
                f"{offset} rows below their context: nearer rows share pixels with it), "
                f"but {image_size}-pixel images give {rows}"
            )

    def build(self) -> None:
        dim = self.feature_dim
        self.context = MaskedConvContext(dim, self.values["context_layers"])
        self.predictors = nn.ModuleList(
            nn.Conv2d(dim, dim, 1) for _ in range(self.values["pred_steps"])
        )

    def representation(self, depth: int | None = None) -> nn.Module:
        return PatchGridEncoder(super().representation(depth), self.values["patch_size"])

    def forward(self, views: Sequence[Tensor]) -> Tensor:
        z = PatchGridEncoder(self.encoder, self.values["patch_size"]).encode_grid(views[0])
        n, dim, rows, cols = z.shape
        first = first_target_offset(self.values["patch_size"])
        context = self.context(z)
        # Candidates: every patch of the global batch, row-major per image; this worker's
        # images start at rank * n in the gathered order.
        candidates = self.comm.gather(z.permute(0, 2, 3, 1).reshape(-1, dim))
        index = torch.arange(n * rows * cols, device=z.device).view(n, rows, cols)
        index = index + self.comm.rank * n * rows * cols
        losses = []
        for offset, predictor in enumerate(self.predictors, start=first):
            predictions = predictor(context[:, :, : rows - offset, :]).permute(0, 2, 3, 1)
            targets = index[:, offset:, :]
            losses.append(cpc_info_nce(
                predictions.reshape(-1, dim), candidates, targets.reshape(-1),
                self.values["temperature"],
            ))
        return torch.stack(losses).mean()
