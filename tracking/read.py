"""Reading an experiment back from MLflow: its runs, which of them are study (parent)
runs, their metric histories, and what the studies recorded (objective, search spaces).

Works on any experiment, not only the platform's: parents are the runs that others name
as ``mlflow.parentRunId`` or that carry the study role tag.
"""

from __future__ import annotations

import json
import logging
import math
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path, PurePosixPath
from typing import Any, NamedTuple

from mlflow.entities import Experiment, Run
from mlflow.exceptions import MlflowException
from mlflow.store.tracking.rest_store import RestStore
from mlflow.tracking import MlflowClient
from mlflow.utils.rest_utils import http_request, verify_rest_response
from sqlalchemy.exc import DatabaseError

from tracking import schema
from tracking.errors import TrackingError
from tracking.server import check_tracking_server
from tracking.uris import sqlite_path, sqlite_without_store

logger = logging.getLogger(__name__)

#: The tracking server's bulk history endpoint, the one its own UI draws charts from:
#: every point of one metric for up to 100 runs per request, at most 25,000 points.
BULK_HISTORY_ENDPOINT = "/ajax-api/2.0/mlflow/metrics/get-history-bulk"
BULK_HISTORY_RUNS = 100
BULK_HISTORY_POINTS = 25_000
#: Run ids per query of a database store (SQLite allows 32,766 bound variables).
_SQL_RUNS = 500


class HistoryPoint(NamedTuple):
    """One logged value of one metric of one run."""

    run_id: str
    key: str
    step: int
    value: float
    timestamp: int


def open_store(tracking_uri: str, field: str = "--tracking-uri",
               check_server: bool = False) -> MlflowClient:
    """A client of an existing store: a missing or empty SQLite file is an error, not a new
    store (MLflow would create its tables), and so is a file that is not an SQLite
    database.
    ``field`` is where the URI came from, for the message. ``check_server``: a command
    opening the store a user named checks first that a tracking server answers there
    (MLflow would retry for minutes before failing with a traceback)."""
    if check_server and tracking_uri.startswith(("http://", "https://")):
        check_tracking_server(tracking_uri, field=field)
    missing = sqlite_without_store(tracking_uri)
    if missing is not None:
        raise TrackingError(f"{field}: no MLflow database at {str(missing)!r}")
    try:
        return MlflowClient(tracking_uri)
    except DatabaseError as exc:
        # Only "not a database": a locked or unreadable database is another problem.
        if getattr(exc.orig, "sqlite_errorname", None) != "SQLITE_NOTADB":
            raise
        raise TrackingError(f"{field}: {str(sqlite_path(tracking_uri))!r} is not an MLflow "
                            "SQLite database") from None


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


def metric_histories(
    client: MlflowClient, run_ids: list[str], keys: Iterable[str]
) -> list[HistoryPoint]:
    """Every logged value of ``keys`` for ``run_ids``, in bulk.

    MLflow's client has only a per-run, per-metric history call, which is one HTTP request
    per run and metric against a tracking server (3,000 for 1,000 runs and 3 metrics).
    Instead, a database store (SQLite, PostgreSQL...) is asked once per metric for 500
    runs at a time, and a tracking server through the bulk endpoint its UI uses, for 100
    runs per request. Both are MLflow internals rather than its public client API, so any
    other store, or a server that refuses the endpoint, falls back to per-run requests.
    Points come in logging order within each run and metric.
    """
    store = client._tracking_client.store
    points: list[HistoryPoint] = []
    for key in keys:
        if hasattr(store, "get_metric_history_bulk"):
            points += _database_histories(store, run_ids, key)
            continue
        if isinstance(store, RestStore):
            try:
                points += _server_histories(client, store, run_ids, key)
                continue
            except MlflowException as exc:
                logger.info("bulk metric history refused (%s); reading run by run", exc)
        points += _run_by_run(client, run_ids, key)
    return points


def _database_histories(store: Any, run_ids: list[str], key: str) -> list[HistoryPoint]:
    points = []
    for start in range(0, len(run_ids), _SQL_RUNS):
        for found in store.get_metric_history_bulk(run_ids[start:start + _SQL_RUNS], key,
                                                   max_results=None):
            points.append(HistoryPoint(found.run_id, key, int(found.step), found.value,
                                       int(found.timestamp)))
    return points


