"""Planted experiments: MLflow runs (or plain tables) whose answers are known, for the
analysis tests and the analysis-speed benchmark."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient

from tracking import schema
from tracking.uris import artifact_location


@dataclass
class Trial:
    """One planted trial: its params, the metric values it logged per step, how it
    ended."""

    method: str
    params: Mapping[str, Any]
    #: metric -> {step: value}
    metrics: Mapping[str, Mapping[int, float]]
    status: str = schema.COMPLETED
    max_budget: int | None = None
    reason: str | None = None
    tags: Mapping[str, str] = field(default_factory=dict)


def create_experiment(uri: str, name: str) -> tuple[MlflowClient, str]:
    client = MlflowClient(uri)
    return client, client.create_experiment(name, artifact_location=artifact_location(uri))


def write_study(
    client: MlflowClient, experiment_id: str, trials: list[Trial],
    spaces: Mapping[str, Mapping[str, Any]] | None = None,
    objective: tuple[str, str] | None = None, settings: Mapping[str, str] | None = None,
) -> str:
    """Log ``trials`` as the platform does: platform tags, one child run each under a
    study parent run that records the search spaces, the objective and the study's
    ``settings`` (params such as ``search.sampler``), when given. Returns the parent's
    id."""
    parent_tags = {schema.TAG_ROLE: schema.ROLE_STUDY}
    if objective is not None:
        parent_tags |= {schema.TAG_STUDY_METRIC: objective[0],
                        schema.TAG_STUDY_MODE: objective[1]}
    parent = client.create_run(experiment_id, run_name="planted", tags=parent_tags)
    parent_id = parent.info.run_id
    for key, value in (settings or {}).items():
        client.log_param(parent_id, key, value)
    if spaces is not None:
        client.log_text(parent_id, json.dumps(spaces), schema.SEARCH_SPACES)
    for i, trial in enumerate(trials):
        steps = [s for values in trial.metrics.values() for s in values]
        tags = {schema.TAG_METHOD: trial.method, schema.TAG_STATUS: trial.status,
                schema.TAG_PARENT_RUN: parent_id, **trial.tags}
        if steps:
            tags[schema.TAG_BUDGET] = str(max(steps))
        if trial.max_budget is not None:
            tags[schema.TAG_MAX_BUDGET] = str(trial.max_budget)
        if trial.reason:
            tags[schema.TAG_FAILURE_REASON] = trial.reason
        log_run(client, experiment_id, f"{trial.method}-{i}", trial.params, trial.metrics,
                tags, "FAILED" if trial.status == schema.FAILED else "FINISHED")
    client.set_terminated(parent_id)
    return parent_id


def log_run(
    client: MlflowClient, experiment_id: str, name: str, params: Mapping[str, Any],
    metrics: Mapping[str, Mapping[int, float]], tags: Mapping[str, str], status: str,
) -> str:
    run_id = client.create_run(experiment_id, run_name=name).info.run_id
    client.log_batch(
        run_id,
        params=[Param(k, str(v)) for k, v in params.items()],
        metrics=[Metric(key, float(v), step, step) for key, values in metrics.items()
                 for step, v in values.items()],
        tags=[RunTag(k, v) for k, v in tags.items()],
    )
    client.set_terminated(run_id, status)
    return run_id


def uniform_design(
    rng: np.random.Generator, n: int, params: Mapping[str, tuple[str, Any]]
) -> pd.DataFrame:
    """``n`` configurations drawn as a search space would: ``params`` maps a name to
    (``log``, (low, high)), (``linear``, (low, high)) or (``categorical``, choices)."""
    columns = {}
    for name, (scale, domain) in params.items():
        if scale == "log":
            columns[name] = 10 ** rng.uniform(np.log10(domain[0]), np.log10(domain[1]), n)
        elif scale == "linear":
            columns[name] = rng.uniform(domain[0], domain[1], n)
        else:
            columns[name] = rng.choice(domain, n)
    return pd.DataFrame(columns)


def curve(final: float, budget: int, shape: Callable[[float], float] | None = None
          ) -> dict[int, float]:
    """A learning curve reaching ``final`` at ``budget`` epochs, by default rising as
    ``final * step / budget``."""
    shape = shape or (lambda fraction: fraction)
    return {step: final * shape(step / budget) for step in range(1, budget + 1)}
