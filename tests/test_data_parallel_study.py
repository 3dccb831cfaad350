"""Data-parallel trials as a user runs them: ``sslstudy search`` starts its own Ray on
this 2-core machine and every trial runs 2 workers of 1 CPU each. The trial's
coordinator and Ray Train's controller hold no CPU, so the workers get both."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from conftest import write_study_config
from mlflow.tracking import MlflowClient

pytestmark = pytest.mark.slow

SMALL = {"batch_size": {"choices": [32, 64]}}


def test_two_workers_of_one_cpu_each_run_on_two_cores(tmp_path: Path) -> None:
    # MoCo: its keys are shuffled across the workers (shuffle BN), the most the
    # data-parallel path does.
    config = write_study_config(
        tmp_path, "ddp", {"moco": {"space": {**SMALL, "queue_size": 64}}},
        resources={"workers_per_trial": 2, "cpus_per_worker": 1},
        train={"epochs": 2}, search={"num_samples": 1, "grace_period": 2},
    )
    done = subprocess.run(
        [sys.executable, "-m", "study.cli", "search", str(config)],
        capture_output=True, text=True, cwd=tmp_path, timeout=540, check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "infeasible" not in done.stderr
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("ddp")
    runs = [r for r in client.search_runs([experiment.experiment_id])
            if "mlflow.parentRunId" in r.data.tags]
    assert [r.data.tags["method"] for r in runs] == ["moco"]
    for run in runs:
        assert run.data.tags["status"] == "completed", run.data.tags.get("failure_reason")
        steps = [m.step for m in client.get_metric_history(run.info.run_id, "val_knn_acc")]
        assert steps == [1, 2]
        assert "linear_acc" in run.data.metrics
