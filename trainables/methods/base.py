"""The contract between a method and the generic training loop.

A method is an ``nn.Module`` that owns the encoder and whatever heads, momentum copies or
queues it needs, and turns a list of augmented views into a scalar loss. It knows nothing
of Ray, MLflow, optimisers or data loading; the loop knows nothing of the method beyond
this contract. It receives its hyperparameter values already resolved and checked
(``trainables.hyperparameters``), where the relations it declares between them
(``constraints``) are checked too, and never checks them again.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import torch
from torch import Tensor, nn

from search_spaces import AtLeast, Hyperparameter
from trainables.augment import AugmentationPolicy, augment
from trainables.backbones import Encoder, Pooling, StageFeatures, check_depth
from trainables.distributed import LOCAL, Collective

if TYPE_CHECKING:
    from trainables.data import ImageDataset


class SSLMethod(nn.Module, ABC):
    #: Registry name, used in configs, MLflow tags and reports.
    name: ClassVar[str]
    #: The source document the method follows (a file in ../shared/seeds/).
    source: ClassVar[str]
    #: The method's own hyperparameters with their defaults and domains.
    hyperparameters: ClassVar[Mapping[str, Hyperparameter]]
    #: Relations between the method's hyperparameters that their domains cannot express
    #: one at a time; a trial's values and every search space must keep them.
    constraints: ClassVar[Sequence[AtLeast]] = ()
    #: The hyperparameters (ints or choices) on which ``check_image_size`` depends; a
    #: study checks every combination of them its search space can propose.
    image_parameters: ClassVar[Sequence[str]] = ()
    #: How many augmented views of each image the default ``make_views`` produces.
    num_views: ClassVar[int] = 2
    #: The backbone this method always uses whatever the study's ``train.backbone`` (a
    #: method whose architecture is part of the method), or None.
    backbone: ClassVar[str | None] = None
    #: False when some trainable parameters get no gradient in some steps (layer-wise
    #: training), so that DistributedDataParallel must look for unused parameters.
    uses_all_parameters: ClassVar[bool] = True
    #: How the evaluated stage's feature map becomes a vector: global average pooling, or
    #: the global max for a method whose source embeds that way.
    feature_pooling: ClassVar[Pooling] = "mean"
    #: The head that fine-tuning puts on the representation (``evaluation.finetune.head:
    #: auto``): linear, or an MLP for a method whose source evaluates it with one.
    finetune_head: ClassVar[Literal["linear", "mlp"]] = "linear"

    def __init__(
        self,
        encoder: Encoder,
        feature_dim: int,
        values: Mapping[str, Any],
        comm: Collective = LOCAL,
    ) -> None:
        super().__init__()
        self.encoder = encoder
        self.feature_dim = feature_dim
        #: The method's own hyperparameter values (resolved, checked), by name.
        self.values = dict(values)
        #: The process group a batch spans; losses that use the batch gather through it.
        self.comm = comm
        self.build()

    def build(self) -> None:
        """Create the method's heads and state from ``self.values`` (called once, at the
        end of construction), so that a method declares what it adds, not a constructor."""

    @classmethod
    def encoder_options(cls, values: Mapping[str, Any]) -> dict[str, Any]:
        """Keyword arguments for ``build_encoder`` that depend on the method's values."""
        return {}

    @classmethod
    def check_image_size(cls, values: Mapping[str, Any], image_size: int) -> None:
        """Raise ValueError naming the hyperparameters if ``values`` cannot work on square
        images of ``image_size`` pixels (a patch grid too small for what it must hold);
        by default any values work on any size."""

    def make_views(
        self, batch: Tensor, policy: AugmentationPolicy, generator: torch.Generator
    ) -> list[Tensor]:
        """The inputs of one step from a uint8 batch, made on the training device without
        gradient: by default ``num_views`` independent augmentations of every image.
        Methods that contrast patches cut them here, from an augmented view."""
        return [augment(batch, policy, generator) for _ in range(self.num_views)]

    def begin_epoch(self, epoch: int, epochs: int) -> None:
        """Called by the loop before every epoch (1-based) of ``epochs``, also after a
        resume; methods with a schedule of their own (layer-wise training) follow it."""

    def trained_depth(self) -> int:
        """The deepest encoder stage (1-based) that training has reached so far: by
        default all of them, since training is end to end. A method that trains its stages
        one after the other returns the stage in training, so that evaluation (the early
        rungs of a scheduler, the early budgets of an analysis) never reads features
        through a stage still at its random initialisation."""
        return len(self.encoder.stages)

    def representation(self, depth: int | None = None) -> nn.Module:
        """The module whose output is evaluated: images in [0, 1] to feature vectors,
        from the encoder's stage ``depth`` (1-based) or, by default, its last, but never
        deeper than ``trained_depth()``, pooled by ``feature_pooling``."""
        stages = len(self.encoder.stages)
        if depth is not None:
            check_depth(self.encoder, depth)
        depth = min(stages if depth is None else depth, self.trained_depth())
        if depth == stages and self.feature_pooling == "mean":
            return self.encoder
        return StageFeatures(self.encoder, depth, self.feature_pooling)

    def extra_evaluation(self, dataset: ImageDataset, device: torch.device) -> dict[str, float]:
        """Method-specific metrics computed once, after the last epoch (rank 0 only)."""
        return {}

    def artifacts(self) -> dict[str, bytes]:
        """Files (relative path to content) logged to the trial's run after the last epoch."""
        return {}

    @abstractmethod
    def forward(self, views: Sequence[Tensor]) -> Tensor:
        """Return the scalar training loss for one batch of views."""
