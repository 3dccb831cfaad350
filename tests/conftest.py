"""Shared fixtures: small generated datasets and a quiet torch."""

from __future__ import annotations

import pytest
import torch

from trainables.data import DataSpec, ImageDataset, load_dataset


@pytest.fixture(autouse=True)
def _single_thread_torch():
    # CI has two cores; one thread per test process keeps timings predictable.
    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_shapes() -> ImageDataset:
    return load_dataset(DataSpec("shapes", num_train=256, num_test=128, seed=0))
