"""step: the platform's SimCLR training loop against a bare PyTorch loop doing the same work.

The platform contender is ``trainables.loop.train`` as a trial runs it (views from the
method, forward, loss, backward, optimiser and schedule steps, the epoch's bookkeeping),
with evaluation switched off so that only training is timed. The bare contender is the
loop a user would write by hand: the same model, the same batched augmentation and data
order from the same seeds, an inline NT-Xent, AdamW and the same cosine schedule, with
the loss summed on the device and read once at the end. Both start from the same weights
and both own their setup (optimiser, data on the device). Same seeds, same arithmetic:
their final losses must agree, which the script checks, so that the ratio compares loop
overhead and nothing else.

Where a step is short (a small model on a GPU, bound by kernel launches) the timing is
noisy, so the script also counts the tensor operations each loop dispatches per step on
its device (views included), a proxy for the launches that does not depend on the
machine's load.

    python -m benchmarks.step [--device cuda] [--backbone resnet18] [--images 2048]
"""

from __future__ import annotations

import argparse
import copy
import math
from collections.abc import Callable
from dataclasses import dataclass
from unittest import mock

import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

from benchmarks.common import alternate, conclude, parser, print_rates, start
from trainables import loop
from trainables.augment import AugmentationPolicy, augment
from trainables.data import DataSpec, ImageDataset, load_dataset
from trainables.hyperparameters import Hyperparameters, TrainingHyperparameters, resolve_trial
from trainables.loop import LoopSettings, resolve_channels_last, resolve_precision
from trainables.methods import build_method


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float) -> torch.Tensor:
    z = F.normalize(torch.cat([z1, z2]), dim=1)
    logits = (z @ z.T / temperature).fill_diagonal_(float("-inf"))
    n = z1.shape[0]
    targets = torch.cat([torch.arange(n, 2 * n), torch.arange(n)]).to(z.device)
    return F.cross_entropy(logits, targets)


def bare_loop(template: torch.nn.Module, images: torch.Tensor, training, args,
              device: torch.device, precision: str, channels_last: bool) -> Callable[[], float]:
    """A fresh copy of ``template`` trained for ``args.epochs`` epochs per call; returns the
    last epoch's mean loss."""

    def run() -> float:
        model = copy.deepcopy(template).to(device)
        if channels_last:
            model.to(memory_format=torch.channels_last)
        # The platform's optimiser: AdamW, fused on CUDA.
        optimizer = torch.optim.AdamW(model.parameters(), lr=training.lr,
                                      weight_decay=training.weight_decay,
                                      fused=True if device.type == "cuda" else None)
        steps = len(images) // training.batch_size
        total = args.epochs * steps
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda s: 0.5 * (1.0 + math.cos(math.pi * min(1.0, s / total))))
        policy = AugmentationPolicy.from_strength(training.aug_strength, training.crop_scale)
        views = torch.Generator(device=device).manual_seed(args.seed)
        data = images.to(device)
        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
        for epoch in range(1, args.epochs + 1):
            model.train()
            order = torch.randperm(
                len(data), generator=torch.Generator().manual_seed(args.seed * 100_003 + epoch)
            ).to(device)
            loss_sum = torch.zeros((), device=device)
            for s in range(steps):
                batch = data[order[s * training.batch_size : (s + 1) * training.batch_size]]
                with torch.no_grad():
                    x = torch.cat([augment(batch, policy, views), augment(batch, policy, views)])
                if channels_last:
                    x = x.contiguous(memory_format=torch.channels_last)
                with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
                    z = model.projector(model.encoder(x))
                    loss = nt_xent(*z.chunk(2), args.temperature)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                scheduler.step()
                loss_sum += loss.detach()
        return float(loss_sum) / steps

    return run


class _OperationCount(TorchDispatchMode):
    """Counts the tensor operations dispatched while it is active (torch's own dispatch
    hook: every aten operation passes through it once)."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.count += 1
        return func(*args, **(kwargs or {}))


def operations_per_step(run: Callable[[], object], steps: int) -> float:
    """Tensor operations per training step of one call of ``run`` (setup included, spread
    over its steps)."""
    with _OperationCount() as counter:
        run()
    return counter.count / steps


def platform_loop(template: torch.nn.Module, dataset, training, settings: LoopSettings
                  ) -> Callable[[], float]:
    """A fresh copy of ``template`` trained by the platform's loop per call, evaluation
    switched off; returns the last epoch's mean loss."""

    def run() -> float:
        results: list = []
        with mock.patch.object(loop, "evaluate", lambda *a, **k: {}):
            loop.train(copy.deepcopy(template), dataset, training, settings, results.append)
        return results[-1].metrics["loss"]

    return run


