"""``sslstudy export``: a run's encoder logged as an MLflow model comes back from the Model
Registry with the same features; a study in DeepCAVE's run format reads back (with
ConfigSpace, the library DeepCAVE reads its spaces with, and with DeepCAVE's own loader
where DeepCAVE installs); bad input is one line, exit 2, nothing written.

Runs are planted (no training): an untrained encoder is as good a test of the format as
a trained one. The real study's model is checked against its checkpoint in
test_study.py."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import mlflow
import pytest
import torch
from conftest import make_method
from mlflow.tracking import MlflowClient
from planted import Trial, create_experiment, write_study

from study.cli import main
from tracking import schema
from tracking.read import best_trial_runs
from tracking.runs import TrackingTarget, TrialRun
from trainables.recording import log_encoder

SPACES = {
    "simclr": {"params": {
        "temperature": {"type": "float", "low": 0.05, "high": 1.0, "scale": "log"},
        "batch_size": {"type": "categorical", "choices": [32, 64]},
    }, "fixed": {}},
    "moco": {"params": {
        "momentum": {"type": "float", "low": 0.9, "high": 0.999, "scale": "log1m"},
        "queue_size": {"type": "int", "low": 64, "high": 256, "step": 64},
    }, "fixed": {}},
}


def _trials() -> list[Trial]:
    curve = {1: 0.3, 2: 0.4, 3: 0.5}
    return [
        Trial("simclr", {"temperature": 0.1, "batch_size": 32, "seed": 0},
              {"val_knn_acc": curve}, max_budget=3),
        Trial("simclr", {"temperature": 0.5, "batch_size": 64, "seed": 0},
              {"val_knn_acc": {1: 0.2}}, schema.STOPPED_EARLY, max_budget=3),
        Trial("simclr", {"temperature": 0.9, "batch_size": 64, "seed": 0}, {},
              schema.FAILED, max_budget=3, reason="NonFiniteLossError: loss became nan"),
        Trial("moco", {"momentum": 0.99, "queue_size": 128, "seed": 0},
              {"val_knn_acc": {1: 0.25, 2: 0.35, 3: 0.45}}, max_budget=3),
        Trial("moco", {"momentum": 0.99, "queue_size": 128, "seed": 1},
              {"val_knn_acc": {1: 0.2, 2: 0.3, 3: 0.42}}, max_budget=3),
    ]


@pytest.fixture
def study(tmp_path: Path) -> str:
    """A planted cross-method study (every trial a child of one parent recording the
    spaces, the objective and that it searched across methods)."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client, experiment_id = create_experiment(uri, "planted")
    write_study(client, experiment_id, _trials(), SPACES, ("val_knn_acc", "max"))
    (parent,) = [r for r in client.search_runs([experiment_id])
                 if r.data.tags.get(schema.TAG_ROLE) == schema.ROLE_STUDY]
    client.log_param(parent.info.run_id, "search.cross_method", "True")
    return uri


def _run(client: MlflowClient, name: str):
    experiment = client.get_experiment_by_name("planted")
    (run,) = client.search_runs([experiment.experiment_id],
                                filter_string=f"attributes.run_name = '{name}'")
    return run


def test_a_registered_encoder_gives_the_trial_s_features(study: str, tiny_shapes,
                                                         caplog) -> None:
    client = MlflowClient(study)
    run = _run(client, "simclr-0")
    method = make_method("simclr", tiny_shapes)
    encoder = method.representation(None)
    target = TrackingTarget(study, run.info.experiment_id)
    log_encoder(TrialRun.attach(target, run.info.run_id), encoder, tiny_shapes, None, 3)

    caplog.set_level(logging.INFO, logger="sslstudy")
    assert main(["export", "--experiment", "planted", "--tracking-uri", study,
                 "--method", "simclr", "--register", "planted-simclr"]) == 0
    assert "models:/planted-simclr/1" in caplog.text
    mlflow.set_tracking_uri(study)
    try:
        loaded = mlflow.pytorch.load_model("models:/planted-simclr/1")
    finally:
        mlflow.set_tracking_uri(None)
    images = tiny_shapes.test_images[:16].float().div(255.0)
    with torch.no_grad():
        expected = encoder.eval()(images)
    assert torch.allclose(loaded(images), expected, atol=1e-5)
    version = client.get_model_version("planted-simclr", "1")
    assert version.run_id == run.info.run_id
    (model_output,) = client.get_run(run.info.run_id).outputs.model_outputs
    model = client.get_logged_model(model_output.model_id)
    assert model.name == schema.MODEL_NAME and model.params["temperature"] == "0.1"
    assert model.tags[schema.MODEL_TAG_FEATURE_DIM] == str(expected.shape[1])


