"""MoCo: a momentum key encoder and a FIFO queue of negative keys (v2's MLP by default).

Source: ../shared/seeds/001_a60f3e13f8331ac6.txt ("Algorithm MoCo" and "Loss Function"):
the key encoder follows the query encoder as theta_k <- m theta_k + (1 - m) theta_q, and
each query is contrasted with InfoNCE against its positive key and the K keys of the
dictionary. The source's MoCo "does not employ a MLP at the output": its encoders end in
one linear layer (``projector: linear``, MoCo v1). The v2 form, the default, puts
SimCLR's projection MLP there instead; the choice is a hyperparameter, so a study can
measure what the MLP buys. Following
facebookresearch/moco, the momentum update happens right before keys are computed, keys
are computed without gradient, and the newest keys replace the oldest in the queue after
the loss is formed.

Shuffle BN (MoCo, section 3.3): if a query and its positive key are normalised by
BatchNorm over the same set of images, the statistics leak which key is the positive and
the model "cheats", driving the loss down while features stop improving. MoCo shuffles
the keys across GPUs so each BatchNorm sees a different sub-batch. Here the global batch
is shuffled across workers the same way, and within a worker the batch is split into
``bn_splits`` BatchNorm groups, as the authors' single-GPU CIFAR demo does with its
SplitBatchNorm.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from types import MappingProxyType

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from search_spaces import Hyperparameter
from trainables.heads import projection_mlp
from trainables.losses import info_nce
from trainables.methods.base import SSLMethod


class MoCo(SSLMethod):
    name = "moco"
    source = "001_a60f3e13f8331ac6.txt (momentum update, InfoNCE over a dictionary of keys)"
    hyperparameters = MappingProxyType({
        "temperature": Hyperparameter(
            "float", 0.2, "InfoNCE temperature tau", low=0.0, low_open=True
        ),
        "momentum": Hyperparameter(
            "float", 0.99, "key-encoder momentum m", low=0.0, high=1.0, high_open=True
        ),
        "queue_size": Hyperparameter("int", 4096, "number K of negative keys in the queue", low=1),
        "projector": Hyperparameter(
            "choice", "mlp", "output head: SimCLR's MLP (v2) or one linear layer (v1, the "
            "source's)", choices=("mlp", "linear"),
        ),
        "proj_hidden_dim": Hyperparameter("int", 512, "hidden width of the projection MLP "
                                          "(unused by a linear projector)", low=1),
        "proj_dim": Hyperparameter("int", 128, "output width of the projector", low=1),
        "symmetric": Hyperparameter("bool", False, "also contrast view 2 queries with view 1 keys"),
        "bn_splits": Hyperparameter(
            "int", 4, "shuffle-BN: BatchNorm groups the batch is split into (1 disables)", low=1
        ),
    })

    def build(self) -> None:
        values = self.values
        self.projector = (
            nn.Linear(self.feature_dim, values["proj_dim"]) if values["projector"] == "linear"
            else projection_mlp(self.feature_dim, values["proj_hidden_dim"], values["proj_dim"])
        )
        self.key_encoder = copy.deepcopy(self.encoder).requires_grad_(False)
        self.key_projector = copy.deepcopy(self.projector).requires_grad_(False)
        queue = F.normalize(torch.randn(values["queue_size"], values["proj_dim"]), dim=1)
        self.register_buffer("queue", queue)
        self.register_buffer("queue_ptr", torch.zeros((), dtype=torch.long))

    def _query_params(self) -> list[nn.Parameter]:
        return [*self.encoder.parameters(), *self.projector.parameters()]

    def _key_params(self) -> list[nn.Parameter]:
        return [*self.key_encoder.parameters(), *self.key_projector.parameters()]

    @torch.no_grad()
    def momentum_update(self) -> None:
        m = self.values["momentum"]
        for q_param, k_param in zip(self._query_params(), self._key_params(), strict=True):
            k_param.mul_(m).add_(q_param.detach(), alpha=1.0 - m)

    @torch.no_grad()
    def enqueue(self, keys: Tensor) -> None:
        """Overwrite the oldest entries with ``keys`` (FIFO), wrapping around the end, so any
        batch size works, including a last partial batch."""
        size = self.queue.shape[0]
        keys = keys[-size:]
        slots = (self.queue_ptr + torch.arange(keys.shape[0], device=keys.device)) % size
        self.queue[slots] = keys.to(self.queue.dtype)
        self.queue_ptr.copy_((self.queue_ptr + keys.shape[0]) % size)

    def _split_forward(self, net: nn.Module, x: Tensor) -> Tensor:
        """``net`` applied group by group, so that BatchNorm statistics are per group."""
        groups = min(self.values["bn_splits"], x.shape[0] // 2) or 1
        return torch.cat([net(chunk) for chunk in x.chunk(groups)])

    def _queries(self, view: Tensor) -> Tensor:
        return self._split_forward(nn.Sequential(self.encoder, self.projector), view)

    @torch.no_grad()
    def _keys(self, view: Tensor) -> tuple[Tensor, Tensor]:
        """Keys of this worker's queries and of the global batch, in rank order.

        The global batch is shuffled before the key encoder sees it, so each worker (and
        each BatchNorm group within it) normalises keys of other images than the queries
        it holds; the shuffle is undone afterwards.
        """
        everything = self.comm.gather_no_grad(view)
        order = self.comm.broadcast(torch.randperm(everything.shape[0], device=view.device))
        key_net = nn.Sequential(self.key_encoder, self.key_projector)
        mine = self._split_forward(key_net, self.comm.local_slice(everything[order]))
        shuffled = self.comm.gather_no_grad(mine)
        keys = torch.empty_like(shuffled)
        keys[order] = shuffled
        keys = F.normalize(keys, dim=1)
        return self.comm.local_slice(keys), keys

    def forward(self, views: Sequence[Tensor]) -> Tensor:
        v1, v2 = views
        temperature = self.values["temperature"]
        negatives = self.queue.clone().detach()
        q1 = self._queries(v1)
        with torch.no_grad():
            self.momentum_update()
            k2, all_k2 = self._keys(v2)
        loss = info_nce(q1, k2, negatives, temperature)
        new_keys = all_k2
        if self.values["symmetric"]:
            q2 = self._queries(v2)
            k1, all_k1 = self._keys(v1)
            loss = 0.5 * (loss + info_nce(q2, k1, negatives, temperature))
            new_keys = torch.cat([all_k2, all_k1])
        # Every worker enqueues the keys of the whole global batch, so queues stay equal.
        self.enqueue(new_keys)
        return loss
