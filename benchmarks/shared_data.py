"""shared-data: host memory of N concurrent trials sharing the dataset through Ray's object
store against N trials holding a copy each.

N Ray actors stand for N concurrent trials: each imports the torch core, obtains the
dataset, reads every page of it and takes a few SimCLR training steps on batches drawn
from it (on ``--device``), then holds everything while the memory is measured. Two
contenders, each in its own Ray session:

* shared: the platform's ``DatasetHandle`` (numpy arrays in the object store, mapped
  into every trial);
* copies: the same dataset put into the object store as torch tensors, which Ray
  deserialises into a private copy in every trial (what the platform did before; the
  same memory as each trial loading the data itself).

Memory is the proportional set size (PSS, Linux): a page shared by k processes counts
1/k in each, so the sum over the Ray session's processes counts every page once. The
dataset is random uint8 images of CIFAR-10's size by default (contents do not matter).

    python -m benchmarks.shared_data [--trials 4] [--images 50000] [--device cuda]
"""

from __future__ import annotations

import os
import statistics
from dataclasses import dataclass
from pathlib import Path

import ray
import torch

from benchmarks.common import conclude, parser, start
from trainables.data import ImageDataset
from trainables.trainable import DatasetHandle


@dataclass(frozen=True)
class TensorHandle:
    """The dataset put into the object store as it is (torch tensors)."""

    ref: ray.ObjectRef

    def get(self) -> ImageDataset:
        return ray.get(self.ref)


def pss_mib(pid: int) -> float:
    """Proportional set size of a process, in MiB (0 if it is gone)."""
    try:
        text = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except OSError:
        return 0.0
    return next(int(line.split()[1]) for line in text.splitlines()
                if line.startswith("Pss:")) / 1024


def descendants(pid: int) -> set[int]:
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parents[int(entry.name)] = int(
                    (entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except OSError:
                continue
    found, frontier = set(), {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier}
        found |= frontier
    return found


@ray.remote(num_cpus=0)
class Trial:
    """A stand-in for one trial: it holds the dataset and a model that has trained on it."""

    def hold(self, handle: DatasetHandle | TensorHandle, device: str, steps: int) -> int:
        from trainables.augment import AugmentationPolicy
        from trainables.hyperparameters import resolve_trial
        from trainables.methods import build_method

        torch.set_num_threads(1)
        self.dataset = handle.get()
        for tensor in (self.dataset.pretrain_images, self.dataset.test_images):
            int(tensor.view(-1)[::4096].sum())  # map every page, as an epoch would
        values = resolve_trial("simclr", {})
        self.method = build_method("simclr", "small_cnn", self.dataset, values.method)
        self.method.to(device)
        optimizer = torch.optim.AdamW(self.method.parameters(), lr=1e-3)
        images = self.dataset.pretrain_images.to(device)
        generator = torch.Generator(device=device).manual_seed(0)
        policy = AugmentationPolicy.from_strength(0.5)
        for step in range(steps):
            batch = images[torch.arange(step * 64, (step + 1) * 64, device=device)]
            with torch.no_grad():
                views = self.method.make_views(batch, policy, generator)
            loss = self.method(views)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        return os.getpid()


def measure(dataset: ImageDataset, shared: bool, args) -> tuple[float, float]:
    """(session PSS, median trial PSS) in MiB with ``args.trials`` trials holding the data."""
    ray.init(address="local", num_cpus=max(1, args.threads),
             num_gpus=1 if args.device == "cuda" else 0, include_dashboard=False,
             logging_level="ERROR")
    try:
        handle = DatasetHandle.put(dataset) if shared else TensorHandle(ray.put(dataset))
        gpus = 1 / args.trials if args.device == "cuda" else 0
        trials = [Trial.options(num_gpus=gpus).remote() for _ in range(args.trials)]
        pids = ray.get([t.hold.remote(handle, args.device, args.steps) for t in trials])
        session = pss_mib(os.getpid()) + sum(pss_mib(p) for p in descendants(os.getpid()))
        per_trial = statistics.median(pss_mib(p) for p in pids)
        for trial in trials:
            ray.kill(trial)
        return session, per_trial
    finally:
        ray.shutdown()


def main() -> None:
    cli = parser(__doc__.splitlines()[0], repeats=2)
    cli.add_argument("--trials", type=int, default=4, help="concurrent trials (default 4)")
    cli.add_argument("--images", type=int, default=50_000, help="default: 50000")
    cli.add_argument("--size", type=int, default=32, help="image side (default 32)")
    cli.add_argument("--steps", type=int, default=3, help="training steps per trial (default 3)")
    args = cli.parse_args()
    start(args, "shared-data")

    generator = torch.Generator().manual_seed(args.seed)
    images = torch.randint(0, 256, (args.images, 3, args.size, args.size), dtype=torch.uint8,
                           generator=generator)
    test = images[: max(1, args.images // 5)].clone()
    dataset = ImageDataset("random", images, images, torch.zeros(args.images, dtype=torch.long),
                           test, torch.zeros(len(test), dtype=torch.long), 10,
                           (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
    data_mib = (images.numel() + test.numel() + 8 * (args.images + len(test))) / 2**20
    print(f"{args.trials} concurrent trials, dataset {data_mib:,.0f} MiB ({args.images} images "
          f"of {args.size}x{args.size} + {len(test)} test images), {args.repeats} repeats")
    results: dict[str, list[tuple[float, float]]] = {"shared": [], "copies": []}
    for r in range(args.repeats):
        for name in (["shared", "copies"] if r % 2 == 0 else ["copies", "shared"]):
            results[name].append(measure(dataset, name == "shared", args))
    totals = {}
    for name, label in (("shared", "object store, mapped into each trial"),
                        ("copies", "a private copy in each trial")):
        totals[name] = statistics.median(session for session, _ in results[name])
        trial = statistics.median(per_trial for _, per_trial in results[name])
        print(f"  {label:<38} session {totals[name]:>8,.0f} MiB   per trial {trial:>7,.0f} MiB")
    saved = totals["copies"] - totals["shared"]
    print(f"  saved by sharing: {saved:,.0f} MiB ({saved / data_mib:.1f} dataset copies; "
          f"{args.trials - 1} expected)")
    conclude("shared-data", totals["copies"] / totals["shared"],
             f"host memory of {args.trials} trials with a copy each over sharing one "
             f"({data_mib:,.0f} MiB dataset)")


if __name__ == "__main__":
    main()
