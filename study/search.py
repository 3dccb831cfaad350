"""``sslstudy search``: check every input, then run the study.

The checks cover the config, every search space, the tracking store, the study
directory, the dataset (loaded here, once, and shipped to all trials through Ray's
object store), the batch sizes and what one trial asks of the cluster. Only when all of
them pass is anything created: MLflow runs, the results directory, the Optuna database.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from study import checks
from study.cluster import (
    check_fits,
    check_shared_storage,
    cluster_nodes,
    default_max_concurrent,
    local_machine,
    ray_session,
)
from study.config import ConfigError, StudyConfig, config_as_dict, load_config
from study.settings import STUDY_STATE, study_root
from tracking.runs import TrackingTarget, end_study_run, reopen_study_run, start_study_run

logger = logging.getLogger("sslstudy")

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


def _resume_state(config: StudyConfig, root: Path, resume: bool) -> dict[str, Any] | None:
    """The saved state of the study to resume, or None for a new study (whose directory
    must not already hold one)."""
    if resume:
        state = _read_state(root)
        changed = _changed_field(state["config"], config_as_dict(config))
        if changed:
            raise ConfigError(
                f"--resume: {changed} differs from the config the study at {str(root)!r} "
                "started with; resume with the same config"
            )
        return state
    if root.exists() and any(root.iterdir()):
        raise ConfigError(
            f"storage_path: {str(root)!r} already holds a study named {config.name!r}; "
            "choose another --name, remove that directory, or pass --resume"
        )
    return None


def run_search(
    config_path: Path, overrides: Mapping[str, Any], address: str | None, resume: bool = False
) -> int:
    import ray

    from study.tuner import run_cross_method, run_method
    from trainables.trainable import DatasetHandle

    config = load_config(config_path, overrides)
    spaces = config.spaces()
    for method, space in spaces.items():
        if not space.params:
            raise ConfigError(
                f"methods.{method}.space: every parameter is fixed, nothing to search; "
                "use `sslstudy train` for a single configuration"
            )
    tracking_uri = checks.check_tracking_uri(config.tracking.tracking_uri)
    checks.check_experiment(tracking_uri, config.experiment)
    checks.check_address(address)
    root = study_root(config)
    checks.check_creatable_dir("storage_path", root)
    state = _resume_state(config, root, resume)
    dataset = checks.load_study_dataset(config)
    checks.check_batch_sizes(spaces, dataset, config.resources.workers_per_trial)
    starts_local_ray = address is None and not ray.is_initialized()
    if starts_local_ray:
        check_fits(config.resources, local_machine(), fixed=True)

    with ray_session(address):
        if not starts_local_ray:
            # A cluster started by someone else (tests, or --address) may not grow.
            check_fits(config.resources, cluster_nodes(), fixed=address is None)
        root.mkdir(parents=True, exist_ok=True)
        try:
            check_shared_storage(root)
        except ConfigError:
            if state is None and not any(root.iterdir()):
                root.rmdir()
            raise
        max_concurrent = config.search.max_concurrent or default_max_concurrent(
            config.resources, ray.cluster_resources()
        )
        checks.prepare_sqlite_dir(tracking_uri)
        if state is None:
            target = start_study_run(
                tracking_uri,
                config.experiment,
                config.name,
                config_as_dict(config),
                {m: s.to_dict() for m, s in spaces.items()},
                objective=(config.search.metric, config.search.mode),
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
        data = DatasetHandle.put(dataset)
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
