"""augment: SimCLR views per second, batched on-device augmentation against per-sample
pipelines fed by a DataLoader.

Every contender makes two views of every image of the same uint8 data, with the same
augmentation family (random resized crop, horizontal flip, colour jitter with p = 0.8,
grayscale with p = 0.2; no blur) at the same strength and image size:

* batched: ``trainables.augment.augment`` on whole batches on ``--device``, as the loop
  runs it (data already on the device), using ``--threads`` torch threads;
* torchvision: a per-sample ``torchvision.transforms.v2`` pipeline on uint8 tensors, in a
  ``DataLoader`` with ``--workers`` worker processes;
* lightly: lightly's ``SimCLRTransform`` on PIL images (as with torchvision's CIFAR
  datasets) in a ``DataLoader`` with the same workers.

On CUDA the DataLoader contenders copy their batches to the GPU (pinned memory), as
training would. The closing ratio is over the faster of the two per-sample pipelines.

    python -m benchmarks.augment [--device cuda] [--images 4096] [--batch 256]
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms import v2

from benchmarks.common import alternate, available_cpus, conclude, parser, print_rates, start
from trainables.augment import AugmentationPolicy, augment
from trainables.data import generate_shapes


def torchvision_pipeline(policy: AugmentationPolicy, size: int) -> v2.Compose:
    """The per-sample torchvision v2 equivalent of one batched view."""
    jitter = v2.ColorJitter(policy.brightness, policy.contrast, policy.saturation, policy.hue)
    return v2.Compose([
        v2.RandomResizedCrop(size, scale=(policy.min_crop_scale, 1.0)),
        v2.RandomHorizontalFlip(policy.flip_prob),
        v2.RandomApply([jitter], p=policy.jitter_prob),
        v2.RandomGrayscale(p=policy.grayscale_prob),
        v2.ToDtype(torch.float32, scale=True),
    ])


def lightly_transform(policy: AugmentationPolicy, size: int) -> Callable:
    """lightly's SimCLR transform (two views per call) at the same magnitudes, without the
    blur and normalisation that the other contenders do not do."""
    from lightly.transforms import SimCLRTransform

    return SimCLRTransform(
        input_size=size, cj_prob=policy.jitter_prob, cj_strength=1.0,
        cj_bright=policy.brightness, cj_contrast=policy.contrast, cj_sat=policy.saturation,
        cj_hue=policy.hue, min_scale=policy.min_crop_scale,
        random_gray_scale=policy.grayscale_prob, gaussian_blur=0.0,
        hf_prob=policy.flip_prob, normalize=None,
    )


class TensorViews(Dataset):
    """Two views of a uint8 (C, H, W) tensor image per item."""

    def __init__(self, images: torch.Tensor, transform: Callable) -> None:
        self.images, self.transform = images, transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        image = self.images[i]
        return self.transform(image), self.transform(image)


class PILViews(Dataset):
    """An image as torchvision's CIFAR datasets hand it to a transform (a PIL image from
    an HWC uint8 array), through a transform that returns the views."""

    def __init__(self, images: np.ndarray, transform: Callable) -> None:
        self.images, self.transform = images, transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> list[torch.Tensor]:
        from PIL import Image

        return self.transform(Image.fromarray(self.images[i]))


def loader_epoch(dataset: Dataset, args, device: torch.device) -> Callable[[], None]:
    """One pass over a DataLoader of ``dataset`` with persistent workers (started by the
    warm-up pass, as in any multi-epoch training), batches moved to ``device``."""
    loader = DataLoader(dataset, batch_size=args.batch, shuffle=True, drop_last=True,
                        num_workers=args.workers, persistent_workers=args.workers > 0,
                        pin_memory=device.type == "cuda")

    def epoch() -> None:
        for views in loader:
            for view in views:
                view.to(device, non_blocking=True)

    return epoch


def main() -> None:
    cli = parser(__doc__.splitlines()[0], repeats=5)
    cli.add_argument("--images", type=int, default=4096, help="images per pass (default 4096)")
    cli.add_argument("--size", type=int, default=32, help="image side in pixels (default 32)")
    cli.add_argument("--batch", type=int, default=256, help="batch size (default 256)")
    cli.add_argument("--strength", type=float, default=0.5,
                     help="augmentation strength s (default 0.5)")
    cli.add_argument("--workers", type=int, default=available_cpus(),
                     help="DataLoader workers of the per-sample contenders "
                          "(default: the CPUs available)")
    args = cli.parse_args()
    device = start(args, "augment")

    images, _ = generate_shapes(args.images, args.size, args.seed)
    policy = AugmentationPolicy.from_strength(args.strength)
    on_device = images.to(device)
    generator = torch.Generator(device=device).manual_seed(args.seed)
    batches = args.images // args.batch

    def batched() -> None:
        for b in range(batches):
            batch = on_device[b * args.batch : (b + 1) * args.batch]
            augment(batch, policy, generator)
            augment(batch, policy, generator)

    contenders = {
        f"batched on {device.type}": batched,
        f"torchvision v2, {args.workers} workers": loader_epoch(
            TensorViews(images, torchvision_pipeline(policy, args.size)), args, device),
        f"lightly SimCLRTransform, {args.workers} workers": loader_epoch(
            PILViews(images.permute(0, 2, 3, 1).numpy(), lightly_transform(policy, args.size)),
            args, device),
    }
    print(f"{batches * args.batch} images of {args.size}x{args.size}, 2 views each, batch "
          f"{args.batch}, strength {args.strength}, {args.repeats} repeats")
    timings = alternate(contenders, args.repeats, device)
    rates = print_rates(timings, 2 * batches * args.batch, "views")
    names = list(contenders)
    ours, baselines = rates[names[0]], {name: rates[name] for name in names[1:3]}
    for name, rate in baselines.items():
        print(f"  batched / {name}: {ours / rate:.2f}x")
    fastest = max(baselines, key=baselines.__getitem__)
    conclude("augment", ours / baselines[fastest], f"batched on-device views/s over {fastest} "
             "(the faster per-sample pipeline)")


if __name__ == "__main__":
    main()
