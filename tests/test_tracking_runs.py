"""Writing runs: a dataset input that two trials log at the same moment."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import RESOURCE_ALREADY_EXISTS
from mlflow.tracking import MlflowClient

from tracking.runs import TrackingTarget, TrialRun, get_or_create_experiment


def _trial(tmp_path: Path) -> TrialRun:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    experiment_id = MlflowClient(uri).create_experiment("races")
    return TrialRun.create(TrackingTarget(uri, experiment_id), name="t", tags={}, params={})


def test_a_dataset_another_run_is_inserting_is_linked_on_a_second_try(
    tmp_path: Path, monkeypatch
) -> None:
    """MLflow's SQL store inserts a dataset it did not find; the run that loses the race
    fails the unique constraint, and its retry links the row the other run wrote."""
    run = _trial(tmp_path)
    calls = []
    real = MlflowClient.log_inputs

    def racing(self, run_id, datasets=None, models=None):
        calls.append(run_id)
        if len(calls) == 1:
            raise MlflowException("(sqlite3.IntegrityError) UNIQUE constraint failed: "
                                  "datasets.experiment_id, datasets.name, datasets.digest")
        return real(self, run_id, datasets=datasets, models=models)

    monkeypatch.setattr(MlflowClient, "log_inputs", racing)
    run.log_dataset("shapes", "0123456789abcdef", {"seed": 0}, {"train_images": 10})
    assert len(calls) == 2
    (logged,) = run.client.get_run(run.run_id).inputs.dataset_inputs
    assert logged.dataset.name == "shapes"


def test_any_other_dataset_error_propagates(tmp_path: Path, monkeypatch) -> None:
    run = _trial(tmp_path)

    def broken(self, run_id, datasets=None, models=None):
        raise MlflowException("the tracking server is gone")

    monkeypatch.setattr(MlflowClient, "log_inputs", broken)
    with pytest.raises(MlflowException, match="server is gone"):
        run.log_dataset("shapes", "0123456789abcdef", {}, {})


def test_a_resumed_run_gets_the_params_a_killed_attempt_never_logged(tmp_path: Path) -> None:
    """A driver killed between creating a trial's run and logging its params leaves a run
    without them; the resumed trial logs them, and resuming again changes nothing."""
    killed = _trial(tmp_path)
    target = TrackingTarget(killed.client.tracking_uri,
                            killed.client.get_run(killed.run_id).info.experiment_id)
    params = {"temperature": 0.1, "seed": 0}
    for _ in range(2):
        resumed = TrialRun.resume(target, killed.run_id, params)
        assert resumed.client.get_run(killed.run_id).data.params == {
            "temperature": "0.1", "seed": "0"}


def test_two_studies_starting_at_once_share_a_new_store(tmp_path: Path) -> None:
    """Two processes open one new SQLite store at the same instant (two studies started
    together): each would run MLflow's schema migrations, and one fail; serialised, both
    get the one experiment."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    go = tmp_path / "go"
    code = ("import os, sys, time\n"
            "from tracking.runs import get_or_create_experiment\n"
            "print('ready', flush=True)\n"
            "while not os.path.exists(sys.argv[2]): time.sleep(0.001)\n"
            "print(get_or_create_experiment(sys.argv[1], 'together'))\n")
    processes = [subprocess.Popen([sys.executable, "-c", code, uri, str(go)],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for _ in range(2)]
    for process in processes:
        assert process.stdout.readline().strip() == "ready"
    go.touch()
    results = [p.communicate(timeout=120) for p in processes]
    for process, (_, err) in zip(processes, results, strict=True):
        assert process.returncode == 0, err[-2000:]
    assert len({out.strip() for out, _ in results}) == 1


def test_an_experiment_another_study_created_in_between_is_read_back(
    tmp_path: Path, monkeypatch
) -> None:
    """Against a tracking server, which the lock does not cover, the second of two studies
    creating one experiment is told it exists: it reads it back instead of failing."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    real = MlflowClient.create_experiment

    def beaten(self, name, artifact_location=None, tags=None):
        real(self, name, artifact_location=artifact_location)
        raise MlflowException(f"Experiment '{name}' already exists.",
                              error_code=RESOURCE_ALREADY_EXISTS)

    monkeypatch.setattr(MlflowClient, "create_experiment", beaten)
    experiment_id = get_or_create_experiment(uri, "raced")
    assert MlflowClient(uri).get_experiment(experiment_id).name == "raced"


def test_the_study_run_records_what_the_analysis_reads_of_the_search(tmp_path: Path) -> None:
    """The analysis tells how a study's trials were chosen from these params of its run."""
    from study.config import config_as_dict, load_config
    from tracking import schema
    from tracking.runs import start_study_run

    root = Path(__file__).resolve().parents[1]
    config = load_config(root / "configs" / "cluster.yaml")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    target = start_study_run(uri, "recorded", "recorded", config_as_dict(config), {},
                             ("val_knn_acc", "max"))
    params = MlflowClient(uri).get_run(target.parent_run_id).data.params
    assert params[schema.STUDY_PARAM_SAMPLER] == "qmc"
    assert params[schema.STUDY_PARAM_SAMPLES] == "33"
    assert params[schema.STUDY_PARAM_STARTUP] == "4"
