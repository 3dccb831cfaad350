"""Bulk metric histories from a tracking server: 100 runs per request, a full response
asked again in halves, and run-by-run reading when the server refuses the endpoint. The
server is faked at the HTTP call (a real one is in the analysis-speed benchmark); the
database path is checked against run-by-run reading in test_analysis_generic.py. Then
what reading refuses rather than guesses at: a SQLite store that is gone or is no database,
and an artifact the store fails to give (only a missing one means none)."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
from mlflow.entities import Metric
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INTERNAL_ERROR, RESOURCE_DOES_NOT_EXIST
from mlflow.store.tracking.rest_store import RestStore
from planted import create_experiment

from tracking import read
from tracking.errors import TrackingError
from tracking.runs import is_deleted_experiment


class _Response:
    def __init__(self, status: int, body: dict) -> None:
        self.status_code, self.text = status, json.dumps(body)

    def json(self) -> dict:
        return json.loads(self.text)


def _client(steps: int) -> SimpleNamespace:
    """A client of a fake server whose runs each logged ``steps`` points."""
    history = [Metric("acc", 0.1 * s, s, s) for s in range(steps)]
    return SimpleNamespace(
        _tracking_client=SimpleNamespace(store=RestStore(lambda: None)),
        get_metric_history=lambda run_id, key: history,
    )


def test_server_histories_in_chunks_halved_when_full(monkeypatch) -> None:
    requests: list[int] = []

    def serve(creds, endpoint, method, params):
        runs = [value for name, value in params if name == "run_id"]
        requests.append(len(runs))
        points = [{"run_id": r, "key": "acc", "step": s, "value": 0.1 * s, "timestamp": s}
                  for r in runs for s in range(300)]
        return _Response(200, {"metrics": points[:read.BULK_HISTORY_POINTS]})

    monkeypatch.setattr(read, "http_request", serve)
    run_ids = [f"r{i}" for i in range(150)]
    points = read.metric_histories(_client(300), run_ids, ["acc"])
    # 100 runs x 300 points fill a response: asked again as 50 + 50; the rest fits.
    assert sorted(requests) == [50, 50, 50, 100]
    assert len(points) == 150 * 300
    assert {p.run_id for p in points} == set(run_ids)
    assert points[1] == read.HistoryPoint(points[1].run_id, "acc", 1, pytest.approx(0.1), 1)


def test_server_refusing_the_endpoint_is_read_run_by_run(monkeypatch) -> None:
    monkeypatch.setattr(read, "http_request",
                        lambda *args, **kwargs: _Response(404, {"error_code": "NOT_FOUND",
                                                                 "message": "no such"}))
    points = read.metric_histories(_client(3), ["a", "b"], ["acc"])
    assert [(p.run_id, p.step) for p in points] == [("a", 0), ("a", 1), ("a", 2), ("b", 0),
                                                    ("b", 1), ("b", 2)]


def test_the_runs_of_a_study_whose_database_is_gone_are_an_input_error(tmp_path) -> None:
    """A study's recorded SQLite store that has since gone is not replaced by an empty one
    (``confirm`` and ``sweep --around best`` then said the study had no trials)."""
    gone = tmp_path / "mlflow.db"
    with pytest.raises(TrackingError, match=r"^tracking\.tracking_uri: no MLflow database at "):
        read.child_runs(f"sqlite:///{gone}", "1", "0" * 32)
    assert list(tmp_path.iterdir()) == []


def test_a_file_that_is_not_a_database_is_an_input_error(tmp_path) -> None:
    text = tmp_path / "notdb.db"
    text.write_text("not a database\n")
    with pytest.raises(TrackingError) as info:
        read.open_store(f"sqlite:///{text}")
    assert str(info.value) == f"--tracking-uri: {str(text)!r} is not an MLflow SQLite database"
    with pytest.raises(TrackingError, match=r"^tracking\.tracking_uri: .* is not an MLflow"):
        is_deleted_experiment(f"sqlite:///{text}", "any")
    assert text.read_text() == "not a database\n"


def _failing_store(error: BaseException) -> SimpleNamespace:
    """A client whose artifact store fails with ``error``: its listing raises it, and its
    download reports it as a missing artifact, as MLflow's ``runs:/`` download does."""
    def fail(*args):
        raise error

    def download(*args):
        raise MlflowException(f"failed to download: {error}",
                              error_code=RESOURCE_DOES_NOT_EXIST)

    return SimpleNamespace(list_artifacts=fail, download_artifacts=download)


def _parent(run_id: str = "r") -> SimpleNamespace:
    return SimpleNamespace(info=SimpleNamespace(run_id=run_id, start_time=0))


def test_a_missing_artifact_is_absent_and_a_present_one_is_read(tmp_path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client, experiment_id = create_experiment(uri, "e")  # artifacts beside the store
    run = client.create_run(experiment_id).info.run_id
    client.log_dict(run, {"simclr": {"params": {"lr": {"scale": "log"}}}},
                    "search_spaces.json")
    client.log_text(run, "{}", "protocols/table.json")
    assert read.recorded_spaces(client, [_parent(run)]) == {"simclr": {"lr": {"scale": "log"}}}
    assert read.read_artifact(uri, run, "protocols/table.json") == b"{}"
    assert read.read_artifact(uri, run, "protocols/other.json") is None
    assert read.read_artifact(uri, run, "report.json") is None
    other = client.create_run(client.get_experiment_by_name("e").experiment_id).info.run_id
    assert read.recorded_spaces(client, [_parent(other)]) == {}


@pytest.mark.parametrize("error", [
    MlflowException("artifact store unreachable", error_code=INTERNAL_ERROR),
    PermissionError("search_spaces.json"),
], ids=["mlflow", "os"])
def test_an_artifact_store_that_fails_is_an_error(error: BaseException, monkeypatch) -> None:
    """Only a missing artifact means "none recorded": a store that fails is reported, not
    read as a study without search spaces or a report without a file."""
    with pytest.raises(type(error)):
        read.recorded_spaces(_failing_store(error), [_parent()])
    monkeypatch.setattr(read, "open_store", lambda uri: _failing_store(error))
    with pytest.raises(type(error)):
        read.read_artifact("sqlite:///x.db", "r", "report.json")
