"""Denoising autoencoder: reconstruct the clean image from a corrupted one.

Source: ../shared/seeds/001_a60f3e13f8331ac6.txt ("De-noising AutoEncoder", after
Vincent et al., JMLR 2010): a stacked encoder-decoder gets a noisy input image and must
produce the noise-free image; the loss is cross entropy or MSE. The encoder is the
study's backbone (kept for evaluation), the decoder upsamples its last feature map back
to the image. Corruption type and level are the method's sensitivity analogue of
augmentation strength.
"""

from __future__ import annotations

from collections.abc import Sequence
from types import MappingProxyType

import torch
from torch import Tensor

from search_spaces import Hyperparameter
from trainables.augment import NOISE_KINDS, AugmentationPolicy, augment, corrupt
from trainables.heads import ConvDecoder
from trainables.losses import RECONSTRUCTION_LOSSES, reconstruction_loss
from trainables.methods.base import SSLMethod


class DenoisingAutoencoder(SSLMethod):
    name = "denoising_ae"
    source = "001_a60f3e13f8331ac6.txt (De-noising AutoEncoder)"
    hyperparameters = MappingProxyType({
        "noise": Hyperparameter("choice", "gaussian", "corruption type", choices=NOISE_KINDS),
        "noise_level": Hyperparameter(
            "float", 0.3, "Gaussian std, or fraction of pixels masked / salted", 0.0, 1.0
        ),
        "loss": Hyperparameter(
            "choice", "mse", "reconstruction loss", choices=RECONSTRUCTION_LOSSES
        ),
    })

    def build(self) -> None:
        channels = self.encoder.normalize.mean.shape[1]
        self.decoder = ConvDecoder(self.encoder.channels[-1], channels)

    def make_views(
        self, batch: Tensor, policy: AugmentationPolicy, generator: torch.Generator
    ) -> list[Tensor]:
        clean = augment(batch, policy, generator)
        return [clean, corrupt(clean, self.values["noise"], self.values["noise_level"],
                               generator)]

    def forward(self, views: Sequence[Tensor]) -> Tensor:
        clean, noisy = views
        logits = self.decoder(self.encoder.feature_maps(noisy)[-1], tuple(clean.shape[2:]))
        return reconstruction_loss(logits, clean, self.values["loss"])
