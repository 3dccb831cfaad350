"""The generic loop: checkpoints that resume exactly, non-finite losses, batch checks."""

from __future__ import annotations

import dataclasses
import io

import pytest
import torch
from conftest import make_method, train_keeping_checkpoints

from trainables.hyperparameters import TrainingHyperparameters
from trainables.loop import LoopSettings, NonFiniteLossError, train

TRAINING = TrainingHyperparameters(lr=3e-3, weight_decay=1e-5, batch_size=64, aug_strength=0.5)
SETTINGS = LoopSettings(epochs=3, eval_every=1, seed=0, linear_probe="never")


def _simclr(dataset):
    return make_method("simclr", dataset)


@pytest.mark.parametrize("name", ["simclr", "moco"])
def test_resuming_from_a_checkpoint_reproduces_the_uninterrupted_run(
    tiny_shapes_val, name: str
) -> None:
    """MoCo also draws from torch's global random state in its step (the key shuffle):
    the checkpoint carries that state too. (LARS's momentum in the checkpoint: the fp16
    resume test in test_gpu_path.)"""
    tiny_shapes = tiny_shapes_val
    states, results = train_keeping_checkpoints(make_method(name, tiny_shapes), tiny_shapes,
                                                TRAINING, SETTINGS)
    state = states[1]
    resumed: dict[int, dict] = {}
    fresh = make_method(name, tiny_shapes)
    with torch.no_grad():  # a different starting point, overwritten by the checkpoint
        for p in fresh.parameters():
            p.add_(1.0)
    torch.manual_seed(123)  # a resumed trial's process starts from its seed, not from here
    train(fresh, tiny_shapes, TRAINING, SETTINGS,
          lambda r: resumed.setdefault(r.epoch, r.metrics), resume_state=state)
    assert sorted(resumed) == [2, 3]
    for epoch in (2, 3):
        assert resumed[epoch]["loss"] == pytest.approx(results[epoch]["loss"], rel=1e-5)
        assert resumed[epoch]["val_knn_acc"] == results[epoch]["val_knn_acc"]
    assert resumed[3]["knn_acc"] == results[3]["knn_acc"]


def test_resuming_after_the_last_epoch_reports_the_final_result_again(tiny_shapes) -> None:
    """A driver that died before learning a run had finished restores it from the last
    checkpoint: the loop trains nothing and repeats the final result for the scheduler."""
    last: dict = {}
    train(_simclr(tiny_shapes), tiny_shapes, TRAINING, SETTINGS,
          lambda r: last.update(state=r.state(), metrics=r.metrics))
    buffer = io.BytesIO()
    torch.save(last["state"], buffer)
    state = torch.load(io.BytesIO(buffer.getvalue()), weights_only=True)
    again: list = []
    final = train(_simclr(tiny_shapes), tiny_shapes, TRAINING, SETTINGS, again.append,
                  resume_state=state)
    assert [(r.epoch, r.evaluated, r.final) for r in again] == [(3, True, True)]
    assert final == last["metrics"] == again[0].metrics


def test_reports_every_epoch_and_evaluates_on_schedule(tiny_shapes) -> None:
    seen = []
    settings = LoopSettings(epochs=3, eval_every=2, seed=0, linear_probe="final")
    train(_simclr(tiny_shapes), tiny_shapes, TRAINING, settings, seen.append)
    assert [r.epoch for r in seen] == [1, 2, 3]
    assert [r.evaluated for r in seen] == [False, True, True]
    assert "knn_acc" not in seen[0].metrics and "linear_acc" not in seen[1].metrics
    assert {"loss", "knn_acc", "linear_acc", "images_per_sec", "epoch"} <= set(seen[2].metrics)
    assert seen[2].final


def test_non_finite_loss_ends_training_with_the_reason(tiny_shapes) -> None:
    exploding = TrainingHyperparameters(lr=1e25, weight_decay=0.0, batch_size=64, aug_strength=0.5)
    with pytest.raises(NonFiniteLossError, match="loss became nan at epoch 1"):
        train(_simclr(tiny_shapes), tiny_shapes, exploding, SETTINGS, lambda r: None)


def test_batch_larger_than_the_dataset_is_refused(tiny_shapes) -> None:
    too_big = TrainingHyperparameters(lr=1e-3, weight_decay=0.0, batch_size=512, aug_strength=0.5)
    with pytest.raises(ValueError, match="exceeds the 256 pretraining images"):
        train(_simclr(tiny_shapes), tiny_shapes, too_big, SETTINGS, lambda r: None)


def test_ranks_take_disjoint_shares_of_each_global_batch(tiny_shapes) -> None:
    from trainables.distributed import Collective
    from trainables.loop import _batches

    def shares(rank: int) -> list[torch.Tensor]:
        comm = Collective(world_size=2, rank=rank)
        return list(_batches(256, 64, 4, torch.Generator().manual_seed(3), comm))

    first, second = shares(0), shares(1)
    for a, b in zip(first, second, strict=True):
        assert len(a) == len(b) == 32 and not set(a.tolist()) & set(b.tolist())
    everything = torch.cat([*first, *second])
    assert sorted(everything.tolist()) == list(range(256))


def test_evaluation_does_not_change_what_training_draws(tiny_shapes_val) -> None:
    """Probes draw their initialisation from a random state of their own: with a linear
    probe at every evaluation, MoCo (whose step draws from the global state) trains on
    exactly as without."""
    losses = {}
    for probe in ("never", "every"):
        settings = LoopSettings(epochs=2, eval_every=1, seed=0, linear_probe=probe)
        torch.manual_seed(0)
        results: dict[int, dict] = {}
        train(make_method("moco", tiny_shapes_val), tiny_shapes_val, TRAINING, settings,
              lambda r, results=results: results.setdefault(r.epoch, r.metrics))
        losses[probe] = results[2]["loss"]
    assert losses["every"] == losses["never"]


def test_lars_learns(tiny_shapes_val) -> None:
    """SimCLR under LARS at its own learning-rate scale: the loss falls."""
    settings = LoopSettings(epochs=3, eval_every=3, seed=0, linear_probe="never",
                            optimizer="lars")
    training = dataclasses.replace(TRAINING, lr=1.0)
    torch.manual_seed(0)
    losses: dict[int, float] = {}
    train(make_method("simclr", tiny_shapes_val), tiny_shapes_val, training, settings,
          lambda r: losses.setdefault(r.epoch, r.metrics["loss"]))
    assert losses[3] < losses[1] - 0.1
