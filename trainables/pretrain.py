"""The torch core's one entry point: build a registered method from resolved
hyperparameters and pretrain it with the generic loop. The Ray trainable, the local run
and the tests all come through here."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import torch

from tracking import schema
from trainables.data import ImageDataset, chance_accuracy
from trainables.distributed import LOCAL, Collective
from trainables.hyperparameters import Hyperparameters
from trainables.loop import LoopSettings, Reporter, evaluate, train
from trainables.methods import build_method


def resolve_device(device: str) -> str:
    """``auto`` becomes CUDA where this process sees a GPU, else the CPU; resolved where
    the trial runs, not where the study was launched."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def pretrain(
    method: str,
    backbone: str,
    dataset: ImageDataset,
    hyperparameters: Hyperparameters,
    settings: LoopSettings,
    report: Reporter,
    resume_state: Mapping[str, Any] | None = None,
    comm: Collective = LOCAL,
) -> dict[str, float]:
    """Seed, build ``method`` and train it; returns the last epoch's metrics. ``comm`` is
    the process group when the trial is data-parallel."""
    torch.manual_seed(settings.seed)
    model = build_method(method, backbone, dataset, hyperparameters.method, comm)
    settings = replace(settings, device=resolve_device(settings.device))
    return train(model, dataset, hyperparameters.training, settings, report, resume_state)


def reference_scores(
    method: str,
    backbone: str,
    dataset: ImageDataset,
    hyperparameters: Hyperparameters,
    settings: LoopSettings,
) -> dict[str, float]:
    """What a trained encoder must beat: the kNN accuracies (validation and test) of the
    same encoder at its random initialisation (the seed a trial starts from), under
    ``random_init_<metric>``, and the chance accuracy. Probes are left out: the kNN is
    cheap and is what a search selects on.

    It runs where the study is launched, which need not have the trials' GPU (nor should
    it take memory Ray does not account for): on a GPU there when one is visible, else on
    the CPU, whatever ``train.device`` says."""
    torch.manual_seed(settings.seed)
    model = build_method(method, backbone, dataset, hyperparameters.method)
    settings = replace(settings, device=resolve_device("auto"), linear_probe="never",
                       mlp_probe="never")
    model.to(torch.device(settings.device))
    scores = {schema.RANDOM_INIT_PREFIX + k: v
              for k, v in evaluate(model, dataset, settings, final=True).items()}
    scores[schema.CHANCE_ACC] = chance_accuracy(dataset)
    return scores
