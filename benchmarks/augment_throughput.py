"""Throughput of the batched augmentation against a per-sample torchvision pipeline.

Both make the same kind of SimCLR view (random resized crop, flip, colour jitter with
p = 0.8, grayscale with p = 0.2) of the same uint8 images, side by side in one process;
the script prints images per second for each and their ratio. Run it on the device you
train on: ``python benchmarks/augment_throughput.py --device cuda``.
"""

from __future__ import annotations

import argparse
import logging
import time

import torch
from torchvision.transforms import v2

from trainables.augment import AugmentationPolicy, augment

logger = logging.getLogger("benchmark")


def per_sample_pipeline(policy: AugmentationPolicy, size: int) -> v2.Compose:
    jitter = v2.ColorJitter(policy.brightness, policy.contrast, policy.saturation, policy.hue)
    return v2.Compose([
        v2.RandomResizedCrop(size, scale=(policy.min_crop_scale, 1.0), antialias=False),
        v2.RandomHorizontalFlip(),
        v2.RandomApply([jitter], p=policy.jitter_prob),
        v2.RandomGrayscale(p=policy.grayscale_prob),
        v2.ToDtype(torch.float32, scale=True),
    ])


def _rate(fn, images: torch.Tensor, repeats: int, device: torch.device) -> float:
    fn(images)  # warm-up
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(repeats):
        fn(images)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return repeats * len(images) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=512)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--strength", type=float, default=0.5)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    device = torch.device(args.device)
    images = torch.randint(0, 256, (args.batch, 3, args.size, args.size), dtype=torch.uint8,
                           device=device)
    policy = AugmentationPolicy.from_strength(args.strength)
    gen = torch.Generator(device=device).manual_seed(0)
    pipeline = per_sample_pipeline(policy, args.size)

    batched = _rate(lambda x: augment(x, policy, gen), images, args.repeats, device)
    baseline = _rate(lambda x: torch.stack([pipeline(img) for img in x]), images,
                     max(1, args.repeats // 2), device)
    logger.info("device %s, batch %d of %dx%d, strength %.2f", device, args.batch, args.size,
                args.size, args.strength)
    logger.info("%-32s %12.0f images/s", "per-sample torchvision (baseline)", baseline)
    logger.info("%-32s %12.0f images/s", "batched sslstudy augment", batched)
    logger.info("ratio batched / baseline: %.1fx", batched / baseline)


if __name__ == "__main__":
    main()
