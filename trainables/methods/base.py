"""The contract between a method and the generic training loop.

A method is an ``nn.Module`` that owns the encoder and whatever heads, momentum copies or
queues it needs, and turns a list of augmented views into a scalar loss. It knows nothing
of Ray, MLflow, optimisers or data loading; the loop knows nothing of the method beyond
this contract.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from torch import Tensor, nn

from trainables.distributed import LOCAL, Collective
from trainables.hparams import HParam


class SSLMethod(nn.Module, ABC):
    #: Registry name, used in configs, MLflow tags and reports.
    name: ClassVar[str]
    #: The source document the method follows (a file in ../shared/seeds/).
    source: ClassVar[str]
    #: The method's own hyperparameters with their defaults and domains.
    hyperparameters: ClassVar[Mapping[str, HParam]]
    #: How many augmented views of each image the loop produces per step.
    num_views: ClassVar[int] = 2

    def __init__(
        self,
        encoder: nn.Module,
        feature_dim: int,
        hparams: Mapping[str, Any],
        comm: Collective = LOCAL,
    ) -> None:
        super().__init__()
        self.encoder = encoder
        self.feature_dim = feature_dim
        self.hparams = dict(hparams)
        #: The process group a batch spans; losses that use the batch gather through it.
        self.comm = comm
        self.build()

    def build(self) -> None:
        """Create the method's heads and state from ``self.hparams`` (called once, at the
        end of construction), so that a method declares what it adds, not a constructor."""

    @abstractmethod
    def forward(self, views: Sequence[Tensor]) -> Tensor:
        """Return the scalar training loss for one batch of views."""
