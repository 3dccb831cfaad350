"""RotNet: recognise which rotation was applied to an image.

Source: ../shared/seeds/003_c80d734d47a8bbd6.txt ("RotNet pre-training"): every image of
a batch appears under all four rotations (0, 90, 180, 270 degrees), so a batch of N
images holds 4N examples, and a 4-way classifier on the encoder's output is trained
with cross entropy against the applied rotation. Two (0, 180) and eight (multiples of 45)
rotations are options; the 45-degree turns are resampled, and their slight blur tells
them from the exact quarter turns (``augment.rotations``), so with eight a part of the
task can be solved without the content. The source evaluates RotNet with a non-linear
head, which is why the platform offers the MLP probe (``train.mlp_probe``) and
evaluation from an intermediate block (``train.eval_layer``); RotNet's last-block
features are specialised to the rotation task.
"""

from __future__ import annotations

from collections.abc import Sequence
from types import MappingProxyType

import torch
from torch import Tensor

from search_spaces import Hyperparameter
from trainables.augment import AugmentationPolicy, augment, rotations
from trainables.heads import classifier_mlp
from trainables.losses import pretext_classification
from trainables.methods.base import SSLMethod


class RotNet(SSLMethod):
    name = "rotnet"
    source = "003_c80d734d47a8bbd6.txt (RotNet pre-training)"
    #: "For RotNet we use a nonlinear head" (the source's linear evaluation).
    finetune_head = "mlp"
    hyperparameters = MappingProxyType({
        "num_rotations": Hyperparameter("choice", 4, "rotations per image: 2, 4 or 8",
                                        choices=(2, 4, 8)),
        "head_hidden_dim": Hyperparameter(
            "int", 256, "hidden width of the rotation classifier", low=1
        ),
    })

    def build(self) -> None:
        self.classifier = classifier_mlp(
            self.feature_dim, self.values["head_hidden_dim"], self.values["num_rotations"]
        )

    def make_views(
        self, batch: Tensor, policy: AugmentationPolicy, generator: torch.Generator
    ) -> list[Tensor]:
        return [rotations(augment(batch, policy, generator), self.values["num_rotations"])]

    def forward(self, views: Sequence[Tensor]) -> Tensor:
        rotated = views[0]
        count = self.values["num_rotations"]
        # Rotation-major layout: the label is the block an example sits in.
        labels = torch.arange(count, device=rotated.device).repeat_interleave(
            rotated.shape[0] // count
        )
        return pretext_classification(self.classifier(self.encoder(rotated)), labels)
