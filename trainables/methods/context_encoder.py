"""Context encoder: inpaint a hidden region, judged by L2 and by a discriminator.

Source: ../shared/seeds/001_a60f3e13f8331ac6.txt ("Context Encoder", after Pathak et
al., 2016): total loss ``L = lambda_rec L_rec + lambda_adv L_adv`` with the masked
reconstruction loss ``L_rec(x) = ||M (x - F((1 - M) x))||_2^2`` (M = 1 on the hidden
region) and the adversarial loss
``L_adv = max_D E[log D(x) + log(1 - D(F((1 - M) x)))]``. Here F is the study's encoder
followed by a transposed-convolution decoder; the masked sum is divided by the number of
masked elements (a constant factor, so that ``lambda_rec`` does not depend on the image
size). The min-max is trained with one optimiser through a gradient reversal: the
discriminator descends its loss, the encoder-decoder ascends it. ``lambda_adv = 0``
drops the discriminator. What the discriminator judges as generated is, as in Pathak et
al., the prediction of the hidden region only: the real image with the masked pixels
replaced by the decoder's output. Judging the whole decoded image would let it win on
context pixels that no loss asks the decoder to reproduce, and push the decoder's
adversarial gradient into them. The region is the central square (``mask: central``) or
``mask_blocks`` squares at random places (``random_blocks``), of side ``mask_fraction``
of the image; the hidden pixels are filled with the dataset's mean colour, so the
encoder never sees them.
"""

from __future__ import annotations

from collections.abc import Sequence
from types import MappingProxyType

import torch
from torch import Tensor

from search_spaces import Hyperparameter
from trainables.augment import MASK_KINDS, AugmentationPolicy, augment, region_mask
from trainables.heads import ConvDecoder, image_discriminator, reverse_gradient
from trainables.losses import discriminator_loss, reconstruction_loss
from trainables.methods.base import SSLMethod


class ContextEncoder(SSLMethod):
    name = "context_encoder"
    source = "001_a60f3e13f8331ac6.txt (Context Encoder: L_rec, L_adv, lambda weights)"
    hyperparameters = MappingProxyType({
        "mask": Hyperparameter("choice", "central", "which region is hidden", choices=MASK_KINDS),
        "mask_fraction": Hyperparameter("float", 0.5, "side of a hidden square / image side",
                                        0.0, 1.0, low_open=True, high_open=True),
        "mask_blocks": Hyperparameter("int", 3, "squares hidden with mask: random_blocks", low=1),
        "lambda_rec": Hyperparameter("float", 0.999, "weight of the masked L2 loss", low=0.0),
        "lambda_adv": Hyperparameter("float", 0.001, "weight of the adversarial loss (0: none)",
                                     low=0.0),
    })

    def build(self) -> None:
        channels = self.encoder.normalize.mean.shape[1]
        self.decoder = ConvDecoder(self.encoder.channels[-1], channels)
        if self.values["lambda_adv"] > 0:
            self.discriminator = image_discriminator(channels)

    def make_views(
        self, batch: Tensor, policy: AugmentationPolicy, generator: torch.Generator
    ) -> list[Tensor]:
        x = augment(batch, policy, generator)
        mask = region_mask(x.shape[0], x.shape[2], self.values["mask"],
                           self.values["mask_fraction"], generator, x.device,
                           self.values["mask_blocks"])
        return [x, mask]

    def forward(self, views: Sequence[Tensor]) -> Tensor:
        x, mask = views
        fill = self.encoder.normalize.mean  # the mean colour: zero after normalisation
        hidden = x * (1 - mask) + fill * mask
        logits = self.decoder(self.encoder.feature_maps(hidden)[-1], tuple(x.shape[2:]))
        loss = self.values["lambda_rec"] * reconstruction_loss(logits, x, "mse", mask)
        if self.values["lambda_adv"] > 0:
            generated = x * (1 - mask) + reverse_gradient(torch.sigmoid(logits)) * mask
            loss = loss + self.values["lambda_adv"] * discriminator_loss(
                self.discriminator(x), self.discriminator(generated)
            )
        return loss
