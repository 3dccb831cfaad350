"""A study on a 2-node Ray cluster on this machine, logging to a real MLflow tracking
server on a loopback port: trials land on both nodes and every run reaches the server."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import ray
import yaml
from mlflow.tracking import MlflowClient
from ray.cluster_utils import Cluster

from study.cli import main

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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
def tracking_server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("server")
    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "study.cli", "tracking-server", "--port", str(port),
         "--backend-store-uri", f"sqlite:///{tmp / 'server.db'}",
         "--artifacts-destination", str(tmp / "artifacts")],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    uri = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        try:
            with urllib.request.urlopen(uri + "/health", timeout=2) as response:
                if response.status == 200:
                    break
        except OSError:
            pass
        if time.monotonic() > deadline or server.poll() is not None:
            server.kill()
            raise AssertionError("the tracking server did not start")
        time.sleep(0.5)
    yield uri
    server.terminate()
    server.wait(timeout=30)


def test_trials_land_on_both_nodes_and_log_to_the_server(
    two_nodes: str, tracking_server: str, tmp_path: Path
) -> None:
    config = {
        "name": "cluster",
        "storage_path": str(tmp_path / "shared"),
        "data": {"dataset": "shapes", "num_train": 256, "num_test": 128},
        "train": {"epochs": 2, "device": "cpu"},
        "search": {"num_samples": 4, "grace_period": 2, "n_startup_trials": 2},
        "tracking": {"tracking_uri": tracking_server, "experiment": "cluster"},
        "methods": {"simclr": {"space": {"batch_size": {"choices": [32, 64]}}}},
    }
    path = tmp_path / "cluster.yaml"
    path.write_text(yaml.safe_dump(config))
    assert main(["search", str(path), "--address", two_nodes]) == 0

    client = MlflowClient(tracking_server)
    exp = client.get_experiment_by_name("cluster")
    runs = client.search_runs([exp.experiment_id])
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(children) == 4
    assert all(r.data.tags["status"] == "completed" for r in children)
    assert len({r.data.tags["ray_node"] for r in children}) == 2, "trials ran on both nodes"
    parent = next(r for r in runs if r.data.tags.get("sslstudy.role") == "study")
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert "resolved_config.yaml" in artifacts, "artifacts are proxied by the server"