def add_loop_flags(cli: argparse.ArgumentParser, precision_help: str) -> None:
    """The flags of a benchmark that times the loop's SimCLR training."""
    cli.add_argument("--backbone", default="small_cnn", help="default: small_cnn")
    cli.add_argument("--images", type=int, default=2048, help="default: 2048")
    cli.add_argument("--batch", type=int, default=256, help="default: 256")
    cli.add_argument("--epochs", type=int, default=2, help="epochs per repeat (default 2)")
    cli.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"],
                     help=f"{precision_help} (auto: bf16 on a CUDA GPU with native bf16, "
                          "else fp32)")


@dataclass(frozen=True)
class SimCLRSetup:
    """What the contenders of a loop benchmark share: the data, the trial's values, the
    initial model each contender copies, and the resolved precision and layout."""

    dataset: ImageDataset
    values: Hyperparameters
    template: torch.nn.Module
    precision: str
    channels_last: bool

    def settings(self, args: argparse.Namespace, device: torch.device,
                 **changes: object) -> LoopSettings:
        """The loop's settings: ``--epochs`` without evaluation until the last."""
        return LoopSettings(epochs=args.epochs, eval_every=args.epochs, device=str(device),
                            seed=args.seed, precision=self.precision,
                            channels_last=self.channels_last, **changes)

    def images(self, args: argparse.Namespace) -> int:
        """Images one contender trains on per call (whole batches only), after printing
        what it trains."""
        steps = args.images // args.batch
        print(f"SimCLR, {args.backbone}, {steps * args.batch} images x {args.epochs} epochs, "
              f"batch {args.batch}, {self.precision}"
              f"{', channels-last' if self.channels_last else ''}, {args.repeats} repeats")
        return args.epochs * steps * args.batch


def simclr_setup(args: argparse.Namespace, device: torch.device, **given: object
                 ) -> SimCLRSetup:
    """The shapes images, SimCLR's values at ``--batch`` (and ``given``), its model
    initialised from ``--seed``, and the precision and layout ``--precision`` resolves to
    on ``device``."""
    dataset = load_dataset(DataSpec("shapes", num_train=args.images, num_test=64,
                                    seed=args.seed))
    values = resolve_trial("simclr", {"batch_size": args.batch, **given})
    torch.manual_seed(args.seed)
    template = build_method("simclr", args.backbone, dataset, values.method)
    precision = resolve_precision(args.precision, device)
    return SimCLRSetup(dataset, values, template, precision,
                       resolve_channels_last("auto", device, precision))


def main() -> None:
    cli = parser(__doc__.splitlines()[0], repeats=3)
    add_loop_flags(cli, "both loops")
    cli.add_argument("--temperature", type=float, default=0.2)
    args = cli.parse_args()
    device = start(args, "step")

    setup = simclr_setup(args, device, temperature=args.temperature)
    dataset, template = setup.dataset, setup.template
    training: TrainingHyperparameters = setup.values.training
    precision, channels_last = setup.precision, setup.channels_last
    settings = setup.settings(args, device)
    losses: dict[str, list[float]] = {"platform": [], "bare": []}

    def recorded(name: str, run: Callable[[], float]) -> Callable[[], None]:
        return lambda: losses[name].append(run())

    contenders = {
        "platform loop": recorded("platform", platform_loop(template, dataset, training,
                                                            settings)),
        "bare PyTorch loop": recorded("bare", bare_loop(template, dataset.pretrain_images,
                                                        training, args, device, precision,
                                                        channels_last)),
    }
    images = setup.images(args)
    timings = alternate(contenders, args.repeats, device)
    rates = print_rates(timings, images, "images")
    platform, bare = losses["platform"][-1], losses["bare"][-1]
    same = math.isclose(platform, bare, rel_tol=1e-4 if precision == "fp32" else 1e-2)
    print(f"  last-epoch loss: platform {platform:.6f}, bare {bare:.6f} "
          f"({'the same work' if same else 'DIFFERENT: the contenders do not do the same work'})")
    steps = images // args.batch
    platform_ops = operations_per_step(contenders["platform loop"], steps)
    bare_ops = operations_per_step(contenders["bare PyTorch loop"], steps)
    print(f"  tensor operations per step: platform {platform_ops:,.1f}, bare {bare_ops:,.1f}")
    conclude("step", rates["platform loop"] / rates["bare PyTorch loop"],
             "platform loop images/s over a bare PyTorch loop (1.00 = no overhead)")


if __name__ == "__main__":
    main()
