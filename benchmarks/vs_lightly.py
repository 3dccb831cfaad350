"""vs-lightly: SimCLR pretraining throughput of a platform trial against lightly's
reference setup, then the kNN accuracy both reach after the same epochs.

Platform: ``trainables.pretrain.pretrain`` as a trial runs it (batched on-device views,
one forward over both views, the library's NT-Xent), throughput as the loop reports it
(``images_per_sec``: whole epochs, evaluation excluded). lightly: its ``SimCLRTransform``
on PIL images in a ``DataLoader`` with ``--workers`` workers, its ``NTXentLoss`` and the
training step of its SimCLR example (one forward per view), timed over whole epochs.
Both train the same encoder (the platform's CIFAR ResNet-18 or small CNN, with the same
projection head) from the same initial weights, with the same augmentation magnitudes
(no blur), batch size, AdamW, learning rate, cosine schedule and epochs, on the same
built-in ``shapes`` data; both are scored by the same weighted kNN on the held-out split.
Each repeat uses its own seed, so the accuracies' spread over repeats is the seed noise
against which "equal accuracy" is judged.

Defaults: on CUDA the CIFAR ResNet-18; on the CPU the platform's default ``small_cnn``
(a ResNet-18 trains at a few images per second on two cores).

    python -m benchmarks.vs_lightly [--device cuda] [--backbone resnet18] [--epochs 5] [--compile]
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable

import torch
from torch.utils.data import DataLoader

from benchmarks.augment import PILViews, lightly_transform
from benchmarks.common import available_cpus, conclude, parser, start, synchronize
from trainables.augment import AugmentationPolicy
from trainables.backbones import build_encoder
from trainables.data import DataSpec, ImageDataset, load_dataset
from trainables.evaluation import extract_features, knn_accuracy
from trainables.heads import projection_mlp
from trainables.hyperparameters import resolve_trial
from trainables.loop import LoopSettings, resolve_channels_last, resolve_precision
from trainables.pretrain import pretrain


def platform_run(dataset: ImageDataset, args, seed: int, device: torch.device,
                 precision: str) -> tuple[list[float], float]:
    """Per-epoch images/s and the final kNN accuracy of one platform trial."""
    values = resolve_trial("simclr", {
        "batch_size": args.batch, "lr": args.lr, "weight_decay": args.weight_decay,
        "aug_strength": args.strength, "temperature": args.temperature,
    })
    settings = LoopSettings(
        epochs=args.epochs, eval_every=args.epochs, device=str(device), seed=seed,
        knn_k=args.knn_k, linear_probe="never", mlp_probe="never", precision=precision,
        channels_last="auto", compile=args.compile,
    )
    results: list = []
    pretrain("simclr", args.backbone, dataset, values, settings, results.append)
    return [r.metrics["images_per_sec"] for r in results], results[-1].metrics["knn_acc"]


def lightly_run(dataset: ImageDataset, args, seed: int, device: torch.device,
                precision: str) -> tuple[list[float], float]:
    """Per-epoch images/s and the final kNN accuracy of lightly's SimCLR recipe."""
    from lightly.loss import NTXentLoss

    torch.manual_seed(seed)
    encoder = build_encoder(args.backbone, dataset.channels, dataset.mean, dataset.std)
    projector = projection_mlp(encoder.feature_dim, 512, 128)
    model = torch.nn.Sequential(encoder, projector).to(device)
    if args.compile:
        encoder.compile()  # as the platform's loop does with train.compile
    channels_last = resolve_channels_last("auto", device, precision)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    criterion = NTXentLoss(temperature=args.temperature)
    policy = AugmentationPolicy.from_strength(args.strength)
    images = dataset.pretrain_images.permute(0, 2, 3, 1).numpy()
    loader = DataLoader(
        PILViews(images, lightly_transform(policy, dataset.image_size)),
        batch_size=args.batch, shuffle=True, drop_last=True, num_workers=args.workers,
        persistent_workers=args.workers > 0, pin_memory=device.type == "cuda",
        generator=torch.Generator().manual_seed(seed),
    )
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr,
                                  weight_decay=args.weight_decay)
    total = args.epochs * len(loader)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: 0.5 * (1.0 + math.cos(math.pi * min(1.0, s / total))))
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
    rates = []
    for _ in range(args.epochs):
        model.train()
        synchronize(device)
        began = time.perf_counter()
        seen = 0
        for x0, x1 in loader:
            x0, x1 = x0.to(device, non_blocking=True), x1.to(device, non_blocking=True)
            if channels_last:
                x0 = x0.contiguous(memory_format=torch.channels_last)
                x1 = x1.contiguous(memory_format=torch.channels_last)
            with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
                loss = criterion(model(x0), model(x1))
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            seen += x0.shape[0]
        synchronize(device)
        rates.append(seen / (time.perf_counter() - began))
    with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
        train_features = extract_features(encoder, dataset.train_images, device)
        test_features = extract_features(encoder, dataset.test_images, device)
    accuracy = knn_accuracy(train_features, dataset.train_labels, test_features,
                            dataset.test_labels, dataset.num_classes, k=args.knn_k)
    return rates, accuracy


