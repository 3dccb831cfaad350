"""A study's fit driven through Ray Client (``--address ray://``): Tune's own client mode
ships the Tuner's parts to the cluster one by one, which split the scheduler from the
callback that saves its rungs; the study runs the whole fit as one task there instead,
which Ctrl-C in the client cancels."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import ray
from ray import tune
from ray.cluster_utils import Cluster
from ray.tune.schedulers import FIFOScheduler

from study.config import parse_config
from study.errors import StudyInterrupted
from study.tuner import fit_tuner

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def client_address():
    """A 2-CPU Ray with a Ray Client server, connected to as a remote user is: with the
    cluster's token where Ray requires one."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    cluster = Cluster()
    try:
        cluster.add_node(num_cpus=2, ray_client_server_port=port)
        token = subprocess.run([sys.executable, "-m", "ray.scripts.scripts", "get-auth-token"],
                               capture_output=True, text=True).stdout.strip().splitlines()
        with pytest.MonkeyPatch.context() as env:
            if token:
                env.setenv("RAY_AUTH_MODE", "token")
                env.setenv("RAY_AUTH_TOKEN", token[-1])
            _connect(f"ray://127.0.0.1:{port}")
            try:
                yield
            finally:
                ray.shutdown()
    finally:
        cluster.shutdown()


def _connect(address: str, attempts: int = 3) -> None:
    """Connect as a Ray Client, again when Ray's proxy loses the server it starts for the
    client: the process it forks can die at once (gRPC busy in the proxy; seen once in
    five suites on 2 loaded cores), and a new connection gets a new one. A failed
    connection leaves this process in client mode, which breaks the next module's local
    Ray: ``ray.shutdown()`` leaves it."""
    for attempt in range(1, attempts + 1):
        try:
            ray.init(address, logging_level="WARNING")
            return
        except ConnectionError:
            ray.shutdown()
            if attempt == attempts:
                raise


def test_the_fit_keeps_its_callbacks_and_scheduler_one_object(client_address,
                                                              tmp_path: Path) -> None:
    # Defined here, so that the cluster gets them by value: it cannot import this file.
    class CountingScheduler(FIFOScheduler):
        """Counts the results the trials report to it."""

        def __init__(self) -> None:
            super().__init__()
            self.results = 0

        def on_trial_result(self, tune_controller, trial, result: dict) -> str:
            self.results += 1
            return super().on_trial_result(tune_controller, trial, result)


    class WhatTheSchedulerSaw(tune.Callback):
        """Writes, at the end, how many results its scheduler counted: as KeepSchedulerState
        holds the study's scheduler."""

        def __init__(self, scheduler: CountingScheduler, out: Path) -> None:
            self.scheduler, self.out = scheduler, out

        def on_experiment_end(self, trials: list, **info) -> None:
            self.out.write_text(str(self.scheduler.results))


    def _report_three(config: dict) -> None:
        for epoch in range(1, 4):
            tune.report({"epoch": epoch, "acc": config["x"]})

    config = parse_config({"name": "client", "storage_path": str(tmp_path),
                           "methods": {"simclr": {}}})
    seen = tmp_path / "seen"

    def new_tuner() -> tune.Tuner:
        scheduler = CountingScheduler()
        return tune.Tuner(
            _report_three,
            param_space={"x": tune.grid_search([0.1, 0.2])},
            tune_config=tune.TuneConfig(scheduler=scheduler, metric="acc", mode="max"),
            run_config=tune.RunConfig(name="client", storage_path=str(tmp_path / "client"),
                                      callbacks=[WhatTheSchedulerSaw(scheduler, seen)],
                                      verbose=0),
        )

    results = fit_tuner(config, "client", _report_three, new_tuner, resume=False, trials=2)
    assert sorted(r.metrics["epoch"] for r in results) == [3, 3]
    assert seen.read_text() == "6", "the callback held a copy of the scheduler"


def test_ctrl_c_cancels_the_cluster_side_fit_and_leaves_it_resumable(client_address,
                                                                     tmp_path: Path) -> None:
    """Ctrl-C in the client (here a SIGINT while the fit runs on the cluster) cancels the
    fit task, whose Tune stops the trials: the study is interrupted, not failed, and its
    Tuner can be restored."""

    def _slow(config: dict) -> None:
        for epoch in range(1, 300):
            time.sleep(0.1)
            tune.report({"epoch": epoch})

    config = parse_config({"name": "stopped", "storage_path": str(tmp_path),
                           "methods": {"simclr": {}}})
    experiment = tmp_path / "stopped" / "stopped"

    def new_tuner() -> tune.Tuner:
        return tune.Tuner(_slow, param_space={"x": tune.grid_search([1, 2])},
                          run_config=tune.RunConfig(name="stopped",
                                                    storage_path=str(experiment.parent),
                                                    verbose=0))

    ctrl_c = threading.Timer(6, os.kill, (os.getpid(), signal.SIGINT))
    ctrl_c.start()
    try:
        with pytest.raises(StudyInterrupted, match="run the same command with --resume"):
            fit_tuner(config, "stopped", _slow, new_tuner, resume=False, trials=2)
    finally:
        ctrl_c.cancel()
    assert tune.Tuner.can_restore(str(experiment))
