"""Layer-wise patch triplets: one convolution + max-pool at a time, trained on patches.

Source: ../shared/seeds/000_a0c2eea34e4d74c8.txt (Zhao, "Layer-wise contrastive
unsupervised representation learning"), section 3. Adjacent, overlapping patches are
drawn from a larger patch of one image and pass through a single convolutional layer
followed by max-pooling; a triplet loss with cosine or Euclidean distance pulls the two
together and pushes a patch of another image away. The smallest patch that fills the
layer's pooling window is used (7x7 for 6x6 filters with 2x2 pooling, which the paper
found as good as larger ones); ``patch_margin`` enlarges it, and the embedding is then
max-pooled over what remains. The next layer is trained the same way on top of the
frozen first: the epochs are split evenly between the ``layers``.

Evaluation reads what training has built so far, embedded as training embeds: through
the layers up to the one in training (``trained_depth``; a deeper layer is still at its
random initialisation, and scoring it would make a trial's early rungs and budgets
measure noise), max-pooled over the whole image (``feature_pooling``), the source's
pooling, which it finds essential for translation invariance. A study's
``train.eval_layer`` can ask for a shallower layer, never for an untrained one.

Negatives are patches of other images of the (global) batch: a random one, or the
semi-hard one (closest while farther than the positive). The paper's transfer protocol
runs after the last epoch: the learned layers are placed in a small classifier (2
convolutional + 2 fully connected layers) trained on the labelled split, frozen or
fine-tuned, against the same classifier from random initialisation. The first-layer
filters are logged as an image grid (the paper's Figure 1).
"""

from __future__ import annotations

import copy
import io
from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from search_spaces import Hyperparameter
from trainables.augment import AugmentationPolicy, augment, crop_at, random_offsets
from trainables.backbones import conv_pool_layer, pool
from trainables.evaluation import supervised_accuracy
from trainables.losses import TRIPLET_DISTANCES, semi_hard_negatives, triplet_margin
from trainables.methods.base import SSLMethod

if TYPE_CHECKING:
    from trainables.data import ImageDataset

#: Filter sizes of the two layers: 6x6 first-layer filters as in the paper, then 3x3.
KERNELS = (6, 3)
#: Hidden width of the transfer classifier's first fully connected layer.
TRANSFER_HIDDEN = 128


def minimal_patch(kernels: Sequence[int]) -> int:
    """Smallest input whose last convolution output fills one 2x2 pooling window."""
    size = kernels[-1] + 1
    for kernel in reversed(kernels[:-1]):
        size = 2 * size + kernel - 1
    return size


