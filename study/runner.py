"""The ``search`` and ``train`` commands: validate everything, then run.

Validation covers the config, every search space, the dataset (it is loaded here, once,
and shipped to all trials through Ray's object store) and the output locations. Only
when all of it passes is anything created.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from search_spaces import SearchSpace
from study.config import ConfigError, StudyConfig, config_as_dict, load_config
from study.tracking import (
    TrackingTarget,
    get_or_create_experiment,
    reopen_study_run,
    resolve_tracking_uri,
    start_study_run,
)
from trainables.data import DatasetError, DataSpec, ImageDataset, load_dataset
from trainables.hparams import resolve
from trainables.trainable import declared_hparams

logger = logging.getLogger("sslstudy")


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
        return load_dataset(spec)
    except DatasetError as exc:
        raise ConfigError(str(exc)) from None


def _batch_sizes(space: SearchSpace, default: int) -> list[int]:
    spec = space.params.get("batch_size")
    if spec is None:
        return [int(space.fixed.get("batch_size", default))]
    if spec.type == "categorical":
        return [int(c) for c in spec.choices]
    return [int(spec.high)]


def check_batch_size(field: str, sizes: list[int], dataset: ImageDataset) -> None:
    too_big = [b for b in sizes if b > len(dataset)]
    if too_big:
        raise ConfigError(
            f"{field}: {max(too_big)} exceeds the {len(dataset)} pretraining images "
            f"of {dataset.name!r}"
        )


def _check_tracking_uri(uri: str) -> str:
    """Validate the URI; a tracking server must answer before anything is launched."""
    from study.server import check_tracking_server

    resolved = resolve_tracking_uri(uri)
    if resolved.startswith(("http://", "https://")):
        check_tracking_server(resolved)
    elif resolved.startswith("sqlite:///"):
        parent = Path(resolved.removeprefix("sqlite:///")).parent
        if parent.exists() and not parent.is_dir():
            raise ConfigError(f"tracking.tracking_uri: {str(parent)!r} is not a directory")
    elif not resolved.startswith(("postgresql", "mysql", "databricks")):
        raise ConfigError(
            f"tracking.tracking_uri: unsupported {uri!r}; use sqlite:///FILE.db locally or "
            "http(s)://HOST:PORT for a tracking server (the file store is deprecated)"
        )
    return resolved


def _check_experiment_not_deleted(uri: str, experiment: str) -> None:
    """MLflow keeps a deleted experiment's name reserved; logging into it would hide every
    run in the UI. Checked only where the store already exists (opening a missing SQLite
    file would create it)."""
    from mlflow.tracking import MlflowClient

    if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).is_file():
        return
    found = MlflowClient(uri).get_experiment_by_name(experiment)
    if found is not None and found.lifecycle_stage == "deleted":
        raise ConfigError(
            f"tracking.experiment: {experiment!r} was deleted in MLflow; restore it "
            "(mlflow experiments restore) or remove it for good (mlflow gc), or choose "
            "another name"
        )


def _prepare_sqlite_dir(uri: str) -> None:
    if uri.startswith("sqlite:///"):
        Path(uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)


def _check_address(address: str | None) -> None:
    """A ``HOST:PORT`` Ray address must accept connections: ``ray.init`` would otherwise
    retry for minutes before failing."""
    if address is None or address == "auto" or address.startswith("ray://"):
        return
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        raise ConfigError(f"--address: expected auto or HOST:PORT, got {address!r}")
    try:
        socket.create_connection((host, int(port)), timeout=5).close()
    except OSError as exc:
        raise ConfigError(f"--address: no Ray cluster answers at {address} ({exc})") from None


@contextmanager
def ray_session(address: str | None) -> Iterator[None]:
    """Connect to ``address`` or start a local Ray; reuse one already started (tests)."""
    import ray

    if ray.is_initialized():
        yield
        return
    try:
        ray.init(address=address, logging_level=logging.WARNING)
    except ConnectionError as exc:
        raise ConfigError(f"--address: cannot connect to Ray at {address} ({exc})") from None
    try:
        yield
    finally:
        ray.shutdown()


STUDY_STATE = "study.json"


def _check_storage(root: Path) -> None:
    """The study directory must be creatable: its nearest existing ancestor is a
    writable directory."""
    ancestor = root
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise ConfigError(f"storage_path: {str(ancestor)!r} is not a directory")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise ConfigError(f"storage_path: {str(ancestor)!r} is not writable")


def _check_shared_storage(root: Path) -> None:
    """On a cluster of several nodes, every node must see the study directory: trials
    write checkpoints there and a resumed study reads them back. A marker file written by
    the driver is looked for from a task on each node."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    nodes = [n for n in ray.nodes() if n.get("Alive")]
    if len(nodes) < 2:
        return
    probe = ray.remote(num_cpus=0)(_path_exists)
    marker = root / f".visible-{uuid.uuid4().hex}"
    marker.write_text("sslstudy")
    try:
        blind = []
        for node in nodes:
            strategy = NodeAffinitySchedulingStrategy(node["NodeID"], soft=False)
            seen = ray.get(probe.options(scheduling_strategy=strategy).remote(str(marker)))
            if not seen:
                blind.append(node.get("NodeManagerAddress", node["NodeID"]))
    finally:
        marker.unlink()
    if blind:
        raise ConfigError(
            f"storage_path: {str(root.parent)!r} is not visible from node(s) "
            f"{', '.join(blind)}; on a multi-node cluster use a shared file system or a "
            "storage URI every node can reach"
        )


