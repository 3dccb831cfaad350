"""Shared fixtures and helpers: small generated datasets, methods built the way a trial
builds them, study configs, and a quiet torch."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from trainables.data import DataSpec, ImageDataset, load_dataset
from trainables.hyperparameters import resolve_trial
from trainables.methods import build_method
from trainables.methods.base import SSLMethod


@pytest.fixture(autouse=True)
def _single_thread_torch():
    # CI has two cores; one thread per test process keeps timings predictable.
    torch.set_num_threads(1)


def write_study_config(tmp: Path, name: str, methods: dict, **sections: dict) -> Path:
    """A small study config in ``tmp``: 256 generated images, CPU, SQLite tracking in
    ``tmp/mlflow.db`` and Ray results in ``tmp/ray``; ``sections`` update its sections."""
    config: dict = {
        "name": name,
        "storage_path": str(tmp / "ray"),
        "data": {"dataset": "shapes", "num_train": 256, "num_test": 128},
        "train": {"epochs": 3, "device": "cpu"},
        "search": {"num_samples": 2, "grace_period": 3, "n_startup_trials": 1},
        "tracking": {"tracking_uri": f"sqlite:///{tmp / 'mlflow.db'}", "experiment": name},
        "methods": methods,
    }
    for key, value in sections.items():
        config[key] = {**config.get(key, {}), **value}
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture(scope="session")
def tiny_shapes() -> ImageDataset:
    return load_dataset(DataSpec("shapes", num_train=256, num_test=128, seed=0))


def make_method(name: str, dataset: ImageDataset, backbone: str = "small_cnn",
                **given) -> SSLMethod:
    """Method ``name`` as a trial builds it: ``given`` resolved over the declared
    defaults, the same seed for the initialisation every time."""
    torch.manual_seed(0)
    return build_method(name, backbone, dataset, resolve_trial(name, given).method)
