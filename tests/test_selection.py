"""Held-out selection: the validation split, what reaches the scheduler, seeds, and the
batch-size controls (learning-rate scaling, budget in steps)."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch
from conftest import make_method

from search_spaces import build_space
from tracking import schema
from tracking.runs import TrackingTarget
from trainables.hyperparameters import TrainingHyperparameters, declared_hyperparameters
from trainables.loop import (
    EpochResult,
    LoopSettings,
    evaluate,
    scaled_lr,
    steps_per_epoch,
    train,
)
from trainables.recording import TrialSettings


def test_validation_is_a_stratified_seeded_part_of_the_train_split(tiny_shapes_val) -> None:
    mask = tiny_shapes_val.validation
    labels = tiny_shapes_val.train_labels
    assert mask.dtype == torch.bool and mask.shape == labels.shape
    for label in range(tiny_shapes_val.num_classes):
        members = labels == label
        share = (mask & members).sum() / members.sum()
        assert 0.1 < share < 0.3, (label, share)
    from trainables.data import with_validation

    again = with_validation(tiny_shapes_val, 0.2, seed=0).validation
    other = with_validation(tiny_shapes_val, 0.2, seed=1).validation
    assert torch.equal(again, mask) and not torch.equal(other, mask)
    # The test split is another set of images altogether.
    train = {bytes(img.numpy()) for img in tiny_shapes_val.train_images}
    assert not any(bytes(img.numpy()) in train for img in tiny_shapes_val.test_images)


def test_validation_scores_every_evaluation_test_scores_only_the_final(tiny_shapes_val) -> None:
    method = make_method("simclr", tiny_shapes_val)
    settings = LoopSettings(epochs=2, linear_probe="every", mlp_probe="never")
    middle = evaluate(method, tiny_shapes_val, settings, final=False)
    assert set(middle) == {"val_knn_acc", "val_linear_acc"}
    final = evaluate(method, tiny_shapes_val, settings, final=True)
    assert set(final) == {"val_knn_acc", "val_linear_acc", "knn_acc", "linear_acc"}
    every = evaluate(method, tiny_shapes_val, replace(settings, test_metrics="every"),
                     final=False)
    assert "knn_acc" in every


def test_the_validation_bank_leaves_the_validation_images_out(tiny_shapes_val) -> None:
    """Scored against a bank that holds its own queries, kNN would be near perfect; the
    validation score must not be."""
    method = make_method("simclr", tiny_shapes_val)
    settings = LoopSettings(epochs=1, linear_probe="never", mlp_probe="never", knn_k=1)
    scores = evaluate(method, tiny_shapes_val, settings)
    assert scores["val_knn_acc"] < 0.9


def test_no_test_split_metric_reaches_the_scheduler() -> None:
    from trainables.trainable import _checkpointing_report

    sent: list[dict] = []
    # No MLflow run: the dataset and settings, which only recording needs, are not read.
    report = _checkpointing_report(None, lambda metrics, ckpt: sent.append(metrics), False,
                                   None, None)
    metrics = {"epoch": 3.0, "loss": 1.0, "lr_schedule": 0.0, "images_per_sec": 9.0,
               "val_knn_acc": 0.5, "knn_acc": 0.6, "linear_acc": 0.7,
               "transfer_frozen_acc": 0.8}
    report(EpochResult(3, metrics, True, True, lambda: {}))
    assert sent == [{"epoch": 3.0, "loss": 1.0, "lr_schedule": 0.0, "images_per_sec": 9.0,
                     "val_knn_acc": 0.5}]
    assert schema.validation("knn_acc") == "val_knn_acc"


def _settings(policy: str) -> TrialSettings:
    return TrialSettings(
        study="s", method="simclr", backbone="small_cnn", loop=LoopSettings(epochs=1, seed=7),
        space=build_space("simclr", declared_hyperparameters("simclr")),
        tracking=TrackingTarget("sqlite:///x.db", "0"), seed_policy=policy,
    )


def test_seed_policies() -> None:
    shared, own = _settings("shared"), _settings("per_trial")
    assert shared.seed_for("a") == shared.seed_for("b") == 7
    assert own.seed_for("a") != own.seed_for("b")
    assert own.seed_for("a") == own.seed_for("a"), "a retried trial keeps its seed"
    assert own.with_seed(own.seed_for("a")).loop.seed == own.seed_for("a")


@pytest.mark.parametrize("scaling,factor", [("none", 1.0), ("linear", 2.0),
                                            ("sqrt", math.sqrt(2.0))])
def test_lr_scaling_follows_the_batch_size(scaling: str, factor: float) -> None:
    training = TrainingHyperparameters(lr=0.1, weight_decay=0.0, batch_size=512,
                                       aug_strength=0.5)
    settings = LoopSettings(epochs=1, lr_scaling=scaling)
    assert scaled_lr(training, settings) == pytest.approx(0.1 * factor)


def test_a_budget_in_steps_gives_every_batch_size_the_same_updates() -> None:
    from trainables.data import DataSpec, load_dataset

    images = load_dataset(DataSpec("shapes", num_train=768, num_test=16, seed=0))
    epochs = LoopSettings(epochs=1)
    steps = LoopSettings(epochs=1, budget_unit="steps")
    assert steps_per_epoch(4096, 64, epochs) == 64
    assert steps_per_epoch(4096, 64, steps) == steps_per_epoch(4096, 512, steps) == 16
    counted = {}
    for batch in (32, 128):
        training = TrainingHyperparameters(lr=1e-3, weight_decay=0.0, batch_size=batch,
                                           aug_strength=0.5)
        method = make_method("simclr", images, proj_hidden_dim=16, proj_dim=8)
        calls = []
        method.register_forward_hook(lambda *args, calls=calls: calls.append(1))
        settings = LoopSettings(epochs=1, budget_unit="steps", linear_probe="never",
                                mlp_probe="never")
        train(method, images, training, settings, lambda result: None)
        counted[batch] = len(calls)
    # 768 images: as many steps as a pass at batch size 256, 3, whatever the batch.
    assert counted[32] == counted[128] == 3
