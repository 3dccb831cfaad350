"""In-memory image datasets as uint8 tensors.

Every dataset is loaded once into uint8 (N, C, H, W) tensors: a 50,000-image CIFAR split
takes 150 MB, a batch is an index into memory, and no decoding or per-sample Python runs
while training. Each dataset has three parts:

* ``pretrain_images``: what self-supervised pretraining sees (labels never used);
* ``train_images``/``train_labels``: the labelled split that the kNN memory bank and the
  probes fit on (for most datasets the same images as ``pretrain_images``);
* ``test_images``/``test_labels``: the held-out split that scores are measured on;
  pretraining never sees it.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

DATASETS = ("shapes", "digits", "cifar10", "cifar100", "stl10", "image_folder")
SHAPE_CLASSES = ("disk", "ring", "square", "frame", "diamond", "cross", "x", "triangle")
_PALETTE = ((0.9, 0.15, 0.1), (0.15, 0.75, 0.2), (0.2, 0.3, 0.95), (0.95, 0.9, 0.2))


class DatasetError(ValueError):
    """A dataset cannot be loaded as configured (missing directory, corrupt files...)."""


@dataclass(frozen=True)
class DataSpec:
    """What to load; ``data_dir`` is needed by the file-backed datasets only."""

    name: str
    data_dir: Path | None = None
    download: bool = False
    image_size: int | None = None
    num_train: int = 4096
    num_test: int = 1024
    seed: int = 0


@dataclass(frozen=True)
class ImageDataset:
    """Pretraining images (labels unused), the labelled train split and the held-out test
    split, as uint8 tensors. ``validation`` marks the part of the labelled train split
    that hyperparameter selection is scored on (all False when there is none): the rest
    of the train split is then the kNN bank and the probes' training set."""

    name: str
    pretrain_images: Tensor
    train_images: Tensor
    train_labels: Tensor
    test_images: Tensor
    test_labels: Tensor
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    validation: Tensor | None = None

    @property
    def has_validation(self) -> bool:
        return self.validation is not None and bool(self.validation.any())

    @property
    def channels(self) -> int:
        return self.pretrain_images.shape[1]

    @property
    def image_size(self) -> int:
        return self.pretrain_images.shape[-1]

    def __len__(self) -> int:
        return self.pretrain_images.shape[0]


def dataset_digest(dataset: ImageDataset) -> str:
    """A short fingerprint of the images, labels and validation split: two runs with the
    same digest saw the same data (MLflow shows it beside the dataset's name)."""
    digest = hashlib.blake2b(digest_size=8)
    digest.update(dataset.name.encode())
    parts = [dataset.pretrain_images, dataset.train_images, dataset.train_labels,
             dataset.test_images, dataset.test_labels]
    if dataset.validation is not None:
        parts.append(dataset.validation)
    for part in parts:
        digest.update(str(tuple(part.shape)).encode())
        digest.update(memoryview(part.contiguous().numpy()).cast("B"))
    return digest.hexdigest()


def dataset_profile(dataset: ImageDataset) -> dict[str, int]:
    """The sizes of the dataset's parts: what a reader needs to weigh its scores."""
    validation = int(dataset.validation.sum()) if dataset.has_validation else 0
    return {
        "pretrain_images": len(dataset),
        "train_images": int(dataset.train_images.shape[0]) - validation,
        "validation_images": validation,
        "test_images": int(dataset.test_images.shape[0]),
        "classes": dataset.num_classes,
        "image_size": dataset.image_size,
        "channels": dataset.channels,
    }


def chance_accuracy(dataset: ImageDataset) -> float:
    """The accuracy of always answering the test split's most frequent class: the floor
    that a classifier on features must beat."""
    counts = torch.bincount(dataset.test_labels, minlength=dataset.num_classes)
    return float(counts.max()) / max(1, int(counts.sum()))


