"""In-memory datasets: generated shapes, bundled digits, file-backed loaders' errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from trainables.data import SHAPE_CLASSES, DatasetError, DataSpec, load_dataset


def test_shapes_are_uint8_balanced_and_seeded(tiny_shapes) -> None:
    ds = tiny_shapes
    assert ds.pretrain_images.dtype == torch.uint8
    assert ds.pretrain_images.shape == (256, 3, 32, 32)
    assert ds.test_images.shape == (128, 3, 32, 32)
    assert ds.num_classes == len(SHAPE_CLASSES)
    assert set(ds.train_labels.unique().tolist()) == set(range(len(SHAPE_CLASSES)))
    again = load_dataset(DataSpec("shapes", num_train=256, num_test=128, seed=0))
    assert torch.equal(again.train_images, ds.train_images)
    other = load_dataset(DataSpec("shapes", num_train=256, num_test=128, seed=1))
    assert not torch.equal(other.train_images, ds.train_images)


def test_shapes_test_split_is_disjoint_from_training(tiny_shapes) -> None:
    train = {bytes(img.numpy()) for img in tiny_shapes.train_images}
    assert not any(bytes(img.numpy()) in train for img in tiny_shapes.test_images)


def test_shapes_class_is_not_in_the_colour() -> None:
    """Nuisances dominate: mean colour alone predicts the class at chance level."""
    ds = load_dataset(DataSpec("shapes", num_train=2048, num_test=512))
    colour = ds.train_images.float().mean(dim=(2, 3))
    centroids = torch.stack([colour[ds.train_labels == c].mean(0) for c in range(8)])
    test_colour = ds.test_images.float().mean(dim=(2, 3))
    predicted = torch.cdist(test_colour, centroids).argmin(dim=1)
    assert (predicted == ds.test_labels).float().mean() < 0.25


def test_digits_come_from_scikit_learn() -> None:
    ds = load_dataset(DataSpec("digits"))
    assert ds.channels == 1 and ds.image_size == 16
    assert len(ds.train_images) + len(ds.test_images) == 1797
    assert ds.num_classes == 10
    assert ds.pretrain_images is ds.train_images


def test_image_size_resizes_once_at_load() -> None:
    ds = load_dataset(DataSpec("digits", image_size=24))
    assert ds.train_images.shape[-2:] == (24, 24) and ds.train_images.dtype == torch.uint8


@pytest.mark.parametrize("name", ["cifar10", "cifar100", "stl10", "image_folder"])
def test_missing_data_dir_is_a_clear_error(name: str, tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="does not exist"):
        load_dataset(DataSpec(name, data_dir=tmp_path / "nope", image_size=16))
    with pytest.raises(DatasetError, match=r"needs data\.data_dir"):
        load_dataset(DataSpec(name, image_size=16))


@pytest.mark.parametrize("name", ["cifar10", "stl10"])
def test_empty_or_corrupt_data_dir_is_a_clear_error(name: str, tmp_path: Path) -> None:
    (tmp_path / "cifar-10-batches-py").mkdir()
    (tmp_path / "cifar-10-batches-py" / "data_batch_1").write_bytes(b"garbage")
    with pytest.raises(DatasetError, match="not found or corrupt"):
        load_dataset(DataSpec(name, data_dir=tmp_path))


def _write_folder(root: Path, split: str, classes: list[str], per_class: int) -> None:
    rng = np.random.default_rng(0)
    for cls in classes:
        folder = root / split / cls
        folder.mkdir(parents=True)
        for i in range(per_class):
            pixels = rng.integers(0, 255, size=(20, 14, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(folder / f"{i}.png")


def test_image_folder_loads_resized_uint8(tmp_path: Path) -> None:
    _write_folder(tmp_path, "train", ["cat", "dog"], 3)
    _write_folder(tmp_path, "val", ["cat", "dog"], 2)
    ds = load_dataset(DataSpec("image_folder", data_dir=tmp_path, image_size=16))
    assert ds.train_images.shape == (6, 3, 16, 16) and ds.test_images.shape == (4, 3, 16, 16)
    assert ds.num_classes == 2 and ds.train_labels.tolist() == [0, 0, 0, 1, 1, 1]


def test_image_folder_with_corrupt_file_names_it(tmp_path: Path) -> None:
    _write_folder(tmp_path, "train", ["a"], 1)
    _write_folder(tmp_path, "test", ["a"], 1)
    (tmp_path / "train" / "a" / "broken.png").write_bytes(b"not a png")
    with pytest.raises(DatasetError, match=r"broken\.png"):
        load_dataset(DataSpec("image_folder", data_dir=tmp_path, image_size=8))


def test_image_folder_needs_both_splits(tmp_path: Path) -> None:
    _write_folder(tmp_path, "train", ["a"], 1)
    with pytest.raises(DatasetError, match="train/<class>/ and test/<class>/"):
        load_dataset(DataSpec("image_folder", data_dir=tmp_path, image_size=8))


def test_unknown_dataset() -> None:
    with pytest.raises(DatasetError, match="allowed"):
        load_dataset(DataSpec("mnist"))
