"""The source documents' evaluation protocols, beyond kNN and the probes (the config's
``evaluation:`` section), run by the loop on the evaluating rank:

- ``finetune``: fine-tuning with few labels, frozen or unfrozen, and the supervised
  baseline (../shared/seeds/003_c80d734d47a8bbd6.txt, Table 2; the 4,000-label protocol
  of ../shared/seeds/002_a5cbedfbf1372821.txt); ``labels`` draws the label subsets;
- ``pruning``: global iterative magnitude pruning during fine-tuning and low-bit
  quantization (003, Table 2's "prune S% *" rows);
- ``retrieval``: similarity search (../shared/seeds/004_e6ad71d192551e5a.txt);
- ``embedding``: 2-D maps of the representation (003, Figure 2; 004).

Test-split forms (unprefixed metrics, files) are computed at a trial's final evaluation.
When the search optimises a protocol's metric, its validation form (``val_`` prefix:
learnt from the train split's non-validation part, scored on the validation part) is
computed at every evaluation, the one cell and nothing else, since the scheduler needs
it at every rung. Part of the torch core: torch, NumPy, scikit-learn, matplotlib, pandas
and the optional FAISS and umap-learn; nothing above ``trainables``' core.

Every protocol works on copies: the pretrained method is never modified. The global RNG
is forked and reseeded per network, so a protocol's numbers do not depend on which
others run, and pretraining after an evaluation draws what it would have drawn without.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from tracking import schema
from trainables.data import ImageDataset
from trainables.evaluation import classifier_accuracy, extract_features
from trainables.methods.base import SSLMethod
from trainables.protocols.embedding import EmbeddingSettings, embed, map_files
from trainables.protocols.finetune import (
    FinetuneSettings,
    FitSettings,
    HeadKind,
    finetuned,
    frozen_accuracy,
    reinitialised,
)
from trainables.protocols.labels import LabelBudget, label_subset
from trainables.protocols.pruning import PruningSettings, pruned_network
from trainables.protocols.retrieval import (
    RetrievalSettings,
    examples_png,
    retrieval_metrics,
    retrieval_scores,
)

__all__ = [
    "EmbeddingSettings",
    "FinetuneSettings",
    "FitSettings",
    "LabelBudget",
    "ProtocolSettings",
    "PruningSettings",
    "RetrievalSettings",
    "evaluate_protocols",
]


@dataclass(frozen=True)
class ProtocolSettings:
    """Which protocols run (None: not this one), and on which labels."""

    finetune: FinetuneSettings | None = None
    pruning: PruningSettings | None = None
    retrieval: RetrievalSettings | None = None
    embedding: EmbeddingSettings | None = None
    #: Seed of the label subsets and of the embedded points: the study's, so that every
    #: trial (whatever its own seed) and the baseline use the same images.
    subset_seed: int = 0
    #: The search objective when it is a protocol metric (its plain name): its
    #: validation form is computed at every evaluation.
    objective: str | None = None


@dataclass(frozen=True)
class _Split:
    """Where a protocol learns and where it is scored: ``pool`` indexes the labelled
    train split images it may learn from; ``queries`` the train-split images it is scored
    on, or None for the test split."""

    prefix: str
    pool: Tensor
    queries: Tensor | None


def evaluate_protocols(
    method: SSLMethod, dataset: ImageDataset, settings: ProtocolSettings, *,
    eval_layer: int | None, device: torch.device, seed: int, final: bool,
) -> tuple[dict[str, float], dict[str, bytes]]:
    """(metrics, files) of one evaluation: the objective's validation form when there is
    one, and at the ``final`` evaluation every protocol's test form and files. ``seed``
    (the trial's) draws heads, initialisations and data order."""
    metrics: dict[str, float] = {}
    files: dict[str, bytes] = {}
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        protocols = _Protocols(method, dataset, settings, eval_layer, device, seed)
        if settings.objective is not None and dataset.has_validation:
            metrics.update(protocols.scores(protocols.validation(), only=settings.objective))
        if final:
            metrics.update(protocols.scores(protocols.test()))
            files.update(protocols.files())
    return metrics, files


class _Protocols:
    """One evaluation's protocols over the method's evaluated representation, with the
    features of the train and test splits extracted once."""

    def __init__(self, method: SSLMethod, dataset: ImageDataset, settings: ProtocolSettings,
                 eval_layer: int | None, device: torch.device, seed: int) -> None:
        self.method_name = method.name
        self.method_head: HeadKind = method.finetune_head
        self.trunk = method.representation(eval_layer)
        self.dataset, self.settings, self.device, self.seed = dataset, settings, device, seed
        self._features: dict[str, Tensor] = {}

    def features(self, split: str) -> Tensor:
        if split not in self._features:
            images = self.dataset.train_images if split == "train" else self.dataset.test_images
            self._features[split] = extract_features(self.trunk, images, self.device)
        return self._features[split]

    def test(self) -> _Split:
        return _Split("", torch.arange(len(self.dataset.train_labels)), None)

    def validation(self) -> _Split:
        mask = self.dataset.validation
        assert mask is not None
        return _Split(schema.VAL_PREFIX, torch.nonzero(~mask).flatten(),
                      torch.nonzero(mask).flatten())

    def _queries(self, split: _Split) -> tuple[Tensor, Tensor, Tensor]:
        """Images, labels and features of the split's queries."""
        if split.queries is None:
            return self.dataset.test_images, self.dataset.test_labels, self.features("test")
        train = self.features("train")
        return (self.dataset.train_images[split.queries],
                self.dataset.train_labels[split.queries],
                train[split.queries.to(train.device)])

    def _head(self, fit: FitSettings) -> HeadKind:
        return self.method_head if fit.head == "auto" else fit.head

    def scores(self, split: _Split, only: str | None = None) -> dict[str, float]:
        """The split's metrics (prefixed), every one or ``only`` the one named."""
        def wanted(name: str) -> bool:
            return only is None or name == only

        out: dict[str, float] = {}
        if self.settings.finetune is not None:
            out.update(self._finetune(split, self.settings.finetune, wanted))
        if self.settings.pruning is not None:
            out.update(self._pruning(split, self.settings.pruning, wanted))
        retrieval = self.settings.retrieval
        if retrieval is not None and any(map(wanted, retrieval_metrics(retrieval))):
            _, labels_q, features_q = self._queries(split)
            pool = split.pool.to(self.features("train").device)
            scores, _ = retrieval_scores(self.features("train")[pool],
                                         self.dataset.train_labels[split.pool], features_q,
                                         labels_q, retrieval)
            out.update({name: v for name, v in scores.items() if wanted(name)})
        return {split.prefix + name: value for name, value in out.items()}

    def _subset(self, split: _Split, budget: LabelBudget) -> Tensor:
        return label_subset(self.dataset.train_labels, self.dataset.num_classes, budget,
                            self.settings.subset_seed, split.pool)

    def _finetune(self, split: _Split, settings: FinetuneSettings,
                  wanted: Callable[[str], bool]) -> dict[str, float]:
        out = {}
        images_q, labels_q, features_q = self._queries(split)
        train_labels = self.dataset.train_labels
        kind = self._head(settings.fit)
        for budget in settings.budgets:
            chosen = self._subset(split, budget)
            for mode in settings.modes:
                name = schema.finetune_metric(mode, budget.name)
                if not wanted(name):
                    continue
                if mode == "frozen":
                    train = self.features("train")
                    out[name] = frozen_accuracy(train[chosen.to(train.device)],
                                                train_labels[chosen], features_q, labels_q,
                                                self.dataset.num_classes, kind)
                else:
                    out[name] = self._fit(self.trunk, chosen, images_q, labels_q, kind,
                                          settings.fit)
            name = schema.supervised_metric(budget.name)
            if settings.supervised_baseline and wanted(name):
                torch.manual_seed(self.seed)
                out[name] = self._fit(reinitialised(self.trunk), chosen, images_q, labels_q,
                                      kind, settings.fit)
        return out

    def _fit(self, trunk: nn.Module, chosen: Tensor, images_q: Tensor, labels_q: Tensor,
             kind: HeadKind, fit: FitSettings) -> float:
        torch.manual_seed(self.seed)
        network = finetuned(trunk, self.features("train").shape[1],
                            self.dataset.train_images[chosen], self.dataset.train_labels[chosen],
                            self.dataset.num_classes, kind, fit, self.device, self.seed)
        return classifier_accuracy(network, images_q, labels_q, self.device)

    def _pruning(self, split: _Split, settings: PruningSettings,
                 wanted: Callable[[str], bool]) -> dict[str, float]:
        out = {}
        images_q, labels_q, _ = self._queries(split)
        for budget in settings.budgets:
            chosen = self._subset(split, budget)
            for target in settings.sparsities:
                name = schema.pruned_metric(target, budget.name)
                if not wanted(name):
                    continue
                torch.manual_seed(self.seed)
                network, _ = pruned_network(
                    self.trunk, self.features("train").shape[1],
                    self.dataset.train_images[chosen], self.dataset.train_labels[chosen],
                    self.dataset.num_classes, self._head(settings.fit), target, settings.bits,
                    settings.fit, self.device, self.seed,
                )
                out[name] = classifier_accuracy(network, images_q, labels_q, self.device)
        return out

    def files(self) -> dict[str, bytes]:
        """The test split's pictures: retrieval examples and embedding maps."""
        files: dict[str, bytes] = {}
        data = self.dataset
        retrieval = self.settings.retrieval
        if retrieval is not None:
            shown = torch.arange(min(retrieval.examples, len(data.test_labels)))
            _, neighbours = retrieval_scores(self.features("train"), data.train_labels,
                                             self.features("test")[shown.to(self.device)],
                                             data.test_labels[shown], retrieval)
            files[schema.RETRIEVAL_EXAMPLES] = examples_png(
                data.train_images, data.train_labels, data.test_images[shown],
                data.test_labels[shown], neighbours, len(shown))
        embedding = self.settings.embedding
        if embedding is not None:
            files.update(self._maps(embedding))
        return files

    def _maps(self, settings: EmbeddingSettings) -> dict[str, bytes]:
        data = self.dataset
        generator = torch.Generator().manual_seed(self.settings.subset_seed)
        points = torch.randperm(len(data.test_labels), generator=generator)[: settings.points]
        points = points.sort().values
        labels = data.test_labels[points]
        torch.manual_seed(self.seed)
        random_init = extract_features(reinitialised(self.trunk), data.test_images[points],
                                       self.device)
        files = {}
        for features, fresh in ((self.features("test")[points.to(self.device)], False),
                                (random_init, True)):
            state = "random init" if fresh else "pretrained"
            png, table = map_files(embed(features, settings.method, self.seed), labels,
                                   f"{self.method_name}, {state} ({settings.method})")
            files[schema.embedding_artifact(settings.method, "png", fresh)] = png
            files[schema.embedding_artifact(settings.method, "parquet", fresh)] = table
        return files
