"""Data-parallel losses give the single-process result: 2 gloo CPU workers, each with half
of a batch, must produce the loss and parameter gradients of one process that sees the
whole batch (and, for MoCo, the same queue). And a data-parallel run resumed from its
checkpoint trains on as the uninterrupted one, every rank drawing what it would have.

BatchNorm is left out of the networks here: SyncBatchNorm has no CPU implementation, and
per-worker BatchNorm statistics legitimately differ from whole-batch statistics. Prior
matching (Deep InfoMax's gamma) is off: its prior samples are drawn per worker.
"""

from __future__ import annotations

import copy
import datetime
import os
import socket
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from search_spaces import resolve_hyperparameters
from trainables.augment import rotations
from trainables.backbones import Encoder, Normalize, layerwise_conv
from trainables.distributed import Collective
from trainables.methods import METHODS, method_class

WORLD = 2
GLOBAL_BATCH = 8
#: How long a case may take on a worker before the collective gives up.
CASE_TIMEOUT_S = 120


def _flat_encoder() -> Encoder:
    stage = nn.Sequential(nn.Flatten(), nn.Linear(12, 8), nn.Unflatten(1, (8, 1, 1)))
    return Encoder(Normalize([0.0] * 3, [1.0] * 3), [stage], [8])


def _conv_encoder() -> Encoder:
    stages = [nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU()),
              nn.Sequential(nn.Conv2d(4, 6, 3, stride=2, padding=1), nn.ReLU())]
    return Encoder(Normalize([0.5] * 3, [0.25] * 3), stages, [4, 6])


def _layerwise_encoder() -> Encoder:
    stages, channels = layerwise_conv(3, (4, 5), (6, 3))
    return Encoder(Normalize([0.5] * 3, [0.25] * 3), stages, channels)


@dataclass(frozen=True)
class Case:
    method: str
    values: dict[str, Any]
    encoder: Callable[[], Encoder]
    #: Side of the (square) view images.
    size: int
    #: (epoch, epochs) handed to ``begin_epoch`` before the step.
    epoch: tuple[int, int] = (1, 1)
    views: int = 2
    replace_heads: bool = False
    extra_state: tuple[str, ...] = field(default_factory=tuple)
    #: Shape of every image view after the batch dimension; default (3, size, size).
    image_shape: tuple[int, ...] | None = None
    #: Further per-example inputs (targets, masks), drawn from the generator.
    extra: Callable[[torch.Generator], list[torch.Tensor]] = lambda gen: []
    #: Turns a worker's share of the inputs into its views (RotNet's rotations).
    per_worker: Callable[[list[torch.Tensor]], list[torch.Tensor]] = lambda views: views


CASES = {
    "simclr": Case("simclr", {"proj_dim": 4, "proj_hidden_dim": 8, "temperature": 0.3},
                   _flat_encoder, 2, replace_heads=True),
    "moco": Case("moco", {"proj_dim": 4, "proj_hidden_dim": 8, "temperature": 0.3,
                          "queue_size": 16, "momentum": 0.9},
                 _flat_encoder, 2, replace_heads=True, extra_state=("queue",)),
    # 10-pixel images give a 4-row grid: targets 2 and 3 rows below a context.
    "cpc": Case("cpc", {"patch_size": 4, "pred_steps": 2, "temperature": 0.5},
                _conv_encoder, 10, views=1),
    "spatial_contrasting-last_two": Case(
        "spatial_contrasting", {"layers": "last_two", "temperature": 0.7}, _conv_encoder, 6),
    **{f"dim-{estimator}": Case(
        "dim", {"estimator": estimator, "local_layer": 1, "gamma": 0.0, "critic_dim": 5},
        _conv_encoder, 8, views=1) for estimator in ("jsd", "dv", "infonce")},
    **{f"patch_triplet-{mining}-layer{layer}": Case(
        "patch_triplet", {"mining": mining, "layers": 2, "filters1": 4, "filters2": 5,
                          "distance": "euclidean", "margin": 1.0},
        _layerwise_encoder, 7 if layer == 1 else 13, epoch=(layer, 2))
        for mining in ("random", "semi_hard") for layer in (1, 2)},
    "rotnet": Case("rotnet", {"head_hidden_dim": 6}, _conv_encoder, 4, views=1,
                   per_worker=lambda views: [rotations(views[0], 4)]),
    "relative_patch": Case(
        "relative_patch", {"head_hidden_dim": 6}, _conv_encoder, 4,
        extra=lambda gen: [torch.randint(0, 8, (GLOBAL_BATCH,), generator=gen)]),
    "jigsaw": Case(
        "jigsaw", {"head_hidden_dim": 6, "num_permutations": 5}, _conv_encoder, 4, views=1,
        image_shape=(9, 3, 4, 4),
        extra=lambda gen: [torch.randint(0, 5, (GLOBAL_BATCH,), generator=gen)]),
    "denoising_ae": Case("denoising_ae", {"loss": "bce"}, _conv_encoder, 8),
    **{f"context_encoder-adv{adv}": Case(
        "context_encoder", {"lambda_adv": adv}, _conv_encoder, 8, views=1,
        extra=lambda gen: [(torch.rand(GLOBAL_BATCH, 1, 8, 8, generator=gen) > 0.5).float()])
       for adv in (0.0, 0.5)},
    "aet": Case("aet", {"decoder_hidden_dim": 6, "transform": "projective"}, _conv_encoder, 6,
                extra=lambda gen: [torch.randn(GLOBAL_BATCH, 8, generator=gen)]),
}


