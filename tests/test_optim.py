"""LARS against a NumPy transcription of its rule (You et al. 2017, as SimCLR uses it),
its closed forms, and a checkpoint round trip."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from torch import nn

from trainables.optim import LARS, TRUST_COEFFICIENT, lars_groups


def _numpy_lars(w: np.ndarray, grads: list[np.ndarray], lrs: list[float], momentum: float,
                weight_decay: float, adapt: bool) -> np.ndarray:
    """The rule, step by step: decay, trust ratio, momentum on the scaled step (the step's
    own learning rate inside the momentum, as SimCLR's schedule gives it)."""
    v = np.zeros_like(w)
    for g, lr in zip(grads, lrs, strict=True):
        g = g + weight_decay * w
        ratio = 1.0
        if adapt and np.linalg.norm(w) > 0 and np.linalg.norm(g) > 0:
            ratio = TRUST_COEFFICIENT * np.linalg.norm(w) / np.linalg.norm(g)
        v = momentum * v + lr * ratio * g
        w = w - v
    return w


@pytest.mark.parametrize("adapt", [True, False])
def test_three_steps_follow_the_rule_under_a_schedule(adapt: bool) -> None:
    """The loop's schedule sets each group's learning rate before every step."""
    rng = np.random.default_rng(0)
    w0 = rng.normal(size=(4, 3))
    grads = [rng.normal(size=(4, 3)) for _ in range(3)]
    factors = [1.0, 0.5, 0.2, 0.1]  # the last is set after the last step
    w = torch.tensor(w0, requires_grad=True)
    optimizer = LARS([{"params": [w], "adapt": adapt}], lr=0.5, momentum=0.9,
                     weight_decay=1e-2)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: factors[step])
    for g in grads:
        w.grad = torch.tensor(g)
        optimizer.step()
        schedule.step()  # the loop steps it after every optimiser step
    expected = _numpy_lars(w0, grads, [0.5 * f for f in factors[:3]], momentum=0.9,
                           weight_decay=1e-2, adapt=adapt)
    np.testing.assert_allclose(w.detach().numpy(), expected, rtol=1e-12)


def test_each_tensor_of_a_group_gets_its_own_trust_ratio() -> None:
    """The step batches a group's tensors (of any shapes) into multi-tensor operations;
    each must still follow the rule on its own, a zero weight and a tensor without a
    gradient included, and the gradients must be left as they were."""
    rng = np.random.default_rng(1)
    shapes = [(4, 3), (2, 3, 3, 3), (5, 2), (6, 2)]
    starts = [rng.normal(size=shape) for shape in shapes]
    starts[2] = np.zeros(shapes[2])
    grads = [[rng.normal(size=shape) * 10.0 ** k for k, shape in enumerate(shapes)]
             for _ in range(2)]
    weights = [torch.tensor(w, requires_grad=True) for w in starts]
    optimizer = LARS([{"params": weights, "adapt": True}], lr=0.3, momentum=0.9,
                     weight_decay=1e-2)
    for step in grads:
        for w, g in zip(weights[:3], step, strict=False):  # the last gets no gradient
            w.grad = torch.tensor(g)
        optimizer.step()
    for k in range(3):
        expected = _numpy_lars(starts[k], [step[k] for step in grads], [0.3, 0.3],
                               momentum=0.9, weight_decay=1e-2, adapt=True)
        np.testing.assert_allclose(weights[k].detach().numpy(), expected, rtol=1e-12)
        np.testing.assert_array_equal(weights[k].grad.numpy(), grads[-1][k])
    np.testing.assert_array_equal(weights[3].detach().numpy(), starts[3])


def test_an_adapted_step_does_not_depend_on_the_gradient_scale() -> None:
    """Without decay the trust ratio divides by the gradient's norm: the step is
    eta * lr * ||w|| along the gradient's direction, whatever its size."""
    steps = []
    for scale in (1e-3, 1.0, 1e3):
        w = torch.tensor([3.0, 4.0], requires_grad=True)
        w.grad = torch.tensor([0.6, 0.8]) * scale
        LARS([w], lr=2.0, momentum=0.0).step()
        steps.append(torch.tensor([3.0, 4.0]) - w.detach())
    for step in steps:
        torch.testing.assert_close(step, 2.0 * TRUST_COEFFICIENT * 5.0 * torch.tensor([0.6, 0.8]))


def test_a_zero_weight_takes_a_plain_momentum_step() -> None:
    w = torch.zeros(3, requires_grad=True)
    w.grad = torch.tensor([1.0, -2.0, 0.5])
    LARS([w], lr=0.1, momentum=0.9, weight_decay=0.5).step()
    torch.testing.assert_close(w.detach(), -0.1 * torch.tensor([1.0, -2.0, 0.5]))


def test_biases_and_normalisation_are_neither_decayed_nor_adapted() -> None:
    model = nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2))
    adapted, plain = lars_groups(model, weight_decay=0.1)
    assert [p.shape for p in adapted["params"]] == [torch.Size([2, 3])]
    assert len(plain["params"]) == 3 and plain["weight_decay"] == 0.0
    assert adapted["adapt"] and not plain["adapt"] and adapted["weight_decay"] == 0.1
    bias = model[0].bias
    before = bias.detach().clone()
    for p in model.parameters():
        p.grad = torch.ones_like(p)
    LARS(lars_groups(model, weight_decay=0.1), lr=0.1, momentum=0.0).step()
    torch.testing.assert_close(bias.detach(), before - 0.1)


def test_the_momentum_survives_a_checkpoint() -> None:
    """A resumed trial loads the optimiser's state: the next step is the same."""
    def trained(steps: int) -> tuple[torch.Tensor, LARS]:
        w = torch.tensor([1.0, 2.0], requires_grad=True)
        optimizer = LARS([w], lr=0.5, momentum=0.9)
        for _ in range(steps):
            w.grad = torch.tensor([0.3, -0.1])
            optimizer.step()
        return w, optimizer

    w, optimizer = trained(2)
    resumed = torch.tensor(w.detach().tolist(), requires_grad=True)
    again = LARS([resumed], lr=0.5, momentum=0.9)
    saved = io.BytesIO()  # as a checkpoint holds it (a state dict shares the live buffers)
    torch.save(optimizer.state_dict(), saved)
    saved.seek(0)
    again.load_state_dict(torch.load(saved, weights_only=True))
    for param in (w, resumed):
        param.grad = torch.tensor([0.3, -0.1])
    optimizer.step()
    again.step()
    torch.testing.assert_close(resumed.detach(), w.detach())
