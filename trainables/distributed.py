"""Collective operations that contrastive methods need when a batch spans several workers.

A contrastive loss must see the global batch: SimCLR's negatives and MoCo's new keys come
from every worker. ``gather`` concatenates a tensor from all workers in rank order and,
unlike ``torch.distributed.all_gather``, carries gradients back: the backward pass sums
the gradient of the gathered tensor over all workers (all-reduce) and returns this
worker's slice. Because every worker computes the same loss on the gathered batch, each
holds the full gradient of its own slice, and after DDP averages parameter gradients over
workers, every worker ends with exactly the single-process gradient of the whole batch.
The classic bug, returning the local slice of the local gradient without the all-reduce,
makes the gradient through the negatives 1/world_size too small.

Every worker must contribute a tensor of the same shape (the loop gives each rank an
equal share of every global batch).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor


class _GatherWithGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, world_size: int, rank: int) -> Tensor:  # type: ignore[override]
        ctx.world_size, ctx.rank = world_size, rank
        parts = [torch.empty_like(x) for _ in range(world_size)]
        dist.all_gather(parts, x.contiguous())
        return torch.cat(parts)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None, None]:  # type: ignore[override]
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        return grad.chunk(ctx.world_size)[ctx.rank], None, None


@dataclass(frozen=True)
class Collective:
    """This worker's place in the process group; the default is a single process, for
    which every operation is the identity."""

    world_size: int = 1
    rank: int = 0

    @classmethod
    def from_process_group(cls) -> Collective:
        if not (dist.is_available() and dist.is_initialized()):
            return cls()
        return cls(dist.get_world_size(), dist.get_rank())

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def gather(self, x: Tensor) -> Tensor:
        """All workers' ``x`` concatenated in rank order, differentiable."""
        if not self.distributed:
            return x
        return _GatherWithGrad.apply(x, self.world_size, self.rank)

    @torch.no_grad()
    def gather_no_grad(self, x: Tensor) -> Tensor:
        if not self.distributed:
            return x
        parts = [torch.empty_like(x) for _ in range(self.world_size)]
        dist.all_gather(parts, x.contiguous())
        return torch.cat(parts)

    @torch.no_grad()
    def broadcast(self, x: Tensor, source: int = 0) -> Tensor:
        if self.distributed:
            dist.broadcast(x, source)
        return x

    @torch.no_grad()
    def mean(self, x: Tensor) -> Tensor:
        """Mean of a tensor over workers (for logging, not for gradients)."""
        if not self.distributed:
            return x
        total = x.detach().clone()
        dist.all_reduce(total, op=dist.ReduceOp.SUM)
        return total / self.world_size

    def local_slice(self, x: Tensor) -> Tensor:
        """This worker's share of a tensor gathered in rank order."""
        return x.chunk(self.world_size)[self.rank] if self.distributed else x


#: The single-process collective, shared because it is immutable.
LOCAL = Collective()