def _channel_stats(images: Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    sample = images[: min(len(images), 10_000)].float().div(255.0)
    mean = sample.mean(dim=(0, 2, 3))
    std = sample.std(dim=(0, 2, 3)).clamp(min=1e-3)
    return tuple(mean.tolist()), tuple(std.tolist())


def _resize(images: Tensor, size: int | None) -> Tensor:
    if size is None or (images.shape[-1] == size and images.shape[-2] == size):
        return images
    out = torch.nn.functional.interpolate(
        images.float(), size=(size, size), mode="bilinear", antialias=True, align_corners=False
    )
    return out.round().clamp(0, 255).to(torch.uint8)


def _assemble(
    name: str,
    train: tuple[Tensor, Tensor],
    test: tuple[Tensor, Tensor],
    num_classes: int,
    image_size: int | None,
    extra_pretrain: Tensor | None = None,
) -> ImageDataset:
    train_images = _resize(train[0], image_size).contiguous()
    test_images = _resize(test[0], image_size).contiguous()
    pretrain = train_images
    if extra_pretrain is not None:
        pretrain = torch.cat([train_images, _resize(extra_pretrain, image_size)])
    mean, std = _channel_stats(pretrain)
    return ImageDataset(
        name=name,
        pretrain_images=pretrain,
        train_images=train_images,
        train_labels=train[1].long(),
        test_images=test_images,
        test_labels=test[1].long(),
        num_classes=num_classes,
        mean=mean,
        std=std,
    )


# --- procedurally generated shapes -------------------------------------------------------


def _shape_masks(labels: Tensor, x: Tensor, y: Tensor) -> Tensor:
    """Binary masks for each class, in coordinates already centred and divided by radius."""
    ax, ay = x.abs(), y.abs()
    r = torch.sqrt(x**2 + y**2)
    box = torch.maximum(ax, ay)
    u, v = (x + y) / math.sqrt(2), (x - y) / math.sqrt(2)
    masks = torch.stack(
        [
            r < 1.0,  # disk
            (r < 1.0) & (r > 0.55),  # ring
            box < 0.8,  # square
            (box < 0.85) & (box > 0.5),  # frame
            ax + ay < 1.0,  # diamond
            ((ax < 0.3) & (ay < 1.0)) | ((ay < 0.3) & (ax < 1.0)),  # cross
            ((u.abs() < 0.3) & (v.abs() < 1.0)) | ((v.abs() < 0.3) & (u.abs() < 1.0)),  # x
            (y < 0.7) & (y > 2.0 * ax - 1.0),  # triangle, pointing up
        ]
    )
    return masks.gather(0, labels.view(1, -1, 1, 1).expand(1, *x.shape)).squeeze(0)


def generate_shapes(n: int, size: int, seed: int) -> tuple[Tensor, Tensor]:
    """Shapes of 8 classes under random colour, position, scale and textured background.

    The class lives only in the silhouette. Colour, position, size and background texture
    are nuisances that dominate raw pixels and a random encoder's features, so a probe
    improves only if the encoder has learnt to look past them.

    Two choices keep the nuisances from becoming shortcuts for instance discrimination
    (measured: with fully random colours or a grating background, a few epochs of SimCLR
    learnt colour and texture and kNN accuracy barely moved). Colours come from a
    four-colour palette with a little jitter, so in any batch many images share a colour
    pair and two views cannot be matched by colour alone. The background texture is
    smooth noise that differs across the image, so two crops do not share it.
    """
    gen = torch.Generator().manual_seed(seed)

    def rand(*shape: int) -> Tensor:
        return torch.rand(*shape, generator=gen)

    labels = torch.randint(len(SHAPE_CLASSES), (n,), generator=gen)
    coords = (torch.arange(size, dtype=torch.float32) + 0.5) / size * 2 - 1
    gy, gx = torch.meshgrid(coords, coords, indexing="ij")
    radius = 0.6 + 0.3 * rand(n)
    margin = 1.0 - radius
    cx = (2 * rand(n) - 1) * margin
    cy = (2 * rand(n) - 1) * margin
    x = (gx.unsqueeze(0) - cx.view(-1, 1, 1)) / radius.view(-1, 1, 1)
    y = (gy.unsqueeze(0) - cy.view(-1, 1, 1)) / radius.view(-1, 1, 1)
    mask = _shape_masks(labels, x, -y).unsqueeze(1).float()

    palette = torch.tensor(_PALETTE)  # foreground and background always differ
    fg_index = torch.randint(len(palette), (n,), generator=gen)
    bg_offset = torch.randint(1, len(palette), (n,), generator=gen)
    foreground = palette[fg_index] + 0.1 * (rand(n, 3) - 0.5)
    background = palette[(fg_index + bg_offset) % len(palette)] + 0.1 * (rand(n, 3) - 0.5)
    # Background texture: smooth random blotches plus pixel noise.
    blotches = torch.nn.functional.interpolate(
        torch.randn(n, 3, 4, 4, generator=gen), size=(size, size), mode="bicubic",
        align_corners=False,
    )
    amplitude = (0.03 + 0.1 * rand(n)).view(-1, 1, 1, 1)
    texture = amplitude * blotches + 0.03 * torch.randn(n, 1, size, size, generator=gen)
    bg = (background.view(n, 3, 1, 1) + texture).clamp(0, 1)
    fg = (foreground.view(n, 3, 1, 1) + 0.03 * torch.randn(n, 3, size, size, generator=gen))
    images = mask * fg.clamp(0, 1) + (1 - mask) * bg
    return (images * 255).round().to(torch.uint8), labels


def _load_shapes(spec: DataSpec) -> ImageDataset:
    size = spec.image_size or 32
    train = generate_shapes(spec.num_train, size, spec.seed)
    test = generate_shapes(spec.num_test, size, spec.seed + 1_000_003)
    return _assemble("shapes", train, test, len(SHAPE_CLASSES), None)


# --- scikit-learn's bundled digits ------------------------------------------------------


def _load_digits(spec: DataSpec) -> ImageDataset:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = torch.from_numpy((bunch.images * (255.0 / 16.0)).round().astype(np.uint8))
    images = images.unsqueeze(1)
    labels = torch.from_numpy(bunch.target)
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(spec.seed))
    n_test = len(labels) // 5
    test_idx, train_idx = order[:n_test], order[n_test:]
    return _assemble(
        "digits",
        (images[train_idx], labels[train_idx]),
        (images[test_idx], labels[test_idx]),
        10,
        spec.image_size or 16,
    )


