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

from benchmarks.common import alternate, conclude, parser, print_rates, start
from benchmarks.step import add_loop_flags, operations_per_step, platform_loop, simclr_setup

#: Each optimiser's learning rate at batch 256 (scaled linearly with the batch): SimCLR's
#: 0.3 for LARS, a common momentum-SGD rate, and the loop's AdamW default.
LEARNING_RATES = {"sgd": 0.03, "lars": 0.3, "adamw": 1e-3}


def main() -> None:
    cli = parser(__doc__.splitlines()[0], repeats=3)
    add_loop_flags(cli, "all contenders")
    args = cli.parse_args()
    device = start(args, "optimizer")

    setup = simclr_setup(args, device)
    losses: dict[str, float] = {}
    contenders: dict[str, Callable[[], float]] = {}
    for name, lr in LEARNING_RATES.items():
        training = dataclasses.replace(setup.values.training, lr=lr * args.batch / 256)
        run = platform_loop(setup.template, setup.dataset, training,
                            setup.settings(args, device, optimizer=name))
        contenders[name] = lambda run=run, name=name: losses.__setitem__(name, run())
    images = setup.images(args)
    timings = alternate(contenders, args.repeats, device)
    rates = print_rates(timings, images, "images")
    print("  last-epoch loss: " + ", ".join(f"{name} {loss:.4f}" for name, loss in losses.items()))
    print("  tensor operations per step: " + ", ".join(
        f"{name} {operations_per_step(run, images // args.batch):,.1f}"
        for name, run in contenders.items()))
    conclude("optimizer", rates["lars"] / rates["sgd"],
             "LARS images/s over momentum SGD's (fused on CUDA) in the loop")


if __name__ == "__main__":
    main()
