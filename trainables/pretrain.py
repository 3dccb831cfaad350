"""The torch core's one entry point: build a registered method from resolved
hyperparameters and pretrain it with the generic loop. The Ray trainable, the local run
and the tests all come through here."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import torch

from trainables.data import ImageDataset
from trainables.distributed import LOCAL, Collective
from trainables.hyperparameters import Hyperparameters
from trainables.loop import LoopSettings, Reporter, train
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
