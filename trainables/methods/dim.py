"""Deep InfoMax: maximise mutual information between local features and the global vector.

Source: ../shared/seeds/004_e6ad71d192551e5a.txt, section 2 (after Hjelm et al., ICLR
2019). The encoder gives a local feature map ``C(x)`` (the output of stage
``local_layer``), which a learned transformation summarises into the global vector
``E(x) = (C o f)(x)``: here a linear layer (``global_dim`` wide, the vector's "limited
capacity" the source credits for the local term's success) on the pooled last stage.
The linear layer matters for prior matching: the pooled stage comes after a ReLU, so its
sigmoid would lie in [0.5, 1) and never match a uniform prior on [0, 1], leaving a
discriminator that always wins. As the source evaluates it, the representation that is
evaluated stays the encoder's pooled features. A critic ``T`` scores (feature, global
vector) pairs; pairs from the same image are samples of the joint, pairs across images
of the product of marginals, and a lower bound on their mutual information is maximised:

- global term (weight ``alpha``): the whole feature map (pooled to 4x4 and flattened)
  against ``E(x)``;
- local term (weight ``beta``): every location ``C_i(x)`` against ``E(x)``, averaged over
  locations, the ``1/n^2 sum_i I(C_i(x), E(x))`` of the source;
- prior matching (weight ``gamma``, 0 disables): a discriminator tells ``sigmoid(E(x))``
  from samples of a uniform prior and the encoder learns to fool it (gradient reversal).

The critic is linear, as in the source's implementation ("T_omega is a simple linear
transformation"): each side is mapped linearly to ``critic_dim`` and scores are dot
products. The bound is the hyperparameter ``estimator``: Jensen-Shannon, Donsker-Varadhan
or InfoNCE (see ``trainables.losses.infomax_bound``). Negatives come from the whole
data-parallel batch: every worker scores the gathered batch, which for the
Donsker-Varadhan bound (a log of a mean over all negatives) is the only exact way.
"""

from __future__ import annotations

from collections.abc import Sequence
from types import MappingProxyType

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from search_spaces import Hyperparameter
from trainables.backbones import pool
from trainables.heads import discriminator_mlp, reverse_gradient
from trainables.losses import MI_ESTIMATORS, discriminator_loss, infomax_bound
from trainables.methods.base import SSLMethod

_GLOBAL_GRID = 4


class DeepInfoMax(SSLMethod):
    name = "dim"
    source = "004_e6ad71d192551e5a.txt (section 2, Deep InfoMax)"
    num_views = 1
    hyperparameters = MappingProxyType({
        "estimator": Hyperparameter(
            "choice", "jsd", "mutual-information bound", choices=MI_ESTIMATORS
        ),
        "alpha": Hyperparameter("float", 0.5, "weight of the global MI term", low=0.0),
        "beta": Hyperparameter("float", 1.0, "weight of the local MI term", low=0.0),
        "gamma": Hyperparameter("float", 0.1, "weight of prior matching (0 disables it)", low=0.0),
        "local_layer": Hyperparameter(
            "int", 3, "encoder stage (1-based) whose feature map is the local map", low=1
        ),
        "critic_dim": Hyperparameter("int", 64, "width of the linear critic's embedding", low=1),
        "global_dim": Hyperparameter("int", 64, "width of the global vector E(x)", low=1),
    })

    def build(self) -> None:
        hp = self.values
        if hp["alpha"] == 0 and hp["beta"] == 0:
            raise ValueError("alpha and beta: at least one must be > 0 (no MI term is left)")
        if hp["local_layer"] > len(self.encoder.stages):
            raise ValueError(f"local_layer: got {hp['local_layer']}, the backbone has "
                             f"{len(self.encoder.stages)} stages")
        local_channels = self.encoder.channels[hp["local_layer"] - 1]
        dim, global_dim = hp["critic_dim"], hp["global_dim"]
        self.global_layer = nn.Linear(self.feature_dim, global_dim)
        # Only the terms in use get parameters: data-parallel training requires every
        # parameter to receive a gradient.
        if hp["alpha"] > 0:
            self.global_map_critic = nn.Linear(local_channels * _GLOBAL_GRID**2, dim)
            self.global_vector_critic = nn.Linear(global_dim, dim)
        if hp["beta"] > 0:
            self.local_map_critic = nn.Conv2d(local_channels, dim, 1)
            self.local_vector_critic = nn.Linear(global_dim, dim)
        if hp["gamma"] > 0:
            self.discriminator = discriminator_mlp(global_dim, 256)

    def forward(self, views: Sequence[Tensor]) -> Tensor:
        hp = self.values
        maps = self.encoder.feature_maps(views[0])
        local_map = maps[hp["local_layer"] - 1]
        global_vector = self.global_layer(pool(maps[-1]))  # E(x)
        everyone_map = self.comm.gather(local_map)
        everyone_vector = self.comm.gather(global_vector)
        images = torch.arange(everyone_vector.shape[0], device=global_vector.device)
        loss = torch.zeros((), device=global_vector.device)
        if hp["alpha"] > 0:
            flat = F.adaptive_avg_pool2d(everyone_map, _GLOBAL_GRID).flatten(1)
            scores = self.global_vector_critic(everyone_vector) @ self.global_map_critic(flat).T
            loss = loss - hp["alpha"] * infomax_bound(scores[:, :, None], images, hp["estimator"])
        if hp["beta"] > 0:
            local = self.local_map_critic(everyone_map).flatten(2)  # M, k, L
            vector = self.local_vector_critic(everyone_vector)  # M, k
            scores = torch.einsum("nk,mkl->nml", vector, local)
            loss = loss - hp["beta"] * infomax_bound(scores, images, hp["estimator"])
        if hp["gamma"] > 0:
            encoded = reverse_gradient(torch.sigmoid(global_vector))
            prior = torch.rand_like(global_vector)
            loss = loss + hp["gamma"] * discriminator_loss(
                self.discriminator(prior), self.discriminator(encoded)
            )
        return loss
