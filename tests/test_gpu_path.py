"""The GPU path on the CPU: autocast precisions, channels-last, gradient scaling with
exact resume, torch.compile, and how ``auto`` settings resolve per device. Tests that
need a CUDA device are skipped without one (``make bench-gpu`` runs them)."""

from __future__ import annotations

import functools
import math

import pytest
import torch
from conftest import make_method, train_keeping_checkpoints

from tracking import schema
from trainables import loop
from trainables.evaluation import linear_probe_accuracy
from trainables.hyperparameters import TrainingHyperparameters
from trainables.loop import LoopSettings, resolve_channels_last, resolve_precision, train
from trainables.methods import METHODS
from trainables.protocols import (
    EmbeddingSettings,
    FinetuneSettings,
    FitSettings,
    LabelBudget,
    ProtocolSettings,
    PruningSettings,
    RetrievalSettings,
)

TRAINING = TrainingHyperparameters(lr=3e-3, weight_decay=1e-5, batch_size=64, aug_strength=0.5)
#: A learning rate that leaves the weights as they were: the epoch's loss is then the mean
#: loss of the initial model, which compares numerics without AdamW amplifying rounding
#: differences (it normalises tiny gradients to full-size steps).
FROZEN = TrainingHyperparameters(lr=1e-12, weight_decay=0.0, batch_size=64, aug_strength=0.5)
CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def _settings(**changes) -> LoopSettings:
    return LoopSettings(epochs=1, seed=0, linear_probe="never", mlp_probe="never", knn_k=20,
                        **changes)


def _first_epoch(dataset, training=FROZEN, **changes) -> dict[str, float]:
    results: list = []
    train(make_method("simclr", dataset), dataset, training, _settings(**changes),
          results.append)
    return results[0].metrics


def test_auto_is_fp32_in_the_default_layout_on_the_cpu() -> None:
    cpu = torch.device("cpu")
    assert resolve_precision("auto", cpu) == "fp32"
    assert resolve_channels_last("auto", cpu, "fp32") is False
    assert resolve_precision("bf16", cpu) == "bf16"
    assert resolve_channels_last(True, cpu, "fp32") is True


@pytest.mark.parametrize("capability,precision", [((8, 0), "bf16"), ((9, 0), "bf16"),
                                                  ((7, 5), "fp32")])
def test_auto_is_bf16_and_channels_last_on_a_gpu_with_native_bf16(
    monkeypatch, capability: tuple[int, int], precision: str
) -> None:
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    cuda = torch.device("cuda")
    assert resolve_precision("auto", cuda) == precision
    assert resolve_channels_last("auto", cuda, precision) is (precision == "bf16")
    assert resolve_precision("fp16", cuda) == "fp16"


def test_bf16_autocast_gives_a_finite_loss_close_to_fp32(tiny_shapes) -> None:
    fp32 = _first_epoch(tiny_shapes)
    bf16 = _first_epoch(tiny_shapes, precision="bf16")
    assert torch.isfinite(torch.tensor(bf16["loss"]))
    assert bf16["loss"] == pytest.approx(fp32["loss"], rel=0.02)
    assert 0.0 <= bf16["knn_acc"] <= 1.0


def test_channels_last_gives_the_same_loss(tiny_shapes) -> None:
    default = _first_epoch(tiny_shapes)
    channels_last = _first_epoch(tiny_shapes, channels_last=True)
    assert channels_last["loss"] == pytest.approx(default["loss"], rel=1e-5)


def _resume_is_exact(dataset, settings: LoopSettings) -> dict:
    """Train three epochs, then again from the first epoch's checkpoint; returns that
    checkpoint after asserting that epochs 2 and 3 come out the same."""
    states, results = train_keeping_checkpoints(make_method("simclr", dataset), dataset,
                                                TRAINING, settings)
    state = states[1]
    resumed: dict[int, dict] = {}
    train(make_method("simclr", dataset), dataset, TRAINING, settings,
          lambda r: resumed.setdefault(r.epoch, r.metrics), resume_state=state)
    for epoch in (2, 3):
        assert resumed[epoch]["loss"] == pytest.approx(results[epoch]["loss"], rel=1e-6)
    assert resumed[3]["knn_acc"] == results[3]["knn_acc"]
    return state