def _build(case: Case, comm: Collective):
    torch.manual_seed(0)
    cls = method_class(case.method)
    values = resolve_hyperparameters(cls.hyperparameters, case.values, owner=case.method)
    encoder = case.encoder()
    model = cls(encoder, encoder.feature_dim, values, comm)
    if case.replace_heads:
        model.projector = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 4))
        if case.method == "moco":
            model.key_encoder = copy.deepcopy(model.encoder).requires_grad_(False)
            model.key_projector = copy.deepcopy(model.projector).requires_grad_(False)
    model.begin_epoch(*case.epoch)
    return model


def _views(case: Case) -> list[torch.Tensor]:
    """The whole batch's per-example inputs (images, and targets where the method takes
    them); each worker takes its share of every one."""
    gen = torch.Generator().manual_seed(1)
    shape = case.image_shape or (3, case.size, case.size)
    views = [torch.rand(GLOBAL_BATCH, *shape, generator=gen) for _ in range(case.views)]
    return views + case.extra(gen)


def _result(model, loss: torch.Tensor, case: Case) -> dict[str, object]:
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    out: dict[str, object] = {"loss": model.comm.mean(loss.detach()), "grads": grads}
    for name in case.extra_state:
        out[name] = getattr(model, name).clone()
    return out


def _step(rank: int, name: str, out_dir: str) -> None:
    """One worker's share of a case: half the batch through DDP, its loss and gradients
    saved for the test to compare."""
    case = CASES[name]
    model = _build(case, Collective.from_process_group())
    ddp = torch.nn.parallel.DistributedDataParallel(
        model, find_unused_parameters=not model.uses_all_parameters
    )
    loss = ddp(case.per_worker([v.chunk(WORLD)[rank] for v in _views(case)]))
    loss.backward()
    torch.save(_result(model, loss, case), Path(out_dir) / f"rank{rank}.pt")


def _resume(rank: int, out_dir: str) -> None:
    """Three epochs of data-parallel Deep InfoMax through the loop (its prior samples are
    drawn from each worker's global random state, its views from each worker's
    generator), then again from the first epoch's checkpoint (which rank 0 alone writes,
    as a trial's does); rank 0 saves both runs' epoch losses."""
    from trainables.data import DataSpec, load_dataset
    from trainables.hyperparameters import TrainingHyperparameters, resolve_trial
    from trainables.loop import LoopSettings, train
    from trainables.methods import build_method

    comm = Collective.from_process_group()
    data = load_dataset(DataSpec("shapes", num_train=128, num_test=64, seed=0))
    training = TrainingHyperparameters(lr=3e-3, weight_decay=0.0, batch_size=32,
                                       aug_strength=0.5)
    settings = LoopSettings(epochs=3, seed=0, knn_k=5, linear_probe="never",
                            mlp_probe="never")
    checkpoint = Path(out_dir) / "epoch1.pt"

    def method():
        torch.manual_seed(0)
        return build_method("dim", "small_cnn", data, resolve_trial("dim", {}).method, comm)

    def keep(losses: dict[int, float]):
        def report(result) -> None:
            losses[result.epoch] = result.metrics["loss"]
            if result.epoch == 1 and rank == 0:
                torch.save(result.state(), checkpoint)
        return report

    uninterrupted: dict[int, float] = {}
    train(method(), data, training, settings, keep(uninterrupted))
    dist.barrier()  # rank 0 has written the checkpoint
    resumed: dict[int, float] = {}
    train(method(), data, training, settings, keep(resumed),
          resume_state=torch.load(checkpoint, weights_only=True))
    if rank == 0:
        torch.save({"uninterrupted": uninterrupted, "resumed": resumed},
                   Path(out_dir) / "losses.pt")