class PatchTriplet(SSLMethod):
    name = "patch_triplet"
    source = "000_a0c2eea34e4d74c8.txt (section 3)"
    backbone = "layerwise_conv"
    uses_all_parameters = False
    feature_pooling = "max"
    hyperparameters = MappingProxyType({
        "layers": Hyperparameter("int", 2, "conv + max-pool layers trained one after the other",
                                 low=1, high=len(KERNELS)),
        "filters1": Hyperparameter("int", 32, "filters of the first (6x6) layer", low=1),
        "filters2": Hyperparameter("int", 64, "filters of the second (3x3) layer", low=1),
        "distance": Hyperparameter(
            "choice", "cosine", "triplet distance", choices=TRIPLET_DISTANCES
        ),
        "margin": Hyperparameter("float", 0.5, "triplet margin", low=0.0),
        "mining": Hyperparameter("choice", "random", "negative selection",
                                 choices=("random", "semi_hard")),
        "patch_margin": Hyperparameter("int", 0, "pixels added to the minimal patch side", low=0),
        "max_shift": Hyperparameter("int", 2, "largest offset (pixels) between the two patches",
                                    low=1),
        "transfer_epochs": Hyperparameter(
            "int", 4, "epochs of the transfer classifiers after pretraining (0 skips them)",
            low=0,
        ),
    })

    image_parameters = ("layers", "patch_margin", "max_shift")

    @classmethod
    def check_image_size(cls, values: Mapping[str, Any], image_size: int) -> None:
        layers, margin, shift = (values[k] for k in ("layers", "patch_margin", "max_shift"))
        # The last layer trains on the largest patches.
        minimal = minimal_patch(KERNELS[:layers])
        region = minimal + margin + shift
        if region > image_size:
            raise ValueError(
                f"layers, patch_margin and max_shift: layer {layers}'s patches and their "
                f"shift need {region} pixels (minimal patch {minimal} + patch_margin "
                f"{margin} + max_shift {shift}), more than the {image_size}-pixel images"
            )

    @classmethod
    def encoder_options(cls, values: Mapping[str, Any]) -> dict[str, Any]:
        layers = values["layers"]
        return {"filters": (values["filters1"], values["filters2"])[:layers],
                "kernels": KERNELS[:layers]}

    def build(self) -> None:
        self.active_layer = 1

    def begin_epoch(self, epoch: int, epochs: int) -> None:
        layers = self.values["layers"]
        if epochs < layers:
            raise ValueError(f"layers {layers} needs at least {layers} epochs, got {epochs}")
        self.active_layer = min(layers, (epoch - 1) * layers // epochs + 1)
        for index, stage in enumerate(self.encoder.stages, start=1):
            stage.requires_grad_(index >= self.active_layer)

    def trained_depth(self) -> int:
        return self.active_layer

    def patch_size(self) -> int:
        return minimal_patch(KERNELS[: self.active_layer]) + self.values["patch_margin"]

    def make_views(
        self, batch: Tensor, policy: AugmentationPolicy, generator: torch.Generator
    ) -> list[Tensor]:
        """Anchor and positive: two distinct offsets inside one (patch + max_shift) region."""
        x = augment(batch, policy, generator)
        size, shift = self.patch_size(), self.values["max_shift"]
        n, device = x.shape[0], x.device
        top, left = random_offsets(n, x.shape[2] - size - shift, generator, device)
        cells = (shift + 1) ** 2
        first = torch.randint(0, cells, (n,), generator=generator, device=device)
        second = (first + torch.randint(1, cells, (n,), generator=generator, device=device)) % cells
        return [crop_at(x, top + cell // (shift + 1), left + cell % (shift + 1), size)
                for cell in (first, second)]

    def embed(self, patches: Tensor) -> Tensor:
        """Frozen layers run without gradient; the active layer's output is max-pooled."""
        h = self.encoder.normalize(patches)
        with torch.no_grad():
            for stage in self.encoder.stages[: self.active_layer - 1]:
                h = stage(h)
        return pool(self.encoder.stages[self.active_layer - 1](h), self.feature_pooling)

    def forward(self, views: Sequence[Tensor]) -> Tensor:
        anchors, positives = (self.embed(v) for v in views)
        candidates = self.comm.gather(positives)
        n, total = anchors.shape[0], candidates.shape[0]
        own = torch.arange(n, device=anchors.device) + self.comm.rank * n
        distance = self.values["distance"]
        if self.values["mining"] == "semi_hard":
            chosen = semi_hard_negatives(anchors, candidates, own, distance)
        else:
            # Drawn for the global batch on rank 0 so every worker agrees.
            shift = self.comm.broadcast(torch.randint(1, total, (total,), device=anchors.device))
            chosen = (own + self.comm.local_slice(shift)) % total
        return triplet_margin(anchors, positives, candidates[chosen],
                              self.values["margin"], distance)

    def transfer_classifier(self, image_shape: Sequence[int], num_classes: int,
                            pretrained: bool) -> nn.Sequential:
        """The paper's small classifier: 2 conv + max-pool layers, then 2 fully connected
        layers; the first ``layers`` conv layers are copies of the learned ones when
        ``pretrained``, every other layer starts from random initialisation."""
        filters = (self.values["filters1"], self.values["filters2"])
        convs: list[nn.Module] = []
        for index, (c_in, c_out, kernel) in enumerate(
            zip((image_shape[0], filters[0]), filters, KERNELS, strict=True)
        ):
            learned = pretrained and index < len(self.encoder.stages)
            convs.append(copy.deepcopy(self.encoder.stages[index]) if learned
                         else conv_pool_layer(c_in, c_out, kernel))
        # On the training device, where the learned copies already are.
        device = next(self.encoder.parameters()).device
        body = nn.Sequential(copy.deepcopy(self.encoder.normalize), *convs,
                             nn.Flatten()).to(device)
        with torch.no_grad():
            flat = body(torch.zeros(1, *image_shape, device=device)).shape[1]
        classifier = nn.Sequential(*body, nn.Linear(flat, TRANSFER_HIDDEN),
                                   nn.ReLU(inplace=True), nn.Linear(TRANSFER_HIDDEN, num_classes))
        classifier.to(device)
        # The copies may carry the pretraining's freezing; the caller decides what trains.
        return classifier.requires_grad_(True)

    def extra_evaluation(self, dataset: ImageDataset, device: torch.device) -> dict[str, float]:
        epochs = self.values["transfer_epochs"]
        if epochs == 0:
            return {}
        shape = tuple(dataset.train_images.shape[1:])
        learned = len(self.encoder.stages)
        results = {}
        for label, pretrained, frozen in (("random", False, False), ("frozen", True, True),
                                          ("finetune", True, False)):
            # Same initial weights for the layers that are not transferred, whatever
            # the trial's random state, so the three differ only in the transfer.
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(0)
                classifier = self.transfer_classifier(shape, dataset.num_classes, pretrained)
            if frozen:
                for conv in classifier[1 : 1 + learned]:
                    conv.requires_grad_(False)
            results[f"transfer_{label}_acc"] = supervised_accuracy(
                classifier, dataset.train_images, dataset.train_labels,
                dataset.test_images, dataset.test_labels, device, epochs,
            )
        return results

    def artifacts(self) -> dict[str, bytes]:
        import torchvision  # once per trial; see trainables.backbones.cifar_resnet18

        weights = self.encoder.stages[0][0].weight.detach().cpu()
        low = weights.amin(dim=(1, 2, 3), keepdim=True)
        high = weights.amax(dim=(1, 2, 3), keepdim=True)
        tiles = (weights - low) / (high - low).clamp_min(1e-12)
        if tiles.shape[1] not in (1, 3):
            tiles = tiles.mean(dim=1, keepdim=True)
        grid = torchvision.utils.make_grid(tiles, nrow=8, padding=1, pad_value=1.0)
        grid = torch.nn.functional.interpolate(grid[None], scale_factor=8, mode="nearest")[0]
        buffer = io.BytesIO()
        torchvision.utils.save_image(grid, buffer, format="png")
        return {"filters/layer1.png": buffer.getvalue()}
