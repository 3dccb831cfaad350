"""MoCo's momentum update and FIFO queue, on a tiny linear encoder."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from search_spaces import resolve_hyperparameters
from trainables.losses import info_nce
from trainables.methods.moco import MoCo


def make_moco(**overrides) -> MoCo:
    torch.manual_seed(0)
    encoder = nn.Sequential(nn.Flatten(), nn.Linear(12, 6))
    values = resolve_hyperparameters(
        MoCo.hyperparameters,
        {"queue_size": 5, "proj_dim": 3, "proj_hidden_dim": 4, **overrides},
        owner="moco",
    )
    return MoCo(encoder, 6, values)


def test_momentum_update_follows_the_formula() -> None:
    moco = make_moco(momentum=0.9)
    with torch.no_grad():
        for p in [*moco.encoder.parameters(), *moco.projector.parameters()]:
            p.add_(1.0)
    queries = [p.detach().clone() for p in moco._query_params()]
    keys_before = [p.detach().clone() for p in moco._key_params()]
    moco.momentum_update()
    for q, k0, k1 in zip(queries, keys_before, moco._key_params(), strict=True):
        torch.testing.assert_close(k1, 0.9 * k0 + 0.1 * q)


def test_key_encoder_starts_as_a_copy_and_gets_no_gradient() -> None:
    moco = make_moco()
    for q, k in zip(moco._query_params(), moco._key_params(), strict=True):
        torch.testing.assert_close(q, k)
        assert not k.requires_grad
    views = [torch.randn(4, 3, 2, 2), torch.randn(4, 3, 2, 2)]
    moco(views).backward()
    assert all(p.grad is None for p in moco._key_params())
    assert all(p.grad is not None for p in moco.encoder.parameters())


def test_queue_is_fifo_and_wraps_around() -> None:
    moco = make_moco(queue_size=5)
    first = torch.arange(9, dtype=torch.float32).view(3, 3)
    moco.enqueue(first)
    torch.testing.assert_close(moco.queue[:3], first)
    assert int(moco.queue_ptr) == 3
    second = 100 + torch.arange(9, dtype=torch.float32).view(3, 3)
    moco.enqueue(second)
    # slots 3, 4 then 0: the oldest key (row 0 of ``first``) is replaced first
    torch.testing.assert_close(moco.queue[3:5], second[:2])
    torch.testing.assert_close(moco.queue[0], second[2])
    torch.testing.assert_close(moco.queue[1:3], first[1:])
    assert int(moco.queue_ptr) == 1


def test_batch_larger_than_queue_keeps_newest_keys() -> None:
    moco = make_moco(queue_size=5)
    keys = torch.arange(21, dtype=torch.float32).view(7, 3)
    moco.enqueue(keys)
    assert sorted(moco.queue[:, 0].tolist()) == sorted(keys[-5:, 0].tolist())


@pytest.mark.parametrize("symmetric,expected_new", [(False, 4), (True, 8)])
def test_forward_enqueues_this_batch_keys(symmetric: bool, expected_new: int) -> None:
    moco = make_moco(queue_size=16, symmetric=symmetric)
    loss = moco([torch.randn(4, 3, 2, 2), torch.randn(4, 3, 2, 2)])
    assert torch.isfinite(loss)
    assert int(moco.queue_ptr) == expected_new
    norms = moco.queue[:expected_new].norm(dim=1)
    torch.testing.assert_close(norms, torch.ones(expected_new))


def test_forward_contrasts_with_the_queue_as_it_was_before_this_batch() -> None:
    """The loss of a batch is formed against the queue as it was; only then are the
    batch's keys enqueued (facebookresearch/moco). Enqueueing first would make the
    positive key one of its own negatives and drop the oldest keys too early."""
    moco = make_moco(queue_size=6, momentum=0.9)
    moco.eval()  # BatchNorm from running statistics: the recomputation below is exact
    views = [torch.randn(4, 3, 2, 2), torch.randn(4, 3, 2, 2)]
    queue_before = moco.queue.clone()
    loss = moco(views)
    # The forward's momentum update is done, so the key encoder is the one it used.
    with torch.no_grad():
        queries = moco._queries(views[0])
        keys = F.normalize(moco.key_projector(moco.key_encoder(views[1])), dim=1)
    temperature = moco.values["temperature"]
    assert not torch.allclose(moco.queue, queue_before)  # the batch's keys went in
    torch.testing.assert_close(loss, info_nce(queries, keys, queue_before, temperature))
    assert not torch.allclose(loss, info_nce(queries, keys, moco.queue, temperature))


def test_the_source_s_linear_projector_is_one_layer_followed_by_its_key_copy() -> None:
    """MoCo as the source describes it ("does not employ a MLP at the output"): one linear
    layer on each encoder, the key side a momentum copy of the query side."""
    moco = make_moco(projector="linear", momentum=0.5)
    assert isinstance(moco.projector, nn.Linear) and moco.projector.out_features == 3
    assert isinstance(moco.key_projector, nn.Linear)
    with torch.no_grad():
        moco.projector.weight.add_(1.0)
    before = moco.key_projector.weight.detach().clone()
    moco.momentum_update()
    torch.testing.assert_close(moco.key_projector.weight,
                               0.5 * before + 0.5 * moco.projector.weight.detach())
    moco([torch.randn(4, 3, 2, 2), torch.randn(4, 3, 2, 2)]).backward()
    assert moco.projector.weight.grad is not None
