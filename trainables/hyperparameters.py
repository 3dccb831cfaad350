"""A trial's hyperparameters: the loop's own (shared by every method) plus the method's,
declared, then resolved once at a trial's entry point into :class:`Hyperparameters`.

Declaring is :class:`search_spaces.Hyperparameter`; checking is
:func:`search_spaces.resolve_hyperparameters`, then the method's ``constraints`` between
values, here and nowhere else. Everything below the entry point (the
loop, the methods) receives typed, checked values and never resolves again.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from types import MappingProxyType
from typing import Any

from search_spaces import Hyperparameter, resolve_hyperparameters
from trainables.methods import method_class

#: Hyperparameters of the generic training loop, shared by every method.
TRAINING_HYPERPARAMETERS: Mapping[str, Hyperparameter] = MappingProxyType({
    "lr": Hyperparameter(
        "float", 1e-3, "peak learning rate of the cosine schedule", low=0.0, low_open=True
    ),
    "weight_decay": Hyperparameter(
        "float", 1e-5, "weight decay: decoupled (adamw), added to the gradient (sgd, lars; "
        "lars leaves biases and normalisation out)", low=0.0,
    ),
    "batch_size": Hyperparameter("int", 256, "images per optimisation step (before views)",
                                 low=2),
    "aug_strength": Hyperparameter(
        "float", 0.5, "SimCLR-style augmentation strength s (colour jitter 0.8s; the crop "
        "too unless crop_scale is set)", 0.0, 1.0
    ),
    "crop_scale": Hyperparameter(
        "float", 0.0, "smallest random crop, as a fraction of the image's area (SimCLR: "
        "0.08); 0 lets it follow aug_strength (1 - 0.8s)", 0.0, 1.0
    ),
})


@dataclass(frozen=True)
class TrainingHyperparameters:
    """The loop's hyperparameter values (the keys of ``TRAINING_HYPERPARAMETERS``)."""

    lr: float
    weight_decay: float
    batch_size: int
    aug_strength: float
    crop_scale: float = 0.0


@dataclass(frozen=True)
class Hyperparameters:
    """Every hyperparameter value of one trial, checked against its domain: what the
    loop uses and what the method uses. Plain data, so it ships to Ray workers."""

    training: TrainingHyperparameters
    method: Mapping[str, Any]

    def as_dict(self) -> dict[str, Any]:
        """All values under their plain names, as a run records them."""
        return {**asdict(self.training), **self.method}


def declared_hyperparameters(method: str) -> dict[str, Hyperparameter]:
    """Every hyperparameter a trial of ``method`` accepts: the loop's and the method's."""
    return {**TRAINING_HYPERPARAMETERS, **method_class(method).hyperparameters}


def resolve_trial(method: str, given: Mapping[str, Any]) -> Hyperparameters:
    """Check ``given`` (the rest from the declared defaults) and split it into the loop's
    values and the method's; raises ValueError naming the first bad hyperparameter, or
    both hyperparameters of the first constraint the values break."""
    values = resolve_hyperparameters(declared_hyperparameters(method), given, owner=method)
    for constraint in method_class(method).constraints:
        constraint.check(values)
    training = TrainingHyperparameters(**{k: values[k] for k in TRAINING_HYPERPARAMETERS})
    own = {k: v for k, v in values.items() if k not in TRAINING_HYPERPARAMETERS}
    return Hyperparameters(training, MappingProxyType(own))