def _serve(rank: int, port: int, tasks: Any, done: Any) -> None:
    """A worker of the pool: one gloo process group for every case (starting a process
    and importing torch costs more than a case), tasks (a function of this module and
    its arguments after the rank) taken from ``tasks`` until None; each outcome (None,
    or the traceback) goes to ``done``."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=WORLD,
                            timeout=datetime.timedelta(seconds=CASE_TIMEOUT_S))
    try:
        while (task := tasks.get()) is not None:
            function, args = task
            try:
                function(rank, *args)
            except Exception:  # handed to the test, which fails with it
                done.put((rank, traceback.format_exc()))
            else:
                done.put((rank, None))
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def gloo_pool() -> Iterator[Callable[..., None]]:
    """Runs a task on two gloo CPU workers that live as long as this module's tests."""
    context = mp.get_context("spawn")
    tasks = [context.Queue() for _ in range(WORLD)]
    done = context.Queue()
    port = _free_port()
    workers = [context.Process(target=_serve, args=(rank, port, tasks[rank], done),
                               daemon=True) for rank in range(WORLD)]
    for worker in workers:
        worker.start()

    def run(task: str | Callable[[int, str], None], out_dir: Path) -> None:
        """``task``: a case's name (its ``_step``), or a function of the rank and
        ``out_dir``."""
        function, args = ((_step, (task, str(out_dir))) if isinstance(task, str)
                          else (task, (str(out_dir),)))
        for queue in tasks:
            queue.put((function, args))
        outcomes = [done.get(timeout=2 * CASE_TIMEOUT_S) for _ in range(WORLD)]
        failures = [error for _, error in outcomes if error is not None]
        assert not failures, failures[0]

    yield run
    for queue in tasks:
        queue.put(None)
    for worker in workers:
        worker.join(timeout=CASE_TIMEOUT_S)


@pytest.mark.parametrize("name", sorted(CASES))
def test_two_workers_match_one_process_on_the_whole_batch(
    name: str, tmp_path: Path, gloo_pool: Callable[[str, Path], None]
) -> None:
    case = CASES[name]
    gloo_pool(name, tmp_path)
    model = _build(case, Collective())
    loss = model(case.per_worker(_views(case)))
    loss.backward()
    single = _result(model, loss, case)
    assert single["grads"], "the single-process step produced no gradient"
    for rank in range(WORLD):
        worker = torch.load(tmp_path / f"rank{rank}.pt", weights_only=True)
        torch.testing.assert_close(worker["loss"], single["loss"], rtol=1e-5, atol=1e-6)
        assert worker["grads"].keys() == single["grads"].keys()
        for param, grad in single["grads"].items():
            torch.testing.assert_close(worker["grads"][param], grad, rtol=1e-4, atol=1e-6,
                                       msg=f"{name} rank {rank}: gradient of {param}")
        for state in case.extra_state:
            torch.testing.assert_close(worker[state], single[state])


def test_a_resumed_data_parallel_run_trains_on_as_the_uninterrupted_one(
    tmp_path: Path, gloo_pool: Callable[..., None]
) -> None:
    """Each rank draws its own random numbers; the checkpoint carries every rank's random
    states, so that rank 1 does not resume from rank 0's and repeat its draws."""
    gloo_pool(_resume, tmp_path)
    losses = torch.load(tmp_path / "losses.pt", weights_only=True)
    for epoch in (2, 3):
        assert losses["resumed"][epoch] == pytest.approx(losses["uninterrupted"][epoch],
                                                         rel=1e-6), epoch


def test_every_registered_method_has_an_equivalence_case() -> None:
    assert {case.method for case in CASES.values()} == set(METHODS)


def test_single_process_collective_is_the_identity() -> None:
    comm = Collective()
    x = torch.randn(3, 2, requires_grad=True)
    assert comm.gather(x) is x and comm.local_slice(x) is x and comm.mean(x) is x
