"""AET: auto-encoding transformations rather than data.

Source: ../shared/seeds/004_e6ad71d192551e5a.txt, section 3 (after Zhang et al., 2019):
sample a transformation tau from a parametrised family, encode the image and its
transform, ``z1 = ENC(x)``, ``z2 = ENC(tau(x))``, decode the concatenation ``[z1, z2]``
to the transformation's parameters, and minimise ``||theta_hat - theta||_2^2``. The
family is affine (the source's experiments: rotation, scale, shear, translation; the 6
entries of the 2x3 matrix are predicted) or projective (the 8 free entries of the
normalised 3x3 homography). ``magnitude`` scales every range of the family and is the
method's analogue of augmentation strength.
"""

from __future__ import annotations

from collections.abc import Sequence
from types import MappingProxyType

import torch
from torch import Tensor

from search_spaces import Hyperparameter
from trainables.augment import AugmentationPolicy, augment, random_homographies, warp
from trainables.heads import classifier_mlp
from trainables.losses import transformation_regression
from trainables.methods.base import SSLMethod


class AET(SSLMethod):
    name = "aet"
    source = "004_e6ad71d192551e5a.txt (section 3, Auto-Encoding Transformations)"
    hyperparameters = MappingProxyType({
        "transform": Hyperparameter("choice", "affine", "transformation family",
                                    choices=("affine", "projective")),
        "magnitude": Hyperparameter("float", 1.0, "scale of every transformation range", 0.0, 1.0,
                                    low_open=True),
        "decoder_hidden_dim": Hyperparameter("int", 256, "hidden width of the parameter decoder",
                                             low=1),
    })

    def build(self) -> None:
        self.num_params = 8 if self.values["transform"] == "projective" else 6
        self.decoder = classifier_mlp(
            2 * self.feature_dim, self.values["decoder_hidden_dim"], self.num_params
        )

    def make_views(
        self, batch: Tensor, policy: AugmentationPolicy, generator: torch.Generator
    ) -> list[Tensor]:
        x = augment(batch, policy, generator)
        matrices = random_homographies(x.shape[0], self.values["magnitude"],
                                       self.values["transform"] == "projective",
                                       generator, x.device)
        return [x, warp(x, matrices), matrices.flatten(1)[:, : self.num_params]]

    def forward(self, views: Sequence[Tensor]) -> Tensor:
        x, transformed, params = views
        # One encoder pass for both, so BatchNorm sees originals and transforms together.
        z1, z2 = self.encoder(torch.cat([x, transformed])).chunk(2)
        return transformation_regression(self.decoder(torch.cat([z1, z2], dim=1)), params)
