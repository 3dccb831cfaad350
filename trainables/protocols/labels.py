"""Label subsets: which labelled training images a fine-tuning protocol may use.

../shared/seeds/003_c80d734d47a8bbd6.txt fine-tunes with 1%, 10%, 20% and 100% of the
CIFAR-10 labels; ../shared/seeds/002_a5cbedfbf1372821.txt with 400 labels per class. A
subset is stratified (every class in proportion, at least one image each) and seeded by
the study's seed, not the trial's: every trial of a study, and the supervised baseline,
sees the same images, so differences between them are not differences of labels. Per
class, the subset is a prefix of one seeded permutation, so smaller budgets are nested
in larger ones (the 1% images are among the 10%).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from tracking import schema


@dataclass(frozen=True)
class LabelBudget:
    """A share of each class's labelled images, or a number of them per class."""

    fraction: float | None = None
    per_class: int | None = None

    def __post_init__(self) -> None:
        if (self.fraction is None) == (self.per_class is None):
            raise ValueError("a label budget is a fraction or a number per class, not both")
        if self.fraction is not None and not 0.0 < self.fraction <= 1.0:
            raise ValueError(f"label fraction must be in (0, 1], got {self.fraction}")
        if self.per_class is not None and self.per_class < 1:
            raise ValueError(f"labels per class must be at least 1, got {self.per_class}")

    @property
    def name(self) -> str:
        """How metric names carry the budget: ``10`` (percent) or ``400pc``."""
        return schema.label_budget(self.fraction, self.per_class)

    def count(self, available: int) -> int:
        """Images to take from a class with ``available`` labelled ones."""
        if self.per_class is not None:
            if self.per_class > available:
                raise ValueError(f"{self.per_class} labels per class requested, a class has "
                                 f"only {available}")
            return self.per_class
        assert self.fraction is not None
        return min(available, max(1, round(self.fraction * available)))


def label_subset(
    labels: Tensor, num_classes: int, budget: LabelBudget, seed: int,
    pool: Tensor | None = None,
) -> Tensor:
    """Sorted indices into ``labels`` of the stratified, seeded subset for ``budget``,
    drawn from ``pool`` (indices; all images by default). Classes absent from the pool
    contribute nothing."""
    if pool is None:
        pool = torch.arange(len(labels))
    generator = torch.Generator().manual_seed(seed)
    chosen = []
    for label in range(num_classes):
        members = pool[labels[pool] == label]
        # Drawn for every class, present or not, so each class's permutation depends on
        # the seed and the pool only.
        order = torch.randperm(len(members), generator=generator)
        if len(members):
            chosen.append(members[order[: budget.count(len(members))]])
    return torch.cat(chosen).sort().values if chosen else pool[:0]
