"""A study on a 2-node Ray cluster on this machine, logging to a real MLflow tracking
server on a loopback port: trials land on both nodes and every run reaches the server;
then the server stops as a whole on Ctrl-C. Storage a node cannot see refuses the study
without leaving directories behind."""

from __future__ import annotations

import signal
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
import ray
import yaml
from conftest import alive, descendants, tracking_server
from mlflow.tracking import MlflowClient
from ray.cluster_utils import Cluster

from study.cli import main

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def two_nodes():
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    cluster.add_node(num_cpus=1)
    ray.init(address=cluster.address, logging_level="WARNING")
    cluster.wait_for_nodes()
    yield cluster.address
    ray.shutdown()
    cluster.shutdown()


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[str]:
    """A real tracking server, stopped at the end as a user stops it (Ctrl-C): it must
    exit cleanly, leave none of its processes (uvicorn, job runner, huey consumers)
    behind and free its port."""
    with tracking_server(tmp_path_factory.mktemp("server")) as (uri, process):
        below = descendants(process.pid)
        assert len(below) >= 2, "mlflow server runs worker processes"
        yield uri
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=30) == 0
    assert not alive(below), "the tracking server left processes behind after Ctrl-C"
    with socket.socket() as probe:
        # Connections the test made linger in TIME_WAIT; only a listener blocks this.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind(("127.0.0.1", int(uri.rsplit(":", 1)[1])))


def test_trials_land_on_both_nodes_and_log_to_the_server(
    two_nodes: str, server: str, tmp_path: Path
) -> None:
    config = {
        "name": "cluster",
        "storage_path": str(tmp_path / "shared"),
        "data": {"dataset": "shapes", "num_train": 256, "num_test": 128},
        "train": {"epochs": 2, "device": "cpu"},
        "search": {"num_samples": 4, "grace_period": 2, "n_startup_trials": 2},
        "tracking": {"tracking_uri": server, "experiment": "cluster"},
        "methods": {"simclr": {"space": {"batch_size": {"choices": [32, 64]}}}},
    }
    path = tmp_path / "cluster.yaml"
    path.write_text(yaml.safe_dump(config))
    assert main(["search", str(path), "--address", two_nodes]) == 0

    client = MlflowClient(server)
    exp = client.get_experiment_by_name("cluster")
    runs = client.search_runs([exp.experiment_id])
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(children) == 4
    assert all(r.data.tags["status"] == "completed" for r in children)
    assert len({r.data.tags["ray_node"] for r in children}) == 2, "trials ran on both nodes"
    parent = next(r for r in runs if r.data.tags.get("sslstudy.role") == "study")
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert "resolved_config.yaml" in artifacts, "artifacts are proxied by the server"


def test_storage_that_a_node_cannot_see_refuses_the_study_and_leaves_no_directories(
    two_nodes: str, tmp_path: Path, monkeypatch, capsys
) -> None:
    """The check of shared storage runs once Ray is reached, after the study directory
    (and any missing parents) was made for its marker; refused, the study leaves the file
    system as it found it. The check itself is replaced: on one machine every node sees
    every path."""
    from study import launch
    from study.errors import ConfigError

    def blind(root: Path) -> None:
        raise ConfigError(f"storage_path: {str(root.parent)!r} is not visible from node(s) x")

    monkeypatch.setattr(launch, "check_shared_storage", blind)
    config = {
        "name": "cluster",
        "storage_path": str(tmp_path / "new" / "deeper"),
        "data": {"dataset": "shapes", "num_train": 256, "num_test": 128},
        "train": {"epochs": 1, "device": "cpu"},
        "search": {"num_samples": 1},
        "tracking": {"tracking_uri": f"sqlite:///{tmp_path / 'runs' / 'mlflow.db'}"},
        "methods": {"simclr": {}},
    }
    path = tmp_path / "cluster.yaml"
    path.write_text(yaml.safe_dump(config))
    assert main(["search", str(path), "--address", two_nodes]) == 2
    assert "is not visible from node(s)" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cluster.yaml"]
