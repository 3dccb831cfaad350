"""optimizer: the loop's SimCLR training with LARS against the same with momentum SGD.

LARS (``train.optimizer: lars``, SimCLR's optimiser at large batches) is hand-written
(``trainables.optim``), where SGD and AdamW are torch's fused kernels on CUDA. This prices
its update: the platform's loop as a trial runs it, evaluation switched off, the same
model, views and data order, with only the optimiser changed; AdamW, the loop's default,
is shown beside them. Each contender runs at a learning rate on its own scale (the
figures do not depend on it, only the losses printed beside them do).

The tensor operations each loop dispatches per step (views included) are counted too: a
proxy for kernel launches, which decide a short step's time on a GPU.

    python -m benchmarks.optimizer [--device cuda] [--backbone resnet18] [--batch 512]
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import torch

from benchmarks.common import alternate, conclude, parser, print_rates, start
from benchmarks.step import operations_per_step, platform_loop
from trainables.data import DataSpec, load_dataset
from trainables.hyperparameters import resolve_trial
from trainables.loop import LoopSettings, resolve_channels_last, resolve_precision
from trainables.methods import build_method

#: Each optimiser's learning rate at batch 256 (scaled linearly with the batch): SimCLR's
#: 0.3 for LARS, a common momentum-SGD rate, and the loop's AdamW default.
LEARNING_RATES = {"sgd": 0.03, "lars": 0.3, "adamw": 1e-3}


def main() -> None:
    cli = parser(__doc__.splitlines()[0], repeats=3)
    cli.add_argument("--backbone", default="small_cnn", help="default: small_cnn")
    cli.add_argument("--images", type=int, default=2048, help="default: 2048")
    cli.add_argument("--batch", type=int, default=256, help="default: 256")
    cli.add_argument("--epochs", type=int, default=2, help="epochs per repeat (default 2)")
    cli.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"],
                     help="autocast of all contenders (auto: bf16 on a CUDA GPU with native "
                          "bf16, else fp32)")
    args = cli.parse_args()
    device = start(args, "optimizer")

    dataset = load_dataset(DataSpec("shapes", num_train=args.images, num_test=64,
                                    seed=args.seed))
    values = resolve_trial("simclr", {"batch_size": args.batch})
    torch.manual_seed(args.seed)
    template = build_method("simclr", args.backbone, dataset, values.method)
    precision = resolve_precision(args.precision, device)
    channels_last = resolve_channels_last("auto", device, precision)
    losses: dict[str, float] = {}
    contenders: dict[str, Callable[[], float]] = {}
    for name, lr in LEARNING_RATES.items():
        training = dataclasses.replace(values.training, lr=lr * args.batch / 256)
        settings = LoopSettings(epochs=args.epochs, eval_every=args.epochs, device=str(device),
                                seed=args.seed, precision=precision,
                                channels_last=channels_last, optimizer=name)
        run = platform_loop(template, dataset, training, settings)
        contenders[name] = lambda run=run, name=name: losses.__setitem__(name, run())
    steps = args.images // args.batch
    print(f"SimCLR, {args.backbone}, {steps * args.batch} images x {args.epochs} epochs, batch "
          f"{args.batch}, {precision}{', channels-last' if channels_last else ''}, "
          f"{args.repeats} repeats")
    timings = alternate(contenders, args.repeats, device)
    rates = print_rates(timings, args.epochs * steps * args.batch, "images")
    print("  last-epoch loss: " + ", ".join(f"{name} {loss:.4f}" for name, loss in losses.items()))
    print("  tensor operations per step: " + ", ".join(
        f"{name} {operations_per_step(run, args.epochs * steps):,.1f}"
        for name, run in contenders.items()))
    conclude("optimizer", rates["lars"] / rates["sgd"],
             "LARS images/s over momentum SGD's (fused on CUDA) in the loop")


if __name__ == "__main__":
    main()