@pytest.mark.parametrize("optimizer", ["adamw", "lars"])
def test_fp16_with_gradient_scaling_resumes_exactly(tiny_shapes, monkeypatch,
                                                    optimizer: str) -> None:
    """fp16's gradient scaler is checkpointed and restored, with the fused AdamW and with
    LARS (which the scaler unscales before it steps). The config refuses fp16 on a CPU,
    where its convolutions are emulated (minutes for this test); the loop runs it
    anywhere, so here the scaler runs as for fp16 over bf16 arithmetic."""
    monkeypatch.setitem(loop._AUTOCAST_DTYPES, "fp16", torch.bfloat16)
    settings = LoopSettings(epochs=3, seed=0, linear_probe="never", mlp_probe="never",
                            knn_k=20, precision="fp16", optimizer=optimizer)
    state = _resume_is_exact(tiny_shapes, settings)
    assert state["grad_scaler"]["scale"] > 0


@pytest.mark.slow
def test_compiled_encoder_trains_evaluates_and_checkpoints_like_the_eager_one(
    tiny_shapes, monkeypatch
) -> None:
    """Graph capture and AOT autograd of the encoder, in training and evaluation, with
    the state dict's keys unchanged. The ``aot_eager`` backend skips only the C++ code
    generation of the default backend (a minute on two cores), which is torch's own; on
    a GPU, ``make bench-gpu`` runs the default backend."""
    monkeypatch.setattr(torch.nn.Module, "compile", functools.partialmethod(
        torch.nn.Module.compile, backend="aot_eager"))
    states: list = []
    results: list = []

    def keep(result) -> None:
        states.append(result.state())
        results.append(result.metrics)

    train(make_method("simclr", tiny_shapes), tiny_shapes, TRAINING,
          _settings(compile=True), keep)
    eager = _first_epoch(tiny_shapes, training=TRAINING)
    assert results[0]["loss"] == pytest.approx(eager["loss"], rel=1e-3)
    assert set(states[0]["method"]) == set(make_method("simclr", tiny_shapes).state_dict())


@CUDA
def test_auto_settings_train_on_the_gpu(tiny_shapes) -> None:
    metrics = _first_epoch(tiny_shapes, device="cuda", precision="auto", channels_last="auto")
    assert torch.isfinite(torch.tensor(metrics["loss"]))


@CUDA
@pytest.mark.parametrize("optimizer", ["adamw", "lars"])
def test_fp16_on_the_gpu_resumes_exactly(tiny_shapes, optimizer: str) -> None:
    settings = LoopSettings(epochs=3, seed=0, linear_probe="never", mlp_probe="never",
                            knn_k=20, precision="fp16", device="cuda", optimizer=optimizer)
    _resume_is_exact(tiny_shapes, settings)


@CUDA
@pytest.mark.slow
def test_the_default_compiler_backend_trains_on_the_gpu(tiny_shapes) -> None:
    metrics = _first_epoch(tiny_shapes, training=TRAINING, device="cuda", compile=True)
    assert torch.isfinite(torch.tensor(metrics["loss"]))


def _on_the_gpu(dataset, method: str, **changes) -> dict[str, float]:
    """Two epochs of ``method`` on the GPU (the layer-wise triplet's default needs two) at
    the settings a GPU trial resolves, with the final evaluation; its metrics, after
    checking that every number is finite."""
    results: list = []
    settings = LoopSettings(epochs=2, seed=0, knn_k=20, device="cuda", precision="auto",
                            channels_last="auto", **changes)
    train(make_method(method, dataset), dataset, TRAINING, settings, results.append)
    metrics = results[-1].metrics
    assert all(math.isfinite(value) for value in metrics.values()), metrics
    return metrics


