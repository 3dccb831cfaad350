"""Data-parallel losses give the single-process result: 2 gloo CPU workers, each with half
of a batch, must produce the loss and parameter gradients of one process that sees the
whole batch (and, for MoCo, the same queue).

BatchNorm is left out of the networks here: SyncBatchNorm has no CPU implementation, and
per-worker BatchNorm statistics legitimately differ from whole-batch statistics.
"""

from __future__ import annotations

import copy
import os
import socket
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from trainables.distributed import Collective
from trainables.hparams import resolve
from trainables.methods import method_class

WORLD = 2
GLOBAL_BATCH = 8


def _build(method: str, comm: Collective):
    torch.manual_seed(0)
    cls = method_class(method)
    values = resolve(cls.hyperparameters,
                     {"proj_dim": 4, "proj_hidden_dim": 8, "temperature": 0.3,
                      **({"queue_size": 16, "momentum": 0.9} if method == "moco" else {})},
                     owner=method)
    encoder = nn.Sequential(nn.Flatten(), nn.Linear(3 * 2 * 2, 8))
    model = cls(encoder, 8, values, comm)
    model.projector = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 4))
    if method == "moco":
        model.key_encoder = copy.deepcopy(model.encoder).requires_grad_(False)
        model.key_projector = copy.deepcopy(model.projector).requires_grad_(False)
    return model


def _views() -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    return [torch.randn(GLOBAL_BATCH, 3, 2, 2, generator=gen) for _ in range(2)]


def _one_step(model, views) -> dict[str, object]:
    loss = model(views)
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    out: dict[str, object] = {"loss": model.comm.mean(loss.detach()), "grads": grads}
    if hasattr(model, "queue"):
        out["queue"] = model.queue.clone()
    return out


def _worker(rank: int, method: str, port: int, out_dir: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    try:
        model = _build(method, Collective.from_process_group())
        ddp = torch.nn.parallel.DistributedDataParallel(model)
        local = [v.chunk(WORLD)[rank] for v in _views()]
        loss = ddp(local)
        loss.backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        saved = {"loss": model.comm.mean(loss.detach()), "grads": grads}
        if method == "moco":
            saved["queue"] = model.queue.clone()
        torch.save(saved, Path(out_dir) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("method", ["simclr", "moco"])
def test_two_workers_match_one_process_on_the_whole_batch(method: str, tmp_path: Path) -> None:
    mp.spawn(_worker, args=(method, _free_port(), str(tmp_path)), nprocs=WORLD, join=True)
    single = _one_step(_build(method, Collective()), _views())
    for rank in range(WORLD):
        worker = torch.load(tmp_path / f"rank{rank}.pt", weights_only=True)
        torch.testing.assert_close(worker["loss"], single["loss"], rtol=1e-5, atol=1e-6)
        assert worker["grads"].keys() == single["grads"].keys()
        for name, grad in single["grads"].items():
            torch.testing.assert_close(worker["grads"][name], grad, rtol=1e-4, atol=1e-6,
                                       msg=f"{method} rank {rank}: gradient of {name}")
        if method == "moco":
            torch.testing.assert_close(worker["queue"], single["queue"])


def test_single_process_collective_is_the_identity() -> None:
    comm = Collective()
    x = torch.randn(3, 2, requires_grad=True)
    assert comm.gather(x) is x and comm.local_slice(x) is x and comm.mean(x) is x