def _server_histories(
    client: MlflowClient, store: RestStore, run_ids: list[str], key: str
) -> list[HistoryPoint]:
    """Requests of up to 100 runs; a request that comes back full (25,000 points) may
    have been cut, and is asked again in halves (one run alone: page by page)."""
    pending = [run_ids[i:i + BULK_HISTORY_RUNS]
               for i in range(0, len(run_ids), BULK_HISTORY_RUNS)]
    points: list[HistoryPoint] = []
    while pending:
        chunk = pending.pop()
        params = [("run_id", r) for r in chunk] + [
            ("metric_key", key), ("max_results", str(BULK_HISTORY_POINTS))]
        response = http_request(store.get_host_creds(), BULK_HISTORY_ENDPOINT, "GET",
                                params=params)
        found = verify_rest_response(response, BULK_HISTORY_ENDPOINT).json().get("metrics", [])
        if len(found) >= BULK_HISTORY_POINTS:
            if len(chunk) == 1:
                points += _run_by_run(client, chunk, key)
            else:
                half = len(chunk) // 2
                pending += [chunk[:half], chunk[half:]]
            continue
        points += [HistoryPoint(m["run_id"], key, int(m.get("step", 0)), float(m["value"]),
                                int(m.get("timestamp", 0))) for m in found]
    return points


def _run_by_run(client: MlflowClient, run_ids: list[str], key: str) -> list[HistoryPoint]:
    return [HistoryPoint(run_id, key, int(m.step), m.value, int(m.timestamp))
            for run_id in run_ids for m in client.get_metric_history(run_id, key)]


def recorded_objective(
    client: MlflowClient, experiment: Experiment
) -> tuple[str | None, str | None]:
    """The metric and mode the experiment's studies optimised, when they all agree; None
    where nothing or several were recorded."""
    parents = client.search_runs(
        [experiment.experiment_id],
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
            path = download_artifact(client, run.info.run_id, schema.SEARCH_SPACES, tmp)
            if path is None:
                continue  # a parent run of another tool: no spaces recorded
            data = json.loads(path.read_text())
        for method, space in data.items():
            spaces.setdefault(method, {}).update(space.get("params", {}))
    return spaces


def run_status(tracking_uri: str, run_id: str) -> str:
    """MLflow's status of a study's run: RUNNING, FINISHED, FAILED or KILLED. The store
    and the run are the ones a study recorded: either gone is an input error (and no
    empty store is created)."""
    client = open_store(tracking_uri, field="tracking.tracking_uri")
    try:
        return client.get_run(run_id).info.status
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise
        raise TrackingError(f"tracking.tracking_uri: the study's run {run_id} is not in "
                            f"{tracking_uri}") from None


def child_runs(tracking_uri: str, experiment_id: str, parent_run_id: str) -> list[Run]:
    """Every run under a study's (or sweep's) parent run. The store is the one a study
    recorded: if it has gone, that is an input error, and no empty one is created."""
    client = open_store(tracking_uri, field="tracking.tracking_uri")
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


def best_trial_runs(runs: Iterable[Run], metric: str, mode: str) -> dict[str, Run]:
    """Per method, the run with the best value of ``metric`` among those that reached the
    full budget (status ``completed``) and trained for as many epochs as the method's
    longest such run: a value after fewer epochs (a run ASHA stopped, or a shorter
    ``sslstudy train --epochs``) is not comparable."""
    sign = 1.0 if mode == "max" else -1.0
    finished: dict[str, list[tuple[float, float, Run]]] = {}
    for run in runs:
        tags = run.data.tags
        value = run.data.metrics.get(metric)
        if tags.get(schema.TAG_STATUS) != schema.COMPLETED or value is None:
            continue
        budget = float(tags.get(schema.TAG_BUDGET, "nan"))
        finished.setdefault(tags.get(schema.TAG_METHOD, ""), []).append((budget, value, run))
    best: dict[str, Run] = {}
    for method, candidates in finished.items():
        longest = max((b for b, _, _ in candidates), default=float("nan"))
        comparable = [(v, r) for b, v, r in candidates if b == longest or math.isnan(longest)]
        best[method] = max(comparable, key=lambda pair: sign * pair[0])[1]
    return best


def logged_model_id(run: Run) -> str | None:
    """The id of the model a run logged (its encoder), if it logged one."""
    outputs = run.outputs.model_outputs if run.outputs else []
    return outputs[-1].model_id if outputs else None


def read_artifact(tracking_uri: str, run_id: str, path: str) -> bytes | None:
    """The content of a run's artifact, or None when the run has none at ``path``."""
    client = open_store(tracking_uri)
    with tempfile.TemporaryDirectory() as tmp:
        local = download_artifact(client, run_id, path, tmp)
        return None if local is None else local.read_bytes()


def download_artifact(client: MlflowClient, run_id: str, path: str,
                      directory: str) -> Path | None:
    """A run's artifact copied into ``directory``, or None when the run has none at
    ``path``. Whether it has one is read from the listing of its folder: MLflow's download
    reports every failure of the artifact store (unreachable, refused) as a missing
    artifact, and a store that fails must be reported, not read as a run without it."""
    folder = PurePosixPath(path).parent
    listed = client.list_artifacts(run_id, None if str(folder) == "." else str(folder))
    if path not in {item.path for item in listed}:
        return None
    return Path(client.download_artifacts(run_id, path, directory))
