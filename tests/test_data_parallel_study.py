"""Data-parallel trials as a user runs them: ``sslstudy search`` starts its own Ray on
this 2-core machine and every trial runs 2 workers of 1 CPU each. The trial's
coordinator and Ray Train's controller hold no CPU, so the workers get both."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import (
    child_runs,
    metric_steps,
    trial_process_ids,
    wait_for,
    write_study_config,
)

pytestmark = pytest.mark.slow

SMALL = {"batch_size": {"choices": [32, 64]}}


def _train_checkpoints(tmp: Path) -> int:
    """How many checkpoints Ray Train has registered for the trial (its persisted
    checkpoint manager, what a new attempt resumes from)."""
    snapshots = list((tmp / "ray" / "ddp" / "moco" / "train_runs").glob(
        "*/checkpoint_manager_snapshot.json"))
    if not snapshots:
        return 0
    try:
        return len(json.loads(snapshots[0].read_text())["checkpoint_results"])
    except json.JSONDecodeError:  # caught mid-write
        return 0


def test_two_workers_run_on_two_cores_and_a_killed_coordinator_is_retried(
    tmp_path: Path,
) -> None:
    # MoCo: its keys are shuffled across the workers (shuffle BN), the most the
    # data-parallel path does. The trial's coordinator (the Tune trial process, which
    # owns Ray Train's controller and, through it, the workers) is killed once Train has
    # registered a checkpoint: Tune retries the trial, which reopens its MLflow run, and
    # Train resumes from that checkpoint.
    config = write_study_config(
        tmp_path, "ddp", {"moco": {"space": {**SMALL, "queue_size": 64}}},
        resources={"workers_per_trial": 2, "cpus_per_worker": 1},
        train={"epochs": 4},
        search={"num_samples": 1, "grace_period": 4, "max_failures": 1},
    )
    log = tmp_path / "search.log"
    with log.open("w") as output:
        driver = subprocess.Popen([sys.executable, "-m", "study.cli", "search", str(config)],
                                  stdout=output, stderr=subprocess.STDOUT, cwd=tmp_path)
        try:
            wait_for(lambda: driver.poll() is not None or _train_checkpoints(tmp_path) >= 1,
                     300, "a Train checkpoint")
            assert driver.poll() is None, log.read_text()[-3000:]
            coordinators = trial_process_ids(driver.pid)  # the study's own Ray
            assert coordinators, "no trial process found"
            for pid in coordinators:
                os.kill(pid, signal.SIGKILL)
            assert driver.wait(timeout=300) == 0, log.read_text()[-3000:]
        finally:
            if driver.poll() is None:
                driver.kill()
                driver.wait()
    assert "infeasible" not in log.read_text()
    (run,) = child_runs(tmp_path, "ddp")
    assert run.data.tags["method"] == "moco"
    assert run.data.tags["status"] == "completed", run.data.tags.get("failure_reason")
    steps = metric_steps(tmp_path, run.info.run_id, "val_knn_acc")
    # Epochs after the registered checkpoint may be trained (and logged) again, epoch 1
    # not: the retry continued from the checkpoint instead of starting over.
    assert set(steps) == {1, 2, 3, 4} and steps.count(1) == 1, steps
    # Tune recorded the killed attempt: the trial was retried, not finished before the kill.
    assert list((tmp_path / "ray" / "ddp" / "methods").glob("method_trial_*/error.txt"))
    assert "linear_acc" in run.data.metrics
