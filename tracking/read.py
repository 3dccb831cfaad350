"""Reading an experiment back from MLflow: its runs, which of them are study (parent)
runs, their metric histories, and what the studies recorded (objective, search spaces).

Works on any experiment, not only the platform's: parents are the runs that others name
as ``mlflow.parentRunId`` or that carry the study role tag.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from mlflow.entities import Experiment, Metric, Run
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from tracking import schema
from tracking.errors import TrackingError
from tracking.uris import sqlite_path


def open_store(tracking_uri: str) -> MlflowClient:
    """A client of an existing store: a missing SQLite file is an error, not a new store."""
    path = sqlite_path(tracking_uri)
    if path is not None and not path.is_file():
        raise TrackingError(f"--tracking-uri: no MLflow database at {str(path)!r}")
    return MlflowClient(tracking_uri)


def find_experiment(client: MlflowClient, name: str) -> Experiment:
    found = client.get_experiment_by_name(name)
    if found is None:
        names = [e.name for e in client.search_experiments()]
        raise TrackingError(
            f"--experiment: no experiment named {name!r}; found: {', '.join(names) or 'none'}"
        )
    return found


def all_runs(client: MlflowClient, experiment_id: str) -> Iterator[Run]:
    token = None
    while True:
        page = client.search_runs([experiment_id], max_results=1000, page_token=token)
        yield from page
        token = page.token
        if not token:
            return


def split_parents(runs: list[Run]) -> tuple[list[Run], list[Run]]:
    """(parent runs, trial runs): a parent is a study's own run or any run that other runs
    name as their parent."""
    parent_ids = {r.data.tags[schema.TAG_PARENT_RUN] for r in runs
                  if schema.TAG_PARENT_RUN in r.data.tags}
    parents = [r for r in runs if r.info.run_id in parent_ids
               or r.data.tags.get(schema.TAG_ROLE) == schema.ROLE_STUDY]
    parent_set = {r.info.run_id for r in parents}
    return parents, [r for r in runs if r.info.run_id not in parent_set]


def metric_history(client: MlflowClient, run_id: str, key: str) -> list[Metric]:
    return client.get_metric_history(run_id, key)


def recorded_objective(tracking_uri: str, experiment: str) -> tuple[str | None, str | None]:
    """The metric and mode the experiment's studies optimised, when they all agree; None
    where nothing or several were recorded."""
    client = open_store(tracking_uri)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        return None, None
    parents = client.search_runs(
        [found.experiment_id],
        filter_string=f"tags.`{schema.TAG_ROLE}` = '{schema.ROLE_STUDY}'",
    )
    metrics = {r.data.tags.get(schema.TAG_STUDY_METRIC) for r in parents} - {None, ""}
    modes = {r.data.tags.get(schema.TAG_STUDY_MODE) for r in parents} - {None, ""}
    return (metrics.pop() if len(metrics) == 1 else None,
            modes.pop() if len(modes) == 1 else None)


def recorded_spaces(
    client: MlflowClient, parents: list[Run]
) -> dict[str, dict[str, dict[str, Any]]]:
    """method -> param -> spec (type, scale, ...) from the studies' search-space artifact;
    later studies of the same method win."""
    spaces: dict[str, dict[str, dict[str, Any]]] = {}
    for run in sorted(parents, key=lambda r: r.info.start_time or 0):
        with tempfile.TemporaryDirectory() as tmp:
            try:
                path = client.download_artifacts(run.info.run_id, schema.SEARCH_SPACES, tmp)
            except (MlflowException, OSError):
                continue  # a parent run of another tool: no spaces recorded
            data = json.loads(Path(path).read_text())
        for method, space in data.items():
            spaces.setdefault(method, {}).update(space.get("params", {}))
    return spaces


def child_runs(tracking_uri: str, experiment_id: str, parent_run_id: str) -> list[Run]:
    """Every run under a study's (or sweep's) parent run."""
    client = MlflowClient(tracking_uri)
    runs: list[Run] = []
    token = None
    while True:
        page = client.search_runs(
            [experiment_id],
            filter_string=f"tags.`{schema.TAG_PARENT_RUN}` = '{parent_run_id}'",
            max_results=1000, page_token=token,
        )
        runs += page
        token = page.token
        if not token:
            return runs


def read_artifact(tracking_uri: str, run_id: str, path: str) -> bytes | None:
    """The content of a run's artifact, or None when the run has none at ``path``."""
    client = open_store(tracking_uri)
    with tempfile.TemporaryDirectory() as tmp:
        try:
            return Path(client.download_artifacts(run_id, path, tmp)).read_bytes()
        except (MlflowException, OSError):
            return None
