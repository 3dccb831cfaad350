"""Input checks that run before anything is written or started, Ray included: the
tracking store, the study directory, the dataset, the batch sizes it must hold and the
methods' patch geometry on its images.

Each failure is a ``ConfigError`` naming the key or flag and what is allowed. The checks
of the places a command writes to are in ``paths``.
"""

from __future__ import annotations

import itertools
import socket
from collections.abc import Mapping
from typing import Any

import torch

from search_spaces import SearchSpace
from study import paths
from study.config import ConfigError, StudyConfig
from tracking.errors import TrackingError
from tracking.runs import is_deleted_experiment
from tracking.schema import RETRIEVAL_PREFIX, parse_label_metric
from tracking.server import check_tracking_server
from tracking.uris import is_server, resolve_tracking_uri, sqlite_path
from trainables.data import (
    DatasetError,
    DataSpec,
    ImageDataset,
    load_dataset,
    with_validation,
)
from trainables.hyperparameters import declared_hyperparameters
from trainables.methods import method_class


def check_tracking_uri(uri: str) -> str:
    """The URI made absolute; a tracking server must answer and a SQLite file's directory
    must be creatable."""
    resolved = resolve_tracking_uri(uri)
    database = sqlite_path(resolved)
    if is_server(resolved):
        try:
            check_tracking_server(resolved)
        except TrackingError as exc:
            raise ConfigError(str(exc)) from None
    elif database is not None:
        if database.exists() and not database.is_file():
            raise ConfigError(f"tracking.tracking_uri: {str(database)!r} is not a file")
        paths.check_creatable_dir("tracking.tracking_uri", database.parent)
    elif not resolved.startswith(("postgresql", "mysql", "databricks")):
        raise ConfigError(
            f"tracking.tracking_uri: unsupported {uri!r}; use sqlite:///FILE.db locally or "
            "http(s)://HOST:PORT for a tracking server (the file store is deprecated)"
        )
    return resolved


def check_experiment(uri: str, experiment: str) -> None:
    """A deleted experiment keeps its name reserved; logging into it would hide every run
    in the UI."""
    if is_deleted_experiment(uri, experiment):
        raise ConfigError(
            f"tracking.experiment: {experiment!r} was deleted in MLflow; restore it "
            "(mlflow experiments restore) or remove it for good (mlflow gc), or choose "
            "another name"
        )


def check_address(address: str | None) -> None:
    """A ``HOST:PORT`` Ray address must accept connections: ``ray.init`` would otherwise
    retry for minutes before failing."""
    if address is None or address == "auto" or address.startswith("ray://"):
        return
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"--address: expected auto or HOST:PORT, got {address!r}")
    try:
        socket.create_connection((host, int(port)), timeout=5).close()
    except OSError as exc:
        raise ConfigError(f"--address: no Ray cluster answers at {address} ({exc})") from None


def load_study_dataset(config: StudyConfig) -> ImageDataset:
    data = config.data
    spec = DataSpec(
        name=data.dataset,
        data_dir=data.data_dir,
        download=data.download,
        image_size=data.image_size,
        num_train=data.num_train,
        num_test=data.num_test,
        seed=config.seed,
    )
    try:
        dataset = with_validation(load_dataset(spec), data.val_fraction, config.seed)
    except DatasetError as exc:
        raise ConfigError(str(exc)) from None
    check_evaluation(config, dataset)
    return dataset


