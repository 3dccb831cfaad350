"""Studies that survive faults, on a 2-CPU local Ray: a driver killed with SIGKILL and
resumed, a study stopped with Ctrl-C and resumed, a trial process killed and retried from
its checkpoint."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import optuna
import pytest
import ray
from conftest import (
    child_runs,
    metric_steps,
    trial_process_ids,
    wait_for,
    write_study_config,
)
from mlflow.tracking import MlflowClient
from ray import tune

from study.cli import main
from study.config import parse_config
from study.tuner import fit_tuner

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cluster_address():
    ray.init(address="local", include_dashboard=False, num_cpus=2, logging_level="WARNING")
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


SMALL = {"batch_size": {"choices": [32, 64]}}


def test_driver_killed_with_sigkill_resumes_without_losing_or_repeating(
    cluster_address, tmp_path: Path
) -> None:
    # Two methods' searches in one Tuner: the resumed searcher must go on with each.
    config = write_study_config(tmp_path, "resume",
                                {"simclr": {"space": SMALL}, "moco": {"space": SMALL}},
                                search={"num_samples": 2}, train={"epochs": 4})
    command = [sys.executable, "-m", "study.cli", "search", str(config),
               "--address", cluster_address, "--max-concurrent", "2"]
    driver = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(
            lambda: any(r.data.tags.get("status") == "completed"
                        for r in child_runs(tmp_path, "resume")),
            240, "a first completed trial",
        )
    finally:
        driver.send_signal(signal.SIGKILL)
        driver.wait()
    before = {r.data.tags["trial_id"]: r.data.metrics.get("val_knn_acc")
              for r in child_runs(tmp_path, "resume")
              if r.data.tags.get("status") == "completed"}
    assert before

    assert main(["search", str(config), "--resume", "--address", cluster_address]) == 0
    # A trial the dead driver started but never saved cannot be resumed; its run, if the
    # kill fell in that window, is closed as orphaned and is not a trial of the study.
    runs = [r for r in child_runs(tmp_path, "resume") if r.data.tags["status"] != "orphaned"]
    assert all(r.info.status != "RUNNING" for r in child_runs(tmp_path, "resume"))
    trial_ids = [r.data.tags["trial_id"] for r in runs]
    assert len(trial_ids) == len(set(trial_ids)) == 4, "one MLflow run per trial"
    for run in runs:
        assert run.data.tags["status"] in ("completed", "stopped_early")
        # An epoch the dead driver never saw checkpointed is trained, and logged, again.
        steps = set(metric_steps(tmp_path, run.info.run_id, "val_knn_acc"))
        assert steps == set(range(1, int(run.data.tags["budget"]) + 1))
    for trial_id, value in before.items():
        kept = next(r for r in runs if r.data.tags["trial_id"] == trial_id)
        assert kept.data.metrics["val_knn_acc"] == value, "finished trials are kept as they were"
    storage = f"sqlite:///{tmp_path / 'ray' / 'resume' / 'optuna.db'}"
    complete = []
    for method in ("simclr", "moco"):
        trials = optuna.load_study(study_name=f"resume-{method}", storage=storage).trials
        mine = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
        pruned = [t for t in trials if t.state == optuna.trial.TrialState.PRUNED]
        # A trial ASHA stopped is PRUNED in Optuna (which it stops depends on timing).
        assert len(mine) == sum(r.data.tags["status"] == "completed"
                                and r.data.tags["method"] == method for r in runs)
        assert len(mine) + len(pruned) == 2, method
        assert not [t for t in trials if t.state == optuna.trial.TrialState.RUNNING]
        complete += mine
    best_before = max(before.values())
    assert max(t.value for t in complete) >= best_before


def test_ctrl_c_leaves_a_study_that_resumes_with_every_trial_told_to_optuna(
    cluster_address, tmp_path: Path
) -> None:
    """Ctrl-C: Tune stops the trials and saves them; the command must not treat them as
    finished (before: exit 0, the running trials counted as stopped by ASHA, their runs
    closed as orphaned and their Optuna trials failed, so the resumed search could not
    tell Optuna their results)."""
    config = write_study_config(tmp_path, "ctrlc", {"simclr": {"space": SMALL}},
                                search={"num_samples": 2, "grace_period": 3})
    command = [sys.executable, "-m", "study.cli", "search", str(config),
               "--address", cluster_address, "--max-concurrent", "2"]
    driver = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              text=True)
    try:
        wait_for(lambda: any(int(r.data.tags.get("budget", 0)) >= 1
                             for r in child_runs(tmp_path, "ctrlc")), 240, "a first epoch")
        driver.send_signal(signal.SIGINT)
        _, err = driver.communicate(timeout=120)
    finally:
        if driver.poll() is None:
            driver.kill()
            driver.wait()
    assert driver.returncode == 130, err[-3000:]
    assert "run the same command with --resume to continue" in err.splitlines()[-1]
    # Tune's own output: its table of class names, a TensorBoard command for a temporary
    # folder, and how to restore a Tuner in Python instead of --resume.
    for theirs in ("Configuration for experiment", "TensorBoard", "Tuner.restore"):
        assert theirs not in err
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    (parent,) = [r for r in client.search_runs(
        [client.get_experiment_by_name("ctrlc").experiment_id])
        if r.data.tags.get("sslstudy.role") == "study"]
    assert parent.info.status == "KILLED" and "--resume" in parent.data.tags[
        "sslstudy.interrupted"]
    stopped = [r for r in child_runs(tmp_path, "ctrlc")
               if r.data.tags["status"] not in ("completed", "stopped_early")]
    assert stopped and all(r.data.tags["status"] == "interrupted"
                           and r.info.status == "KILLED" for r in stopped)
    storage = f"sqlite:///{tmp_path / 'ray' / 'ctrlc' / 'optuna.db'}"
    states = {t.state for t in optuna.load_study(study_name="ctrlc-simclr",
                                                 storage=storage).trials}
    assert optuna.trial.TrialState.FAIL not in states, "interrupted trials stay open"

    handler = signal.getsignal(signal.SIGINT)
    assert main(["search", str(config), "--resume", "--address", cluster_address]) == 0
    assert signal.getsignal(signal.SIGINT) is handler, "Tune's Ctrl-C handler was left"
    runs = child_runs(tmp_path, "ctrlc")
    assert len(runs) == 2 and all(r.data.tags["status"] == "completed" for r in runs)
    trials = optuna.load_study(study_name="ctrlc-simclr", storage=storage).trials
    assert [t.state for t in trials] == [optuna.trial.TrialState.COMPLETE] * 2
    parent = client.get_run(parent.info.run_id)
    assert parent.info.status == "FINISHED" and "sslstudy.interrupted" not in parent.data.tags


def test_a_second_ctrl_c_still_closes_the_runs_as_interrupted(
    cluster_address, tmp_path: Path, monkeypatch
) -> None:
    """A second Ctrl-C (Tune takes the first) leaves the fit at once, before Tune has
    said which trials were unfinished: the runs are closed as interrupted all the same."""
    import study.tuner

    def second_ctrl_c(*args, **kwargs) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(study.tuner, "run_methods", second_ctrl_c)
    config = write_study_config(tmp_path, "twice", {"simclr": {"space": SMALL}})
    assert main(["search", str(config), "--address", cluster_address]) == 130
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    (parent,) = client.search_runs([client.get_experiment_by_name("twice").experiment_id])
    assert parent.info.status == "KILLED"
    assert "--resume" in parent.data.tags["sslstudy.interrupted"]


def test_a_finished_grid_resumes_as_finished(cluster_address, tmp_path: Path) -> None:
    """Trials whose function returned come back from Tune's saved state TERMINATED, but
    their saved last result need not say done (Tune marks it in memory, after the
    snapshot that cached it): counted by that flag, a resumed sweep was interrupted on
    every resume, about every second time."""

    def _report_with_checkpoints(config: dict) -> None:
        """Three epochs with a checkpoint each, as a trial reports them; then it ends.
        Defined here, so that the workers get it by value."""
        for epoch in range(1, 4):
            with tempfile.TemporaryDirectory() as where:
                Path(where, "epoch").write_text(str(epoch))
                tune.report({"epoch": epoch}, checkpoint=tune.Checkpoint.from_directory(where))

    config = parse_config({"name": "grid", "storage_path": str(tmp_path),
                           "methods": {"simclr": {}}})

    def new_tuner() -> tune.Tuner:
        return tune.Tuner(
            _report_with_checkpoints, param_space={"x": tune.grid_search(list(range(6)))},
            tune_config=tune.TuneConfig(max_concurrent_trials=2),
            run_config=tune.RunConfig(name="runs", storage_path=str(tmp_path / "grid"),
                                      checkpoint_config=tune.CheckpointConfig(num_to_keep=2),
                                      verbose=0))

    for resume in (False, True, True):
        results = fit_tuner(config, "runs", _report_with_checkpoints, new_tuner, resume,
                            trials=6)
        assert sorted(r.metrics["epoch"] for r in results) == [3] * 6


def test_a_killed_sweep_resumes_without_duplicate_runs(cluster_address, tmp_path: Path) -> None:
    """Sweeps and confirmation runs share the grid machinery; its resume keeps one MLflow
    run per cell and seed, as a search's does."""
    config = write_study_config(tmp_path, "swp", {"simclr": {"space": SMALL}},
                                train={"epochs": 3})
    command = [sys.executable, "-m", "study.cli", "sweep", str(config), "--method", "simclr",
               "--param", "temperature", "--values", "0.1,0.3,1.0", "--seeds", "1",
               "--around", "defaults", "--address", cluster_address, "--max-concurrent", "2"]
    driver = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: any(r.data.tags.get("status") == "completed"
                             for r in child_runs(tmp_path, "swp")), 240, "a completed run")
    finally:
        driver.send_signal(signal.SIGKILL)
        driver.wait()
    assert main([*command[3:], "--resume"]) == 0
    runs = [r for r in child_runs(tmp_path, "swp") if r.data.tags["status"] != "orphaned"]
    assert all(r.info.status != "RUNNING" for r in child_runs(tmp_path, "swp"))
    trial_ids = [r.data.tags["trial_id"] for r in runs]
    assert len(trial_ids) == len(set(trial_ids)) == 3, "one MLflow run per cell and seed"
    assert sorted(r.data.params["temperature"] for r in runs) == ["0.1", "0.3", "1.0"]
    assert all(r.data.tags["status"] == "completed" for r in runs)


def test_killed_trial_process_retries_from_its_checkpoint(cluster_address, tmp_path: Path
                                                          ) -> None:
    config = write_study_config(tmp_path, "retry", {"simclr": {"space": SMALL}},
                     search={"num_samples": 1, "max_failures": 1},
                     train={"epochs": 6})
    driver = subprocess.Popen(
        [sys.executable, "-m", "study.cli", "search", str(config), "--address", cluster_address],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        wait_for(lambda: any(int(r.data.tags.get("budget", 0)) >= 2
                             for r in child_runs(tmp_path, "retry")), 240, "two epochs")
        pids = trial_process_ids(os.getpid())  # this module's Ray
        assert pids, "no trial process found"
        for pid in pids:
            os.kill(pid, signal.SIGKILL)
        assert driver.wait(timeout=300) == 0
    finally:
        if driver.poll() is None:
            driver.kill()
    (run,) = child_runs(tmp_path, "retry")
    assert run.data.tags["status"] == "completed"
    assert set(metric_steps(tmp_path, run.info.run_id, "val_knn_acc")) == {1, 2, 3, 4, 5, 6}