# --- file-backed datasets ---------------------------------------------------------------


def _require_dir(spec: DataSpec) -> Path:
    if spec.data_dir is None:
        raise DatasetError(f"dataset {spec.name!r} needs data.data_dir (a local directory)")
    path = Path(spec.data_dir).expanduser()
    if not path.is_dir():
        if spec.download and spec.name != "image_folder":
            path.mkdir(parents=True, exist_ok=True)
        else:
            raise DatasetError(f"data.data_dir {str(path)!r} does not exist or is not a directory")
    return path


def _torchvision_split(cls: type, root: Path, download: bool, **kwargs: object) -> object:
    try:
        return cls(root=str(root), download=download, **kwargs)
    except (RuntimeError, OSError, ValueError) as exc:
        hint = "" if download else "; set data.download: true to fetch it"
        raise DatasetError(
            f"{cls.__name__} not found or corrupt in {str(root)!r} ({exc}){hint}"
        ) from exc


def _load_cifar(spec: DataSpec) -> ImageDataset:
    import torchvision

    root = _require_dir(spec)
    cls = torchvision.datasets.CIFAR10 if spec.name == "cifar10" else torchvision.datasets.CIFAR100

    def split(train: bool) -> tuple[Tensor, Tensor]:
        ds = _torchvision_split(cls, root, spec.download, train=train)
        images = torch.from_numpy(np.asarray(ds.data)).permute(0, 3, 1, 2).contiguous()
        return images, torch.as_tensor(ds.targets)

    num_classes = 10 if spec.name == "cifar10" else 100
    return _assemble(spec.name, split(True), split(False), num_classes, spec.image_size)


