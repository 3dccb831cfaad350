"""SimCLR: two augmented views, a projection MLP and the NT-Xent loss.

Source: ../shared/seeds/001_a60f3e13f8331ac6.txt (Algorithm 1): draw two augmentations
t, t' per image, h = f(t(x)), z = g(h), minimise NT-Xent over the 2N projections of the
batch with temperature tau, and keep f for downstream use. The batch-size behaviour
compared in ../shared/seeds/003_c80d734d47a8bbd6.txt (large batches help SimCLR) is what
the default search space probes.
"""

from __future__ import annotations

from collections.abc import Sequence
from types import MappingProxyType

import torch
from torch import Tensor

from search_spaces import Hyperparameter
from trainables.heads import projection_mlp
from trainables.losses import nt_xent
from trainables.methods.base import SSLMethod


class SimCLR(SSLMethod):
    name = "simclr"
    source = "001_a60f3e13f8331ac6.txt (Algorithm 1, NT-Xent)"
    hyperparameters = MappingProxyType({
        "temperature": Hyperparameter(
            "float", 0.2, "NT-Xent temperature tau", low=0.0, low_open=True
        ),
        "proj_hidden_dim": Hyperparameter("int", 512, "hidden width of the projection MLP", low=1),
        "proj_dim": Hyperparameter("int", 128, "output width of the projection MLP", low=1),
    })

    def build(self) -> None:
        self.projector = projection_mlp(
            self.feature_dim, self.values["proj_hidden_dim"], self.values["proj_dim"]
        )

    def forward(self, views: Sequence[Tensor]) -> Tensor:
        # Both views go through the encoder as one batch: BatchNorm then normalises
        # positives and negatives with the same statistics and cannot tell them apart.
        z = self.projector(self.encoder(torch.cat(list(views))))
        z1, z2 = z.chunk(2)
        # Negatives come from every worker: the gathered batch is the global batch, and the
        # gather carries gradients back to the worker that produced each projection.
        return nt_xent(self.comm.gather(z1), self.comm.gather(z2), self.values["temperature"])