def check_evaluation(config: StudyConfig, dataset: ImageDataset) -> None:
    """The protocols' label and database sizes fit the dataset: labels per class within
    the smallest class, retrieval's k within the database, of the labelled train split;
    and, for a search objective's validation form, of its non-validation part."""
    evaluation = config.evaluation
    labels = dataset.train_labels
    parts = [("the labelled train split", labels, True)]
    objective = config.search.metric
    if objective in evaluation.metrics and dataset.has_validation:
        assert dataset.validation is not None
        parts.append(("the train split less its validation part",
                      labels[~dataset.validation], False))
    for part, part_labels, test_form in parts:
        finetune = evaluation.finetune
        if finetune is not None and finetune.labels_per_class is not None and (
            test_form or parse_label_metric(objective) is not None
        ):
            counts = part_labels.bincount(minlength=dataset.num_classes)
            smallest = int(counts.argmin())
            if finetune.labels_per_class > counts[smallest]:
                raise ConfigError(
                    f"evaluation.finetune.labels_per_class: {finetune.labels_per_class} "
                    f"exceeds the smallest class of {part} of {dataset.name!r} (class "
                    f"{smallest}: {int(counts[smallest])} images); allowed: 1 to "
                    f"{int(counts[smallest])}"
                )
        retrieval = evaluation.retrieval
        if retrieval is not None and max(retrieval.k) > len(part_labels) and (
            test_form or objective.startswith(RETRIEVAL_PREFIX)
        ):
            raise ConfigError(
                f"evaluation.retrieval.k: {max(retrieval.k)} exceeds the database, "
                f"{part} of {dataset.name!r} ({len(part_labels)} images); allowed: 1 to "
                f"{len(part_labels)}"
            )


def _batch_sizes(space: SearchSpace, default: int) -> tuple[int, list[int]]:
    """(the largest batch size a space can propose, numbers that must all be multiples of
    the workers for every proposal to split evenly): the choices, the fixed value, or an
    int range's low end and step."""
    spec = space.params.get("batch_size")
    if spec is None:
        fixed = int(space.fixed.get("batch_size", default))
        return fixed, [fixed]
    if spec.type == "categorical":
        choices = [int(c) for c in spec.choices]
        return max(choices), choices
    return int(spec.high), [int(spec.low), int(spec.step or 1)]


def check_batch_sizes(
    spaces: Mapping[str, SearchSpace], dataset: ImageDataset, workers: int
) -> None:
    """Every batch size a search can propose fits in the pretraining images and splits
    evenly over a trial's ``workers``."""
    for method, space in spaces.items():
        field = f"methods.{method}.space.batch_size"
        default = declared_hyperparameters(method)["batch_size"].default
        largest, multiples = _batch_sizes(space, default)
        check_batch_size(field, largest, dataset)
        uneven = [b for b in multiples if b % workers]
        if uneven:
            raise ConfigError(
                f"{field}: {uneven[0]} does not split evenly over resources.workers_per_trial "
                f"({workers}); use multiples of {workers}"
            )


def check_local_device(config: StudyConfig, address: str | None) -> None:
    """``train.device: cuda`` needs a CUDA device where the run trains. Checked where that
    is this machine (``sslstudy train``, no ``--address``), where every trial would
    otherwise fail at its first step, before the dataset is loaded (or downloaded); on a
    cluster the workers, not the driver, have the GPUs."""
    if config.train.device != "cuda" or address is not None:
        return
    if not torch.cuda.is_available():
        raise ConfigError("train.device: 'cuda' but this machine has no CUDA device; "
                          "allowed here: auto, cpu")


def check_batch_size(field: str, batch_size: int, dataset: ImageDataset) -> None:
    if batch_size > len(dataset):
        raise ConfigError(
            f"{field}: {batch_size} exceeds the {len(dataset)} pretraining images "
            f"of {dataset.name!r}"
        )


def check_image_size(field: str, method: str, values: Mapping[str, Any],
                     dataset: ImageDataset) -> None:
    """The method's ``values`` work on the dataset's images (``SSLMethod.check_image_size``)."""
    try:
        method_class(method).check_image_size(values, dataset.image_size)
    except ValueError as exc:
        raise ConfigError(f"{field}: {exc}") from None


def check_image_geometry(spaces: Mapping[str, SearchSpace], dataset: ImageDataset) -> None:
    """Every combination of values a search space can propose for the parameters that its
    method's fit to an image size depends on (``SSLMethod.image_parameters``) fits the
    dataset's images, so that no trial of the search fails on it."""
    for method, space in spaces.items():
        declared = declared_hyperparameters(method)
        names = method_class(method).image_parameters
        options = [space.candidates(name, declared[name].default) for name in names]
        base = space.defaults(declared)
        for combination in itertools.product(*options):
            values = {**base, **dict(zip(names, combination, strict=True))}
            check_image_size(f"methods.{method}.space", method, values, dataset)