def _load_stl10(spec: DataSpec) -> ImageDataset:
    """STL-10: pretraining uses the 100,000 unlabelled images plus the labelled train split."""
    import torchvision

    root = _require_dir(spec)

    def split(name: str) -> tuple[Tensor, Tensor]:
        ds = _torchvision_split(torchvision.datasets.STL10, root, spec.download, split=name)
        return torch.from_numpy(np.asarray(ds.data)), torch.from_numpy(np.asarray(ds.labels))

    unlabeled, _ = split("unlabeled")
    return _assemble("stl10", split("train"), split("test"), 10, spec.image_size, unlabeled)


def _load_image_folder(spec: DataSpec) -> ImageDataset:
    """``data_dir/train/<class>/*`` and ``data_dir/test/<class>/*`` (or ``val``), any image
    format PIL reads, resized to ``image_size``."""
    from torchvision.datasets import ImageFolder
    from torchvision.transforms.functional import pil_to_tensor, resize

    root = _require_dir(spec)
    if spec.image_size is None:
        raise DatasetError("dataset 'image_folder' needs data.image_size")
    test_dir = next((root / d for d in ("test", "val") if (root / d).is_dir()), None)
    if not (root / "train").is_dir() or test_dir is None:
        raise DatasetError(
            f"data.data_dir {str(root)!r} must hold train/<class>/ and test/<class>/ (or val/)"
        )

    def split(path: Path, classes: list[str] | None) -> tuple[Tensor, Tensor, list[str]]:
        try:
            folder = ImageFolder(str(path))
        except (FileNotFoundError, OSError) as exc:
            raise DatasetError(f"cannot read image folder {str(path)!r}: {exc}") from exc
        if classes is not None and folder.classes != classes:
            raise DatasetError(f"{str(path)!r} has classes {folder.classes}, train has {classes}")
        images, labels = [], []
        for file, label in folder.samples:
            try:
                img = folder.loader(file).convert("RGB")
            except OSError as exc:
                raise DatasetError(f"corrupt image {file!r}: {exc}") from exc
            images.append(resize(pil_to_tensor(img), [spec.image_size, spec.image_size]))
            labels.append(label)
        return torch.stack(images), torch.tensor(labels), folder.classes

    train_images, train_labels, classes = split(root / "train", None)
    test_images, test_labels, _ = split(test_dir, classes)
    return _assemble(
        "image_folder", (train_images, train_labels), (test_images, test_labels), len(classes), None
    )


def with_validation(dataset: ImageDataset, fraction: float, seed: int) -> ImageDataset:
    """Mark a stratified, seeded ``fraction`` of each class of the labelled train split as
    the validation part (at least one image of every class with two or more, never all
    of a class). The same split for every trial of a study: it is made once, here."""
    if not 0.0 <= fraction < 1.0:
        raise DatasetError(f"data.val_fraction: got {fraction}, allowed: a float in [0, 1)")
    mask = torch.zeros(len(dataset.train_labels), dtype=torch.bool)
    if fraction > 0:
        generator = torch.Generator().manual_seed(seed)
        for label in range(dataset.num_classes):
            members = torch.nonzero(dataset.train_labels == label).flatten()
            if len(members) < 2:
                continue
            take = min(len(members) - 1, max(1, round(fraction * len(members))))
            chosen = members[torch.randperm(len(members), generator=generator)[:take]]
            mask[chosen] = True
    return replace(dataset, validation=mask)


def load_dataset(spec: DataSpec) -> ImageDataset:
    loaders = {
        "shapes": _load_shapes,
        "digits": _load_digits,
        "cifar10": _load_cifar,
        "cifar100": _load_cifar,
        "stl10": _load_stl10,
        "image_folder": _load_image_folder,
    }
    if spec.name not in loaders:
        raise DatasetError(f"data.dataset: unknown {spec.name!r}; allowed: {', '.join(DATASETS)}")
    return loaders[spec.name](spec)
