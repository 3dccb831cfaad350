"""Every registered method keeps the contract of the generic loop, so that adding a method
is a checklist: one file in ``trainables/methods/``, one YAML in ``search_spaces/``, one
line in the registry. These checks, the data-parallel equivalence test and the learning
test all run over the registry and fail for a method they do not cover."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from conftest import make_method

from search_spaces import build_space
from trainables.augment import AugmentationPolicy
from trainables.hyperparameters import declared_hyperparameters
from trainables.methods import METHODS
from trainables.methods.base import SSLMethod

ROOT = Path(__file__).resolve().parents[1]
#: How a method cites its source: a file of the source documents, then where in it.
SOURCE = re.compile(r"^\d{3}_[0-9a-f]{16}\.txt\b")


def test_the_registry_is_the_methods_folder_and_the_spaces_folder() -> None:
    files = {p.stem for p in (ROOT / "trainables" / "methods").glob("*.py")} - {
        "__init__", "base"}
    spaces = {p.stem for p in (ROOT / "search_spaces").glob("*.yaml")}
    assert set(METHODS) == files == spaces


@pytest.mark.parametrize("name", sorted(METHODS))
def test_declaration(name: str) -> None:
    cls = METHODS[name]
    assert issubclass(cls, SSLMethod) and cls.name == name
    assert SOURCE.match(cls.source), cls.source
    assert cls.__module__.rsplit(".", 1)[1] == name
    module_doc = __import__(cls.__module__, fromlist=["_"]).__doc__ or ""
    assert SOURCE.match(cls.source).group(0) in module_doc, "cite the source in the docstring"
    for param, declared in declared_hyperparameters(name).items():
        assert declared.help, param
        assert declared.check(param, declared.default) == declared.default, param
    space = build_space(name, declared_hyperparameters(name))
    assert space.params, "the default space searches something"


@pytest.mark.parametrize("name", sorted(METHODS))
def test_one_step_from_a_uint8_batch(name: str, tiny_shapes) -> None:
    """Views from a uint8 batch, a finite scalar loss, gradients that reach the encoder
    (after ``begin_epoch`` of the first of 4 epochs, as the loop calls it), and a
    representation of images in [0, 1] as feature vectors."""
    method = make_method(name, tiny_shapes)
    method.begin_epoch(1, 4)
    method.train()
    batch = tiny_shapes.pretrain_images[:8]
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        views = method.make_views(batch, AugmentationPolicy.from_strength(0.5), generator)
    # One row per image, or per image and pretext transform (RotNet's rotations).
    assert views and all(v.shape[0] % batch.shape[0] == 0 for v in views)
    loss = method(views)
    assert loss.dim() == 0 and torch.isfinite(loss)
    loss.backward()
    grads = [p.grad for p in method.encoder.parameters() if p.grad is not None]
    assert grads and any(g.abs().sum() > 0 for g in grads), "no gradient reaches the encoder"
    features = method.representation()(tiny_shapes.test_images[:4].float() / 255)
    assert features.shape[0] == 4 and features.dim() == 2
