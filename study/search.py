"""``sslstudy search``: check every input, then run the study.

The checks cover the config, every search space, the tracking store, the study
directory, the dataset (loaded here, once, and shipped to all trials through Ray's
object store), the batch sizes and what one trial asks of the cluster. Only when all of
them pass is anything created: MLflow runs, the results directory, the Optuna database.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from study import checks
from study.config import ConfigError, StudyConfig, config_as_dict, load_config
from study.launch import (
    analyze_command,
    check_tracking,
    close_unstarted,
    launch,
    resume_state,
)
from study.settings import loop_settings, study_root
from tracking import schema
from tracking.runs import (
    TrackingTarget,
    end_study_run,
    log_references,
    log_study_summary,
    start_study_run,
)
from tracking.server import open_instructions
from trainables.data import ImageDataset

logger = logging.getLogger("sslstudy")


def run_search(
    config_path: Path, overrides: Mapping[str, Any], address: str | None, resume: bool = False
) -> int:
    from study.confirm import confirm_in_session
    from study.tuner import legacy_tuners, run_methods

    config = load_config(config_path, overrides)
    spaces = config.spaces()
    if config.data.val_fraction == 0:
        raise ConfigError(
            f"data.val_fraction: must be above 0 for a search, which optimises "
            f"{config.objective} on the validation part of the train split (the test "
            "split never selects hyperparameters)"
        )
    for method, space in spaces.items():
        if not space.params:
            raise ConfigError(
                f"methods.{method}.space: every parameter is fixed, nothing to search; "
                "use `sslstudy train` for a single configuration"
            )
    tracking_uri = check_tracking(config, address)
    checks.check_local_device(config, address)
    root = study_root(config)
    state = resume_state(config, root, resume)
    legacy = legacy_tuners(config, spaces) if state is not None else []
    if legacy:
        raise ConfigError(
            f"--resume: {root} holds one Tuner per method ({', '.join(legacy)}), from a "
            "version that searched the methods one after another; this version runs them "
            "in one Tuner and cannot continue it: finish it with the version that started "
            "it, or start the study anew under another name"
        )
    dataset = checks.load_study_dataset(config)
    checks.check_batch_sizes(spaces, dataset, config.resources.workers_per_trial)
    checks.check_image_geometry(spaces, dataset)

    def start_parent() -> TrackingTarget:
        target = start_study_run(
            tracking_uri, config.experiment, config.name, config_as_dict(config),
            {m: s.to_dict() for m, s in spaces.items()},
            objective=(config.objective, config.search.mode),
        )
        try:
            _log_references(config, spaces, dataset, target)
        except BaseException as exc:
            close_unstarted(target, exc)
            raise
        return target

    with launch(config, root, state, address, dataset, tracking_uri, start_parent) as run:
        target = run.target
        outcomes = run_methods(config, spaces, run.data, target, run.max_concurrent, resume)
        confirmed = None
        if config.search.confirm is not None and any(o.completed for o in outcomes):
            confirmed = confirm_in_session(config, target, run, config.search.confirm, resume)
    return _finish_search(config, target, tracking_uri, outcomes, root, confirmed)


def _log_references(config: StudyConfig, spaces: Mapping[str, Any], dataset: ImageDataset,
                    target: TrackingTarget) -> None:
    """What each method's trials must beat, on the parent run: the method's encoder at the
    study's seed, untrained, scored like a trial (its default hyperparameters: only the
    architecture matters before training), and chance. Logged when the parent run opens
    (a resumed study has them), beside Ray's start when the study starts its own."""
    from trainables.hyperparameters import declared_hyperparameters, resolve_trial
    from trainables.pretrain import reference_scores

    loop = loop_settings(config)
    for method, space in spaces.items():
        values = resolve_trial(method, space.defaults(declared_hyperparameters(method)))
        scores = reference_scores(method, config.train.backbone, dataset, values, loop)
        log_references(target, method, scores)
        logger.info("%s at its random initialisation: %s", method, ", ".join(
            f"{k.removeprefix(schema.RANDOM_INIT_PREFIX)}={v:.4f}" for k, v in scores.items()
            if k.startswith(schema.RANDOM_INIT_PREFIX)))


def _finish_search(
    config: StudyConfig, target: TrackingTarget, tracking_uri: str, outcomes: list, root: Path,
    confirmed: list[dict] | None,
) -> int:
    succeeded = sum(o.completed + o.stopped_early for o in outcomes)
    summary: dict[str, Any] = {"methods": [o.as_dict() for o in outcomes]}
    if confirmed is not None:
        summary["confirmed"] = confirmed
    best = log_study_summary(target, (config.objective, config.search.mode),
                             [o.method for o in outcomes])
    summary["best_at_full_budget"] = best
    end_study_run(target, summary, failed=succeeded == 0)
    for outcome in outcomes:
        found = best.get(outcome.method, {})
        if "best" in found:
            params = ", ".join(f"{k}={v}" for k, v in found["params"].items())
            # The run's name carries the trial id of the progress lines and the report.
            logger.info("best %s at the full budget (%s=%.4f, run %s, id %s): %s",
                        outcome.method, config.objective, found["best"],
                        found["best_run_name"], found["best_run_id"], params)
    logger.info("Ray results and the Optuna study (optuna.db): %s", root)
    for line in open_instructions(tracking_uri, target.experiment_id):
        logger.info(line)
    logger.info("write the report: %s", analyze_command(config.experiment, tracking_uri,
                                                        root / "report"))
    if succeeded == 0:
        logger.error("every trial failed; see the failure reasons above and in MLflow")
        return 1
    return 0