@CUDA
@pytest.mark.parametrize("name", sorted(METHODS))
def test_every_method_trains_and_evaluates_on_the_gpu(name: str, tiny_shapes_val) -> None:
    """Views, loss, the method's own evaluation and files, kNN and both probes, where a
    tensor left on the CPU fails (as the layer-wise triplet's transfer classifier once
    did, in every GPU trial's final evaluation)."""
    metrics = _on_the_gpu(tiny_shapes_val, name)
    assert {"loss", "knn_acc", "val_knn_acc", "linear_acc", "mlp_acc"} <= set(metrics)


@CUDA
def test_the_evaluation_protocols_run_on_the_gpu(tiny_shapes_val) -> None:
    quick = FitSettings(epochs=1, lr=1e-3, batch_size=64)
    protocols = ProtocolSettings(
        finetune=FinetuneSettings((LabelBudget(0.2),), fit=quick),
        pruning=PruningSettings(sparsities=(0.9,), budgets=(LabelBudget(0.2),), fit=quick),
        retrieval=RetrievalSettings(ks=(1,)),
        embedding=EmbeddingSettings("pca", points=50),
    )
    metrics = _on_the_gpu(tiny_shapes_val, "simclr", linear_probe="never",
                          mlp_probe="never", protocols=protocols)
    pruned = schema.pruned_metric(0.9, LabelBudget(0.2).name)
    assert {"finetune_frozen_20_acc", "finetune_unfrozen_20_acc", pruned, "retrieval_p1"
            } <= set(metrics)


@CUDA
def test_the_linear_probe_gives_the_same_score_from_gpu_features(monkeypatch) -> None:
    """The L-BFGS probe solves on the CPU wherever the features are (see its docstring)."""
    solved_on: list[torch.device] = []
    lbfgs = torch.optim.LBFGS

    def recording_lbfgs(params, *args, **kwargs):
        params = list(params)
        solved_on.append(params[0].device)
        return lbfgs(params, *args, **kwargs)

    monkeypatch.setattr(torch.optim, "LBFGS", recording_lbfgs)
    gen = torch.Generator().manual_seed(0)
    labels = torch.arange(400) % 4
    features = torch.randn(4, 32, generator=gen)[labels] + torch.randn(400, 32, generator=gen)
    args = (features[:300], labels[:300], features[300:], labels[300:], 4)
    torch.manual_seed(0)
    on_cpu = linear_probe_accuracy(*args)
    torch.manual_seed(0)
    on_gpu = linear_probe_accuracy(*(a.cuda() if isinstance(a, torch.Tensor) else a
                                     for a in args))
    assert on_gpu == on_cpu
    assert solved_on == [torch.device("cpu")] * 2


@CUDA
def test_the_probes_leave_the_gpu_random_state_as_it_was() -> None:
    from trainables.evaluation import mlp_probe_accuracy

    gen = torch.Generator().manual_seed(0)
    labels = torch.arange(60) % 3
    features = torch.randn(3, 8, generator=gen)[labels] + torch.randn(60, 8, generator=gen)
    args = (features[:40].cuda(), labels[:40].cuda(), features[40:].cuda(),
            labels[40:].cuda(), 3)
    torch.cuda.manual_seed(5)
    before = torch.cuda.get_rng_state()
    linear_probe_accuracy(*args)
    mlp_probe_accuracy(*args, steps=5)
    assert torch.equal(torch.cuda.get_rng_state(), before)


@pytest.mark.parametrize("fraction,packed", [(0.5, 2), (0.25, 4), (1.0, 1)])
def test_fractional_gpus_ask_ray_for_the_fraction_and_pack_trials(
    fraction: float, packed: int
) -> None:
    from study.cluster import NodeResources, default_max_concurrent, trial_resources, unmet_need
    from study.config import ResourcesConfig

    resources = ResourcesConfig(cpus_per_worker=1, gpus_per_worker=fraction)
    assert trial_resources(resources) == {"cpu": 1, "gpu": fraction}
    assert default_max_concurrent(resources, {"CPU": 16, "GPU": 1}) == packed
    assert unmet_need(resources, [NodeResources(16, 1)]) is None
