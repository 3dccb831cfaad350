"""Writing runs: a dataset input that two trials log at the same moment."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import RESOURCE_ALREADY_EXISTS
from mlflow.tracking import MlflowClient
from planted import create_experiment

from tracking.runs import TrackingTarget, TrialRun, get_or_create_experiment


def _trial(tmp_path: Path) -> TrialRun:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    experiment_id = create_experiment(uri, "races")[1]  # artifacts beside the store
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


@pytest.mark.parametrize("finished_before", [False, True])
def test_interrupted_runs_are_reopened_by_their_trials_or_closed_as_orphans(
    tmp_path: Path, finished_before: bool
) -> None:
    """Ctrl-C closes the open trial runs as interrupted and notes it on the parent run
    (KILLED, unless a finished search's confirmation was stopped); the resume reopens
    the parent, and what no resumed trial reopened ends as an orphan, not interrupted
    for ever."""
    from mlflow.entities import RunTag

    from tracking import schema
    from tracking.runs import (
        close_interrupted,
        close_orphaned_runs,
        reopen_study_run,
        start_study_run,
    )

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    target = start_study_run(uri, "stopped", "stopped", {}, {}, ("val_knn_acc", "max"))
    client = MlflowClient(uri)
    trials = [TrialRun.create(target, name=f"t{i}", tags={schema.TAG_METHOD: "simclr"},
                              params={}) for i in range(3)]
    client.log_batch(trials[0].run_id, tags=[RunTag(schema.TAG_STATUS, schema.COMPLETED)])
    client.set_terminated(trials[0].run_id, "FINISHED")
    assert close_interrupted(target, "interrupted: --resume", finished_before) == 2
    parent = client.get_run(target.parent_run_id)
    assert parent.info.status == ("FINISHED" if finished_before else "KILLED")
    assert parent.data.tags[schema.TAG_STUDY_INTERRUPTED] == "interrupted: --resume"
    for trial in trials[1:]:
        run = client.get_run(trial.run_id)
        assert (run.info.status, run.data.tags[schema.TAG_STATUS]) == ("KILLED", "interrupted")

    assert reopen_study_run(target) == parent.info.status
    parent = client.get_run(target.parent_run_id)
    assert parent.info.status == "RUNNING"
    assert schema.TAG_STUDY_INTERRUPTED not in parent.data.tags
    resumed = TrialRun.resume(target, trials[1].run_id, {})
    client.set_tag(resumed.run_id, schema.TAG_STATUS, schema.COMPLETED)
    client.set_terminated(resumed.run_id, "FINISHED")
    assert close_orphaned_runs(target, "simclr", schema.KIND_CONFIRM) == 0, "another Tuner's"
    assert close_orphaned_runs(target, "simclr", schema.KIND_SEARCH) == 1
    never_resumed = client.get_run(trials[2].run_id)
    assert never_resumed.data.tags[schema.TAG_STATUS] == schema.ORPHANED
    assert client.get_run(trials[1].run_id).data.tags[schema.TAG_STATUS] == schema.COMPLETED