def test_deepcave_runs_read_back(study: str, tmp_path: Path) -> None:
    out = tmp_path / "deepcave"
    assert main(["export", "--experiment", "planted", "--tracking-uri", study,
                 "--format", "deepcave", "--out", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["cross_method", "moco", "simclr"]
    simclr = out / "simclr"
    assert sorted(p.name for p in simclr.iterdir()) == sorted(
        ["configspace.json", "configs.json", "origins.json", "meta.json", "history.jsonl"])
    space = json.loads((simclr / "configspace.json").read_text())
    temperature = next(h for h in space["hyperparameters"] if h["name"] == "temperature")
    assert temperature["type"] == "uniform_float" and temperature["log"] is True
    meta = json.loads((simclr / "meta.json").read_text())
    assert meta["objectives"][0] == {"name": "val_knn_acc", "lower": 0, "upper": 1,
                                     "lock_lower": True, "lock_upper": True,
                                     "optimize": "upper"}
    assert meta["budgets"] == [1, 2, 3] and meta["seeds"] == [0]
    history = [json.loads(line) for line in (simclr / "history.jsonl").read_text().splitlines()]
    # Every evaluation of every trial, and the failure after the last one it logged.
    assert len(history) == 3 + 1 + 1
    assert all(len(line) == 8 for line in history), "the fields of DeepCAVE's example runs"
    statuses = [line[6] for line in history]
    assert statuses.count(1) == 4 and statuses.count(4) == 1
    crashed = next(line for line in history if line[6] == 4)
    assert crashed[3][0] is None and "NonFiniteLossError" in crashed[7]["traceback"]
    configs = json.loads((simclr / "configs.json").read_text())
    assert configs["0"] == {"temperature": 0.1, "batch_size": 32}
    moco = json.loads((out / "moco" / "configspace.json").read_text())
    names = {h["name"]: h for h in moco["hyperparameters"]}
    assert names["one_minus_momentum"]["log"] is True
    assert names["queue_size"]["type"] == "ordinal"
    assert names["queue_size"]["sequence"] == [64, 128, 192, 256]
    moco_meta = json.loads((out / "moco" / "meta.json").read_text())
    assert moco_meta["seeds"] == [0, 1], "replicates keep their seeds"
    assert len(json.loads((out / "moco" / "configs.json").read_text())) == 1
    cross = json.loads((out / "cross_method" / "configspace.json").read_text())
    assert {c["child"] for c in cross["conditions"]} == {
        "simclr.temperature", "simclr.batch_size", "moco.one_minus_momentum",
        "moco.queue_size"}
    assert all(c["parent"] == "method" and c["type"] == "EQ" for c in cross["conditions"])


def test_deepcave_spaces_read_with_configspace(study: str, tmp_path: Path) -> None:
    configspace = pytest.importorskip("ConfigSpace")
    out = tmp_path / "deepcave"
    assert main(["export", "--experiment", "planted", "--tracking-uri", study,
                 "--format", "deepcave", "--out", str(out)]) == 0
    for run in ("simclr", "moco", "cross_method"):
        space = configspace.ConfigurationSpace.from_json(out / run / "configspace.json")
        for config in json.loads((out / run / "configs.json").read_text()).values():
            configspace.Configuration(space, values=config).check_valid_configuration()
    cross = configspace.ConfigurationSpace.from_json(out / "cross_method" / "configspace.json")
    assert cross.get_parents_of("moco.queue_size")[0].name == "method"


def test_deepcave_loads_the_runs(study: str, tmp_path: Path) -> None:
    runs = pytest.importorskip("deepcave.runs.converters.deepcave")
    out = tmp_path / "deepcave"
    assert main(["export", "--experiment", "planted", "--tracking-uri", study,
                 "--format", "deepcave", "--out", str(out)]) == 0
    run = runs.DeepCAVERun.from_path(out / "simclr")
    assert len(run.history) == 5 and run.get_budgets() == [1, 2, 3]


def _snapshot(directory: Path) -> set[Path]:
    return {p.relative_to(directory) for p in directory.rglob("*")}


@pytest.mark.parametrize("args,message", [
    (["--method", "byol"], "--method: no runs of 'byol' in 'planted'; found: moco, simclr"),
    (["--method", "simclr"], "--experiment: no run of simclr in 'planted' finished the full "
                             "budget with val_knn_acc and a logged encoder"),
    (["--method", "simclr", "--register", "a/b"], "--register: MLflow rejects 'a/b'"),
    (["--format", "deepcave", "--out", "{full}"], "--out: '{full}' exists and is not an "
                                                  "empty directory"),
    (["--format", "deepcave"], "--out: required with --format deepcave"),
    (["--format", "deepcave", "--out", "/proc/sslstudy/deepcave"],
     "--out: cannot create directories in '/proc'"),
    ([], "--method: required to export a model"),
    (["--format", "deepcave", "--out", "x", "--register", "m"], "--register: only with"),
])
def test_bad_export_is_one_line_exit_2_and_writes_nothing(
    study: str, tmp_path: Path, args: list[str], message: str, tiny_shapes, capsys,
) -> None:
    full = tmp_path / "full"
    full.mkdir()
    (full / "keep.txt").write_text("")
    if "a/b" in args:
        # A run with a model, so that only the name is wrong.
        run = _run(MlflowClient(study), "simclr-0")
        log_encoder(TrialRun.attach(TrackingTarget(study, run.info.experiment_id),
                                    run.info.run_id),
                    make_method("simclr", tiny_shapes).representation(None), tiny_shapes,
                    None, 3)
    client = MlflowClient(study)
    models_before = len(client.search_registered_models())
    before = _snapshot(tmp_path)
    args = [a.replace("{full}", str(full)) for a in args]
    code = main(["export", "--experiment", "planted", "--tracking-uri", study, *args])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("sslstudy: error: "), err
    assert message.replace("{full}", str(full)) in err
    assert _snapshot(tmp_path) == before
    assert len(client.search_registered_models()) == models_before


def test_export_of_an_experiment_without_finished_runs(tmp_path: Path, capsys) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client, experiment_id = create_experiment(uri, "empty")
    write_study(client, experiment_id, [Trial("simclr", {"temperature": 0.1}, {},
                                              schema.FAILED, max_budget=3)], SPACES)
    before = _snapshot(tmp_path)
    for args in (["--method", "simclr"], ["--format", "deepcave", "--out",
                                          str(tmp_path / "dc")]):
        assert main(["export", "--experiment", "empty", "--tracking-uri", uri, *args]) == 2
        assert "nothing to export" in capsys.readouterr().err
    assert _snapshot(tmp_path) == before



def test_the_best_run_is_one_that_trained_as_long_as_the_longest(tmp_path: Path) -> None:
    """A completed run of fewer epochs (``sslstudy train --epochs 1`` into the same
    experiment) is not comparable with the study's full-budget runs, however high."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client, experiment_id = create_experiment(uri, "mixed")
    short = Trial("simclr", {"temperature": 0.3, "batch_size": 32, "seed": 0},
                  {"val_knn_acc": {1: 0.9}}, max_budget=1)
    write_study(client, experiment_id, [*_trials(), short], SPACES, ("val_knn_acc", "max"))
    best = best_trial_runs(client.search_runs([experiment_id]), "val_knn_acc", "max")
    assert best["simclr"].data.metrics["val_knn_acc"] == 0.5
    assert best["moco"].data.metrics["val_knn_acc"] == 0.45
