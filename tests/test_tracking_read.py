"""Bulk metric histories from a tracking server: 100 runs per request, a full response
asked again in halves, and run-by-run reading when the server refuses the endpoint. The
server is faked at the HTTP call (a real one is in the analysis-speed benchmark); the
database path is checked against run-by-run reading in test_analysis_generic.py."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
from mlflow.entities import Metric
from mlflow.store.tracking.rest_store import RestStore

from tracking import read


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
