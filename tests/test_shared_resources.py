"""What concurrent trials share through Ray: one copy of the dataset per node (its arrays
mapped from the object store, not deserialised into every trial) and, with fractional
``gpus_per_worker``, one GPU. Ray gets a logical GPU, so packing is checked on a CPU-only
machine too (the trials then train on the CPU)."""

from __future__ import annotations

from pathlib import Path

import pytest
import ray
import torch
from conftest import write_study_config
from mlflow.tracking import MlflowClient

from study.cli import main
from trainables.trainable import DatasetHandle

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module", autouse=True)
def ray_with_one_gpu():
    ray.init(address="local", include_dashboard=False, num_cpus=2, num_gpus=1,
             logging_level="WARNING")
    yield
    ray.shutdown()


def test_the_dataset_is_mapped_from_the_object_store_not_copied(tiny_shapes) -> None:
    handle = DatasetHandle.put(tiny_shapes)
    first, second = handle.get(), handle.get()
    assert first.pretrain_images.data_ptr() == second.pretrain_images.data_ptr()
    # The labelled train split is the pretraining set: stored once, one tensor again.
    assert tiny_shapes.train_images is tiny_shapes.pretrain_images
    assert first.train_images is first.pretrain_images
    for name in ("pretrain_images", "train_images", "train_labels", "test_images",
                 "test_labels"):
        assert torch.equal(getattr(first, name), getattr(tiny_shapes, name))
    assert (first.name, first.num_classes, first.mean) == (
        tiny_shapes.name, tiny_shapes.num_classes, tiny_shapes.mean)


def test_trials_with_half_a_gpu_each_run_together(tmp_path: Path) -> None:
    config = write_study_config(
        tmp_path, "packed", {"simclr": {"space": {"batch_size": {"choices": [64]}}}},
        data={"num_train": 128, "num_test": 64},
        train={"epochs": 1, "device": "auto"},
        search={"num_samples": 2, "grace_period": 1, "n_startup_trials": 1},
        resources={"gpus_per_worker": 0.5},
    )
    assert main(["search", str(config)]) == 0
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("packed")
    trials = [r for r in client.search_runs([experiment.experiment_id])
              if "mlflow.parentRunId" in r.data.tags]
    assert len(trials) == 2
    starts = [r.info.start_time for r in trials]
    ends = [r.info.end_time for r in trials]
    assert max(starts) < min(ends), "the two half-GPU trials did not overlap"
