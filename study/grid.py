"""Fixed configurations through Ray Tune: confirmation runs and sweeps.

No searcher and no early stopping: a grid of runs, each a method, its hyperparameter
values, a seed and the tags that say why it exists, all at the full budget, with the
resources, retries, resume and MLflow recording of a search's trials.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from ray import tune

from study.cluster import trial_resources
from study.config import StudyConfig
from study.settings import study_root, trial_settings, with_absolute_storage
from study.tuner import CloseTrialRuns, FailureLines, failure_config, fit_tuner
from tracking import schema
from tracking.runs import TrackingTarget, close_orphaned_runs
from trainables.trainable import DatasetHandle, fixed_trial

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class FixedRun:
    method: str
    values: Mapping[str, Any]
    seed: int
    tags: Mapping[str, str] = field(default_factory=dict)
    #: How progress lines name the run.
    label: str = ""


class FixedProgress(FailureLines):
    """One log line per evaluation of a fixed run: its label, budget and scores."""

    def __init__(self, metric: str, max_epochs: int) -> None:
        self.metric, self.max_epochs = metric, max_epochs

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info):
        logger.info("%s epoch %d/%d  loss=%.4f %s=%.4f", trial.config["run"]["label"],
                    int(result.get(schema.EPOCH, 0)), self.max_epochs,
                    result.get(schema.LOSS, math.nan), self.metric,
                    result.get(self.metric, math.nan))

    def label(self, trial: Any) -> str:
        return trial.config["run"]["label"]


def run_fixed(
    config: StudyConfig,
    name: str,
    runs: list[FixedRun],
    data: DatasetHandle,
    target: TrackingTarget,
    max_concurrent: int,
    resume: bool,
    run_kind: str,
) -> list[tune.Result]:
    """Run (or resume) the Tuner ``name`` of the study over ``runs``."""
    config = with_absolute_storage(config)
    spaces = config.spaces()
    settings = {
        method: trial_settings(config, method, spaces[method], target, run_kind)
        for method in {r.method for r in runs}
    }
    trainable = tune.with_resources(
        tune.with_parameters(fixed_trial, settings_by_method=settings, data=data),
        trial_resources(config.resources),
    )

    def new_tuner() -> tune.Tuner:
        logger.info("%s: %d runs, at most %d at a time", name, len(runs), max_concurrent)
        return tune.Tuner(
            trainable,
            param_space={"run": tune.grid_search([asdict(r) for r in runs])},
            # As in a search: a finished run's process runs the next one (no process start
            # and no re-import of torch and MLflow per run; every run seeds all it uses).
            tune_config=tune.TuneConfig(max_concurrent_trials=max_concurrent,
                                        reuse_actors=True),
            run_config=tune.RunConfig(
                name=name,
                storage_path=str(study_root(config)),
                failure_config=failure_config(config),
                checkpoint_config=tune.CheckpointConfig(num_to_keep=2),
                callbacks=[FixedProgress(config.objective, config.train.epochs),
                           CloseTrialRuns(target, config.train.epochs)],
                verbose=0,
            ),
        )

    results = fit_tuner(config, name, trainable, new_tuner, resume, len(runs))
    for method in settings:
        close_orphaned_runs(target, method, run_kind)
    return results