def main() -> None:
    cli = parser(__doc__.splitlines()[0], repeats=2)
    cli.add_argument("--backbone", default=None,
                     help="resnet18 or small_cnn (default: resnet18 on CUDA, small_cnn on CPU)")
    cli.add_argument("--images", type=int, default=None,
                     help="pretraining images (default: 16384 on CUDA, 2048 on CPU)")
    cli.add_argument("--test-images", type=int, default=1024, help="default: 1024")
    cli.add_argument("--epochs", type=int, default=None,
                     help="epochs per repeat (default: 5 on CUDA, 3 on CPU)")
    cli.add_argument("--batch", type=int, default=None,
                     help="default: 512 on CUDA, 256 on CPU")
    cli.add_argument("--workers", type=int, default=available_cpus(),
                     help="lightly's DataLoader workers (default: the CPUs available)")
    cli.add_argument("--lr", type=float, default=1e-3)
    cli.add_argument("--weight-decay", type=float, default=1e-5)
    cli.add_argument("--temperature", type=float, default=0.2)
    cli.add_argument("--strength", type=float, default=0.5)
    cli.add_argument("--knn-k", type=int, default=200)
    cli.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16", "fp16"],
                     help="both contenders (auto: bf16 on a CUDA GPU with native bf16)")
    cli.add_argument("--compile", action="store_true",
                     help="torch.compile both contenders' encoder (train.compile); the "
                          "compile time falls in each repeat's first epoch")
    args = cli.parse_args()
    device = start(args, "vs-lightly")
    gpu = device.type == "cuda"
    args.backbone = args.backbone or ("resnet18" if gpu else "small_cnn")
    args.images = args.images or (16384 if gpu else 2048)
    args.epochs = args.epochs or (5 if gpu else 3)
    args.batch = args.batch or (512 if gpu else 256)
    precision = resolve_precision(args.precision, device)

    dataset = load_dataset(DataSpec("shapes", num_train=args.images,
                                    num_test=args.test_images, seed=args.seed))
    print(f"SimCLR, {args.backbone}, {args.images} shapes images x {args.epochs} epochs, "
          f"batch {args.batch}, {precision}{', compiled' if args.compile else ''}, "
          f"lightly with {args.workers} DataLoader workers, "
          f"{args.repeats} repeats (seeds {args.seed}..{args.seed + args.repeats - 1})")
    runs: dict[str, Callable] = {"platform": platform_run, "lightly": lightly_run}
    rates: dict[str, list[float]] = {name: [] for name in runs}
    accuracy: dict[str, list[float]] = {name: [] for name in runs}
    for r in range(args.repeats):
        order = list(runs) if r % 2 == 0 else list(runs)[::-1]
        for name in order:
            if args.compile:
                # Each contender compiles as its own process would: graphs traced for the
                # other's input shapes would otherwise turn this one's dynamic (slower).
                torch.compiler.reset()
            epoch_rates, acc = runs[name](dataset, args, args.seed + r, device, precision)
            rates[name] += epoch_rates
            accuracy[name].append(acc)
            print(f"  repeat {r + 1} {name:<8}  {statistics.median(epoch_rates):>10,.0f} "
                  f"images/s (first epoch {epoch_rates[0]:,.0f})   kNN accuracy {acc:.3f}",
                  flush=True)
    for name in runs:
        acc = accuracy[name]
        spread = f" +- {statistics.stdev(acc):.3f}" if len(acc) > 1 else ""
        print(f"  {name:<8}  {statistics.median(rates[name]):>10,.0f} images/s (median of "
              f"{len(rates[name])} epochs)   kNN accuracy {statistics.mean(acc):.3f}{spread}")
    conclude("vs-lightly", statistics.median(rates["platform"]) / statistics.median(
        rates["lightly"]), f"platform SimCLR images/s over lightly's ({args.backbone}, "
        f"kNN {statistics.mean(accuracy['platform']):.3f} vs "
        f"{statistics.mean(accuracy['lightly']):.3f})")


if __name__ == "__main__":
    main()
