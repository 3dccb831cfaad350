"""packing: aggregate SimCLR throughput of several trials sharing one GPU through
fractional ``gpus_per_worker`` against one trial alone on it.

Each trial is a Ray task asking for 1/k of a GPU (what ``resources.gpus_per_worker: 0.25``
asks for k = 4), with the dataset from the object store as a study ships it, training with
the platform's loop (evaluation switched off). The k trials finish their set-up, wait for
each other, then train ``--epochs`` epochs together; aggregate throughput is all their
images over the time from that common start to the last trial's end. Small models leave a
large GPU mostly idle, which packing fills.

Needs CUDA. ``--logical-gpu`` runs the same packing on the CPU with a logical GPU, to
check the mechanism on a machine without one (the figures then measure CPU cores, not a
GPU).

    python -m benchmarks.packing --device cuda [--packed 4] [--backbone small_cnn]
"""

from __future__ import annotations

import time
from unittest import mock

import ray
import torch

from benchmarks.common import conclude, parser, start
from trainables.data import DataSpec, load_dataset
from trainables.hyperparameters import resolve_trial
from trainables.loop import LoopSettings
from trainables.trainable import DatasetHandle


@ray.remote(num_cpus=0)
class Barrier:
    def __init__(self) -> None:
        self.arrived = 0

    def arrive(self) -> None:
        self.arrived += 1

    def count(self) -> int:
        return self.arrived


@ray.remote
def trial(data: DatasetHandle, barrier, parties: int, args, seed: int) -> tuple[float, float]:
    """Train one trial after all ``parties`` are ready; returns its (start, end) times."""
    from trainables import loop
    from trainables.pretrain import pretrain, resolve_device

    torch.set_num_threads(args.trial_threads)
    dataset = data.get()
    values = resolve_trial("simclr", {"batch_size": args.batch})
    settings = LoopSettings(epochs=args.epochs, eval_every=args.epochs, seed=seed,
                            device=resolve_device("auto"), precision=args.precision,
                            channels_last="auto", linear_probe="never", mlp_probe="never")
    ray.get(barrier.arrive.remote())
    while ray.get(barrier.count.remote()) < parties:
        time.sleep(0.02)
    began = time.time()
    with mock.patch.object(loop, "evaluate", lambda *a, **k: {}):
        pretrain("simclr", args.backbone, dataset, values, settings, lambda result: None)
    return began, time.time()


def aggregate(data: DatasetHandle, parties: int, images: int, args) -> float:
    """Images per second of ``parties`` trials on 1/parties of a GPU each."""
    barrier = Barrier.remote()
    spans = ray.get([
        trial.options(num_gpus=1 / parties, num_cpus=args.trial_threads).remote(
            data, barrier, parties, args, args.seed + p)
        for p in range(parties)
    ])
    ray.kill(barrier)
    began = max(s for s, _ in spans)
    return parties * args.epochs * images / (max(e for _, e in spans) - began)


def main() -> None:
    cli = parser(__doc__.splitlines()[0], repeats=2)
    cli.add_argument("--packed", type=int, default=4, help="trials on the GPU (default 4)")
    cli.add_argument("--backbone", default="resnet18", help="default: resnet18")
    cli.add_argument("--images", type=int, default=8192, help="default: 8192")
    cli.add_argument("--epochs", type=int, default=3, help="default: 3")
    cli.add_argument("--batch", type=int, default=256, help="default: 256")
    cli.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16", "fp16"])
    cli.add_argument("--trial-threads", type=int, default=1, help="CPUs per trial (default 1)")
    cli.add_argument("--logical-gpu", action="store_true",
                     help="without CUDA: pack on the CPU under a logical GPU (a dry run)")
    args = cli.parse_args()
    device = start(args, "packing")
    if device.type != "cuda" and not args.logical_gpu:
        print("packing: skipped, it needs --device cuda (or --logical-gpu for a dry run)")
        return
    dataset = load_dataset(DataSpec("shapes", num_train=args.images, num_test=64,
                                    seed=args.seed))
    images = args.images // args.batch * args.batch
    ray.init(address="local", num_cpus=max(args.threads, args.packed * args.trial_threads),
             num_gpus=1, include_dashboard=False, logging_level="ERROR")
    try:
        data = DatasetHandle.put(dataset)
        print(f"SimCLR, {args.backbone}, {images} images x {args.epochs} epochs, batch "
              f"{args.batch}, precision {args.precision}; 1 trial on the GPU against "
              f"{args.packed} trials of 1/{args.packed} GPU, {args.repeats} repeats")
        rates: dict[int, list[float]] = {1: [], args.packed: []}
        # One untimed round of each first: a trial's first steps in a fresh worker pay for
        # CUDA's context and kernel selection (measured on an H200: 4,156 images/s in a
        # cold first round against 17,794 in the next).
        for parties in (1, args.packed):
            aggregate(data, parties, images, args)
        for r in range(args.repeats):
            for parties in ([1, args.packed] if r % 2 == 0 else [args.packed, 1]):
                rates[parties].append(aggregate(data, parties, images, args))
                print(f"  repeat {r + 1}, {parties} trial(s): {rates[parties][-1]:>10,.0f} "
                      "images/s in all", flush=True)
    finally:
        ray.shutdown()
    alone, packed = (sorted(rates[p])[len(rates[p]) // 2] for p in (1, args.packed))
    conclude("packing", packed / alone, f"aggregate images/s of {args.packed} trials sharing "
             f"one GPU over 1 trial alone ({args.backbone})")


if __name__ == "__main__":
    main()