def _path_exists(path: str) -> bool:
    return Path(path).exists()


#: Settings that may change between a study's start and its resumption.
_RESUMABLE_CHANGES = frozenset({"search.max_concurrent"})


def _flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(data, dict):
        return {prefix: data}
    out: dict[str, Any] = {}
    for key, value in data.items():
        out.update(_flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    return out


def _changed_field(started: dict[str, Any], now: dict[str, Any]) -> str | None:
    """The first setting that differs between two resolved configs, ignoring those that
    may change on resume."""
    before, after = _flatten(started), _flatten(now)
    for key in sorted(set(before) | set(after)):
        if key not in _RESUMABLE_CHANGES and before.get(key) != after.get(key):
            return key
    return None


def _read_state(root: Path) -> dict[str, Any]:
    state_file = root / STUDY_STATE
    if not state_file.is_file():
        raise ConfigError(f"--resume: no study to resume at {str(root)!r} (no {STUDY_STATE})")
    return json.loads(state_file.read_text())


def run_search(
    config_path: Path, overrides: Mapping[str, Any], address: str | None, resume: bool = False
) -> int:
    import ray

    from study.search import default_max_concurrent, run_cross_method, run_method, study_root
    from trainables.ray_trial import DatasetHandle

    config = load_config(config_path, overrides)
    spaces = config.spaces()
    for method, space in spaces.items():
        if not space.params:
            raise ConfigError(
                f"methods.{method}.space: every parameter is fixed, nothing to search; "
                "use `sslstudy train` for a single configuration"
            )
    tracking_uri = _check_tracking_uri(config.tracking.tracking_uri)
    _check_experiment_not_deleted(tracking_uri, config.experiment)
    _check_address(address)
    root = study_root(config)
    _check_storage(root)
    state = None
    if resume:
        state = _read_state(root)
        changed = _changed_field(state["config"], config_as_dict(config))
        if changed:
            raise ConfigError(
                f"--resume: {changed} differs from the config the study at {str(root)!r} "
                "started with; resume with the same config"
            )
    elif root.exists() and any(root.iterdir()):
        raise ConfigError(
            f"storage_path: {str(root)!r} already holds a study named {config.name!r}; "
            "choose another --name, remove that directory, or pass --resume"
        )
    dataset = load_study_dataset(config)
    for method, space in spaces.items():
        default = declared_hparams(method)["batch_size"].default
        check_batch_size(
            f"methods.{method}.space.batch_size", _batch_sizes(space, default), dataset
        )

    with ray_session(address):
        root.mkdir(parents=True, exist_ok=True)
        try:
            _check_shared_storage(root)
        except ConfigError:
            if not resume and not any(root.iterdir()):
                root.rmdir()
            raise
        max_concurrent = config.search.max_concurrent or default_max_concurrent(
            config, ray.cluster_resources()
        )
        _prepare_sqlite_dir(tracking_uri)
        if state is None:
            target = start_study_run(
                tracking_uri,
                config.experiment,
                config.name,
                config_as_dict(config),
                {m: s.to_dict() for m, s in spaces.items()},
            )
            state = {"config": config_as_dict(config), "tracking_uri": tracking_uri,
                     "experiment_id": target.experiment_id,
                     "parent_run_id": target.parent_run_id}
            (root / STUDY_STATE).write_text(json.dumps(state, indent=2))
        else:
            target = TrackingTarget(state["tracking_uri"], state["experiment_id"],
                                    state["parent_run_id"])
            reopen_study_run(target)
        # The dataset goes to the object store once for the whole study; every trial
        # and worker of every method reads it from there.
        data = DatasetHandle(ray.put(dataset))
        if config.search.cross_method:
            outcomes = run_cross_method(config, spaces, data, target, max_concurrent, resume)
        else:
            outcomes = [
                run_method(config, method, space, data, target, max_concurrent, resume)
                for method, space in spaces.items()
            ]
    return _finish_search(config, target, tracking_uri, outcomes, root)


def _finish_search(
    config: StudyConfig, target: TrackingTarget, tracking_uri: str, outcomes: list, root: Path
) -> int:
    from study.tracking import end_study_run

    succeeded = sum(o.completed + o.stopped_early for o in outcomes)
    summary = {"methods": [o.as_dict() for o in outcomes]}
    end_study_run(target, summary, failed=succeeded == 0)
    for outcome in outcomes:
        if outcome.best_value is not None:
            best = ", ".join(f"{k}={v}" for k, v in outcome.best_params.items())
            logger.info("best %s (%s=%.4f): %s", outcome.method, config.search.metric,
                        outcome.best_value, best)
    logger.info("Ray results and the Optuna study (optuna.db): %s", root)
    logger.info("open the runs:   mlflow ui --backend-store-uri %s", tracking_uri)
    logger.info(
        "write the report: sslstudy analyze --experiment %s --tracking-uri %s --out REPORT_DIR",
        config.experiment,
        tracking_uri,
    )
    if succeeded == 0:
        logger.error("every trial failed; see the failure reasons above and in MLflow")
        return 1
    return 0


def _pick_method(config: StudyConfig, method: str | None) -> str:
    if method is None:
        if len(config.methods) > 1:
            raise ConfigError(
                f"--method: the config has several methods; choose one of "
                f"{', '.join(config.methods)}"
            )
        return next(iter(config.methods))
    if method not in config.methods:
        raise ConfigError(f"--method: {method!r} is not in the config; allowed: "
                          f"{', '.join(config.methods)}")
    return method


def run_train(
    config_path: Path, overrides: Mapping[str, Any], method: str | None, params: Mapping[str, Any]
) -> int:
    from mlflow.tracking import MlflowClient
    from tqdm import tqdm

    from study.search import trial_settings
    from trainables.trainable import local_run

    config = load_config(config_path, overrides)
    method = _pick_method(config, method)
    space = config.spaces()[method]
    declared = declared_hparams(method)
    try:
        hparams = resolve(declared, {**space.defaults(declared), **params}, owner=method)
    except ValueError as exc:
        raise ConfigError(f"--param {exc}") from None
    tracking_uri = _check_tracking_uri(config.tracking.tracking_uri)
    _check_experiment_not_deleted(tracking_uri, config.experiment)
    dataset = load_study_dataset(config)
    check_batch_size("batch_size", [hparams["batch_size"]], dataset)

    _prepare_sqlite_dir(tracking_uri)
    client = MlflowClient(tracking_uri)
    experiment_id = get_or_create_experiment(client, tracking_uri, config.experiment)
    settings = trial_settings(config, method, space, TrackingTarget(tracking_uri, experiment_id))
    logger.info("training %s on %s: %s", method, dataset.name,
                ", ".join(f"{k}={v}" for k, v in hparams.items()))
    with tqdm(total=config.train.epochs, unit="epoch", desc=method) as bar:

        def on_epoch(result: Any) -> None:
            bar.set_postfix({k: f"{v:.4g}" for k, v in result.metrics.items() if k != "epoch"})
            bar.update(1)

        run_id, metrics = local_run(settings, dataset, hparams, on_epoch)
    logger.info("finished run %s: %s", run_id,
                ", ".join(f"{k}={v:.4g}" for k, v in metrics.items()))
    logger.info("open it: mlflow ui --backend-store-uri %s", tracking_uri)
    return 0
