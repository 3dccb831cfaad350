"""A real tiny study end to end: Ray (local, 2 CPUs), Optuna, MLflow (SQLite), analysis."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import optuna
import pandas as pd
import pytest
import ray
import yaml
from conftest import write_study_config
from mlflow.tracking import MlflowClient

from study.cli import main
from tracking import schema

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module", autouse=True)
def ray_instance():
    ray.init(address="local", include_dashboard=False, num_cpus=2, logging_level="WARNING")
    yield
    ray.shutdown()


SMALL = {"batch_size": {"choices": [32, 64]}}
METHODS = {"simclr": {"space": SMALL}, "moco": {"space": {**SMALL, "queue_size": 128}}}
SEARCH = {"num_samples": 3, "grace_period": 1, "n_startup_trials": 2}
#: The evaluation protocols, in confirmation runs and sweeps only (cheap sizes).
EVALUATION = {"on": "confirm", "finetune": {"fractions": [0.1, 0.2], "epochs": 2},
              "pruning": {"sparsities": [0.9], "fractions": [0.1]},
              "retrieval": {"k": [1, 5]}, "embedding": {"method": "pca", "points": 64}}
PROTOCOL_PREFIXES = ("finetune_", "supervised_", "pruned", "retrieval_")


def _config(tmp: Path, name: str) -> Path:
    return write_study_config(tmp, name, METHODS, search=SEARCH, evaluation=EVALUATION)


@pytest.fixture(scope="module")
def finished_study(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("study")
    assert main(["search", str(_config(tmp, "tiny"))]) == 0
    return tmp


def _children(tmp: Path, experiment: str):
    client = MlflowClient(f"sqlite:///{tmp / 'mlflow.db'}")
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id])
    parents = [r for r in runs if r.data.tags.get("sslstudy.role") == "study"]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    return client, parents, children


def test_one_parent_run_and_one_child_per_trial(finished_study: Path) -> None:
    client, parents, children = _children(finished_study, "tiny")
    assert len(parents) == 1 and len(children) == 6
    parent = parents[0]
    assert parent.info.status == "FINISHED"
    assert all(c.data.tags["mlflow.parentRunId"] == parent.info.run_id for c in children)
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"resolved_config.yaml", "search_spaces.json", "summary.json"} <= artifacts
    spaces = json.loads(client.download_artifacts(
        parent.info.run_id, "search_spaces.json", str(finished_study)) and
        (finished_study / "search_spaces.json").read_text())
    assert spaces["moco"]["params"]["momentum"]["scale"] == "log1m"
    # MLflow's UI opens the experiment on its runs; the parent sums the study up.
    experiment = client.get_experiment(parent.info.experiment_id)
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    params, metrics, tags = parent.data.params, parent.data.metrics, parent.data.tags
    summary = json.loads(Path(client.download_artifacts(
        parent.info.run_id, "summary.json", str(finished_study))).read_text())
    assert params["train.epochs"] == "3" and params["search.num_samples"] == "3"
    # What the analysis reads to tell how the trials were chosen.
    assert params[schema.STUDY_PARAM_SAMPLER] == "tpe"
    assert params[schema.STUDY_PARAM_STARTUP] == "2"
    assert params[schema.STUDY_PARAM_SAMPLES] == "3"
    assert set(params["methods"].split(",")) == {"simclr", "moco"}
    assert tags["mlflow.source.name"] == "sslstudy search"
    for method in ("simclr", "moco"):
        assert metrics[f"{method}.trials"] == 3
        mine = [c for c in children if c.data.tags["method"] == method]
        completed = [c for c in mine if c.data.tags["status"] == "completed"]
        assert metrics[f"{method}.completed"] == len(completed)
        best = max(completed, key=lambda c: c.data.metrics["val_knn_acc"])
        assert metrics[f"{method}.best_val_knn_acc"] == best.data.metrics["val_knn_acc"]
        assert tags[f"{method}.best_run_id"] == best.info.run_id
        # The name the report and the progress lines use (its trial id), in the summary.
        assert summary["best_at_full_budget"][method]["best_run_name"] == best.info.run_name
        assert 0 < metrics[f"{method}.random_init_val_knn_acc"] < 1
        assert 1 / 8 <= metrics[f"{method}.chance_acc"] < 0.5  # 8 classes, 128 test images


def test_child_runs_carry_params_tags_and_per_epoch_metrics(finished_study: Path) -> None:
    client, _, children = _children(finished_study, "tiny")
    for run in children:
        tags, params = run.data.tags, run.data.params
        method = tags["method"]
        expected = {"temperature", "batch_size", "aug_strength", "lr", "weight_decay"}
        if method == "moco":
            expected |= {"momentum", "queue_size"}
            assert params["queue_size"] == "128"
            assert 0.9 <= float(params["momentum"]) <= 0.999
        assert expected <= set(params)
        assert tags["dataset"] == "shapes" and tags["backbone"] == "small_cnn"
        assert tags["trial_id"] and tags["study"] == "tiny"
        assert tags["status"] in ("completed", "stopped_early")
        assert run.info.status == "FINISHED"
        budget = int(tags["budget"])
        assert (tags["status"] == "completed") == (budget == 3)
        steps = [m.step for m in client.get_metric_history(run.info.run_id, "val_knn_acc")]
        assert steps == list(range(1, budget + 1))
        assert params["seed"] == "0", "shared seed: every trial with the study's"
        assert tags["run_kind"] == "search"
        assert not any(m.startswith(PROTOCOL_PREFIXES) for m in run.data.metrics), \
            "evaluation.on: confirm keeps the protocols out of search trials"
        for metric in ("loss", "epoch", "images_per_sec", "lr_schedule"):
            assert metric in run.data.metrics
        assert "lr" not in run.data.metrics, "the schedule does not shadow the param lr"
        (dataset,) = run.inputs.dataset_inputs
        assert dataset.dataset.name == "shapes" and len(dataset.dataset.digest) == 16
        assert json.loads(dataset.dataset.profile)["validation_images"] > 0
        assert tags["mlflow.source.name"] == "sslstudy search"
        # A trial that reached the full budget logged its encoder as a model.
        assert bool(run.outputs.model_outputs) == (tags["status"] == "completed")
        # Test-split scores once, at the end; never during the search.
        assert ("linear_acc" in run.data.metrics) == ("knn_acc" in run.data.metrics) == (
            budget == 3)


def test_no_test_split_metric_reaches_the_scheduler_or_optuna(finished_study: Path) -> None:
    """Tune's results (what ASHA and the searcher see) hold validation scores only, and
    every Optuna value is the trial's last validation score."""
    results = list((finished_study / "ray" / "tiny").glob("*/*/result.json"))
    assert results
    for path in results:
        for line in path.read_text().splitlines():
            reported = json.loads(line)
            assert not {"knn_acc", "linear_acc", "mlp_acc"} & set(reported), path
            assert "val_knn_acc" in reported
    _, _, children = _children(finished_study, "tiny")
    last_val = {r.data.tags["trial_id"]: r.data.metrics["val_knn_acc"] for r in children}
    storage = f"sqlite:///{finished_study / 'ray' / 'tiny' / 'optuna.db'}"
    for name in ("tiny-simclr", "tiny-moco"):
        for trial in optuna.load_study(study_name=name, storage=storage).trials:
            if trial.value is not None:
                assert trial.value == pytest.approx(last_val[trial.user_attrs["tune_trial_id"]])


def test_optuna_study_is_persisted_beside_ray_results(finished_study: Path) -> None:
    storage = f"sqlite:///{finished_study / 'ray' / 'tiny' / 'optuna.db'}"
    names = {s.study_name for s in optuna.get_all_study_summaries(storage)}
    assert names == {"tiny-simclr", "tiny-moco"}
    moco = optuna.load_study(study_name="tiny-moco", storage=storage)
    assert len(moco.trials) == 3
    assert "one_minus_momentum" in moco.trials[0].params


def test_optuna_sees_budgets_as_asha_left_them(finished_study: Path) -> None:
    """Every evaluation is an intermediate value at its epoch; a trial ASHA stopped is
    PRUNED, one that reached the full budget COMPLETE with its value there."""
    client, _, children = _children(finished_study, "tiny")
    by_trial = {r.data.tags["trial_id"]: r for r in children}
    storage = f"sqlite:///{finished_study / 'ray' / 'tiny' / 'optuna.db'}"
    states = {"completed": optuna.trial.TrialState.COMPLETE,
              "stopped_early": optuna.trial.TrialState.PRUNED}
    for method in ("simclr", "moco"):
        for trial in optuna.load_study(study_name=f"tiny-{method}", storage=storage).trials:
            run = by_trial[trial.user_attrs["tune_trial_id"]]
            history = {m.step: m.value
                       for m in client.get_metric_history(run.info.run_id, "val_knn_acc")}
            assert trial.intermediate_values == pytest.approx(history)
            assert trial.state == states[run.data.tags["status"]]
            assert trial.value == pytest.approx(history[max(history)])
            assert trial.user_attrs["mlflow_run_id"] == run.info.run_id
            assert trial.user_attrs["budget"] == int(run.data.tags["budget"])
        study = optuna.load_study(study_name=f"tiny-{method}", storage=storage)
        assert study.user_attrs["config"]["name"] == "tiny"


def test_analysis_writes_tables_plots_and_report(finished_study: Path) -> None:
    out = finished_study / "report"
    assert main(["analyze", "--experiment", "tiny", "--tracking-uri",
                 f"sqlite:///{finished_study / 'mlflow.db'}", "--out", str(out)]) == 0
    runs = pd.read_parquet(out / "runs.parquet")
    assert len(runs) == 6
    for column in ("method", "temperature", "batch_size", "momentum", "status", "budget",
                   "duration_s", "final_knn_acc", "best_knn_acc", "final_loss", "best_loss"):
        assert column in runs
    importance = pd.read_csv(out / "importance.csv")
    assert list(importance.columns) == ["method", "param", "importance", "low", "high",
                                        "null_high", "significant", "evaluator", "budget"]
    # Three trials of five searched parameters: too few to rank them (10 needed).
    assert importance.empty
    sensitivity = pd.read_csv(out / "sensitivity.csv")
    assert list(sensitivity.columns) == ["method", "param", "value", "mean", "low", "high", "n"]
    assert set(sensitivity["method"]) == {"simclr", "moco"}
    for name in ("noise.csv", "budgets.csv", "failures.csv", "effects.csv"):
        assert (out / name).is_file()
    plots = {p.name for p in (out / "plots").iterdir()}
    assert {"simclr_temperature.png", "moco_momentum.png",
            "simclr_heatmap_temperature_batch_size.png"} <= plots
    report = (out / "report.html").read_text()
    assert "simclr" in report and "moco" in report and "full budget" in report
    assert "data:image/png;base64," in report and "seed noise unknown" in report


def test_a_failing_trial_is_recorded_and_the_study_goes_on(tmp_path: Path, caplog) -> None:
    config = _config(tmp_path, "diverge")
    data = yaml.safe_load(config.read_text())
    data["methods"] = {"simclr": {"space": {"batch_size": {"choices": [32, 64]},
                                            "lr": 1.0e25}}}
    data["search"]["num_samples"] = 2
    # A diverged trial diverges again when retried; retries are test_faults' subject.
    data["search"]["max_failures"] = 0
    config.write_text(yaml.safe_dump(data))
    assert main(["search", str(config)]) == 1
    # One line per failed trial, with its reason and where its traceback is kept; not
    # Tune's traceback (before: "failed: unknown error" after Tune's 45 lines).
    failed = [r.getMessage() for r in caplog.records if " failed: " in r.getMessage()]
    assert len(failed) == 2 and all("NonFiniteLossError: loss became" in m for m in failed)
    for message in failed:
        traceback = Path(message.rsplit("(traceback: ", 1)[1].rstrip(")"))
        assert "NonFiniteLossError" in traceback.read_text()
    assert not [r for r in caplog.records if r.getMessage().startswith("Trial task failed")]
    _, parents, children = _children(tmp_path, "diverge")
    assert len(children) == 2
    for run in children:
        assert run.info.status == "FAILED"
        assert run.data.tags["status"] == "failed"
        assert "NonFiniteLossError: loss became" in run.data.tags["failure_reason"]
    assert parents[0].info.status == "FAILED"
    storage = f"sqlite:///{tmp_path / 'ray' / 'diverge' / 'optuna.db'}"
    trials = optuna.load_study(study_name="diverge-simclr", storage=storage).trials
    assert [t.state for t in trials] == [optuna.trial.TrialState.FAIL] * 2
    for trial in trials:
        assert "NonFiniteLossError: loss became" in trial.user_attrs["failure_reason"]
        assert trial.user_attrs["tune_trial_id"] in {r.data.tags["trial_id"] for r in children}
    # The report the search's last line points to: its failures (before: refused, as no
    # run logged the metric).
    out = tmp_path / "report"
    assert main(["analyze", "--experiment", "diverge", "--tracking-uri",
                 f"sqlite:///{tmp_path / 'mlflow.db'}", "--out", str(out)]) == 0
    assert list(pd.read_csv(out / "failures.csv")["failed"].unique()) == [1]
    page = (out / "report.html").read_text()
    assert "failed trials (2 of 2)" in page and "NonFiniteLossError: loss became" in page


def test_train_runs_one_configuration_as_one_run(tmp_path: Path) -> None:
    """With --epochs 1 under a config whose search section wants 3 epochs of grace: train
    checks only what one run uses."""
    config = _config(tmp_path, "single")
    assert main(["train", str(config), "--method", "simclr", "--epochs", "1",
                 "--param", "temperature=0.3", "--param", "batch_size=32"]) == 0
    _, parents, children = _children(tmp_path, "single")
    assert parents == [] and children == []
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp = client.get_experiment_by_name("single")
    (run,) = client.search_runs([exp.experiment_id])
    assert run.data.params["temperature"] == "0.3" and run.data.params["batch_size"] == "32"
    assert run.data.tags["status"] == "completed" and run.info.status == "FINISHED"
    assert [m.step for m in client.get_metric_history(run.info.run_id, "loss")] == [1]
    assert run.info.run_name.startswith("simclr-train-")
    assert run.data.tags["run_kind"] == "train"
    assert {"random_init_val_knn_acc", "random_init_knn_acc", "chance_acc"} <= set(
        run.data.metrics)
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert "resolved_config.yaml" in artifacts
    assert run.outputs.model_outputs and run.inputs.dataset_inputs


def test_the_registered_best_encoder_gives_the_trial_s_features(finished_study: Path) -> None:
    """The best simclr trial at the full budget, registered, loads with
    mlflow.pytorch.load_model and gives the features of the encoder in its last Ray
    checkpoint."""
    import mlflow
    import torch
    from conftest import make_method

    from trainables.data import DataSpec, load_dataset
    from trainables.hyperparameters import declared_hyperparameters

    uri = f"sqlite:///{finished_study / 'mlflow.db'}"
    assert main(["export", "--experiment", "tiny", "--tracking-uri", uri, "--method",
                 "simclr", "--register", "tiny-simclr"]) == 0
    client, parents, _ = _children(finished_study, "tiny")
    best = client.get_run(parents[0].data.tags["simclr.best_run_id"])
    assert client.get_model_version("tiny-simclr", "1").run_id == best.info.run_id
    mlflow.set_tracking_uri(uri)
    try:
        loaded = mlflow.pytorch.load_model("models:/tiny-simclr/1")
    finally:
        mlflow.set_tracking_uri(None)
    trial_id = best.data.tags["trial_id"]
    (trial_dir,) = [d for d in (finished_study / "ray" / "tiny" / "methods").iterdir()
                    if d.is_dir() and trial_id in d.name]
    checkpoint = sorted(trial_dir.glob("checkpoint_*"))[-1] / "state.pt"
    state = torch.load(checkpoint, weights_only=True)
    assert state["epoch"] == 3
    declared = declared_hyperparameters("simclr")
    values = {k: declared[k].parse(k, v) for k, v in best.data.params.items() if k in declared}
    dataset = load_dataset(DataSpec("shapes", num_train=256, num_test=128, seed=0))
    method = make_method("simclr", dataset, **values)
    method.load_state_dict(state["method"])
    images = dataset.test_images[:32].float().div(255.0)
    with torch.no_grad():
        expected = method.representation(None).eval()(images)
    assert torch.allclose(loaded(images), expected, atol=1e-5)


def test_existing_study_directory_is_refused(finished_study: Path, capsys) -> None:
    assert main(["search", str(finished_study / "tiny.yaml")]) == 2
    assert "already holds a study named 'tiny'" in capsys.readouterr().err


# The tests below add runs to the study's experiment: they come last.


def test_confirm_reruns_best_and_random_configurations_with_fresh_seeds(
    finished_study: Path, capsys, caplog
) -> None:
    caplog.set_level(logging.INFO, logger="sslstudy")
    study_dir = finished_study / "ray" / "tiny"
    # Nothing to continue: refused, not started with the default flags.
    assert main(["confirm", str(study_dir), "--resume"]) == 2
    assert "has no confirmation runs to continue" in capsys.readouterr().err
    assert main(["confirm", str(study_dir), "--top", "1", "--seeds", "2", "--random", "1"]) == 0
    client, _, children = _children(finished_study, "tiny")
    search = {r.data.tags["trial_id"]: r for r in children
              if r.data.tags["run_kind"] == "search"}
    confirm = [r for r in children if r.data.tags["run_kind"] == "confirm"]
    by_original: dict[str, list] = {}
    for run in confirm:
        by_original.setdefault(run.data.tags["replicate_of"], []).append(run)
    for method in ("simclr", "moco"):
        mine = [t for t, r in search.items() if r.data.tags["method"] == method]
        completed = [t for t in mine if search[t].data.tags["status"] == "completed"]
        best = max(completed, key=lambda t: search[t].data.metrics["val_knn_acc"])
        chosen = [t for t in by_original if t in mine]
        assert best in chosen and len(chosen) == min(2, len(mine)), "the best, one random"
    # Each line says at which budget each score was taken: a random pick that ASHA
    # stopped scored fewer epochs in the search than its fresh seeds.
    lines = {m.split(" ")[1]: m for m in (r.getMessage() for r in caplog.records)
             if " in the search" in m}
    assert set(lines) == set(by_original)
    for trial_id, line in lines.items():
        assert line.endswith("over 2 fresh seeds at 3 epochs"), line
        budget = int(search[trial_id].data.tags["budget"])
        assert (f"(after {budget} of 3 epochs)" in line) == (budget < 3), line
    for original, runs in by_original.items():
        assert len(runs) == 2
        seeds = {r.data.params["seed"] for r in runs}
        assert len(seeds) == 2 and "0" not in seeds, "fresh seeds"
        for run in runs:
            assert run.data.tags["status"] == "completed" and run.data.tags["budget"] == "3"
            assert "knn_acc" in run.data.metrics
            assert {"finetune_frozen_10_acc", "finetune_unfrozen_20_acc", "supervised_10_acc",
                    "pruned90_10_acc", "retrieval_p5", "retrieval_map5"} <= set(run.data.metrics)
            files = {a.path for a in client.list_artifacts(run.info.run_id, "embeddings")}
            assert files == {"embeddings/pca.png", "embeddings/pca.parquet",
                             "embeddings/pca_random_init.png",
                             "embeddings/pca_random_init.parquet"}
            same = {k: v for k, v in run.data.params.items() if k != "seed"}
            assert same == {k: v for k, v in search[original].data.params.items()
                            if k != "seed"}
    assert main(["confirm", str(study_dir)]) == 2
    assert "already has confirmation runs" in capsys.readouterr().err
    # Their Tuner keeps its runs: a resume asking for others is refused before anything.
    assert main(["confirm", str(study_dir), "--resume", "--top", "2", "--seeds", "2",
                 "--random", "1"]) == 2
    assert "started with --top 1 --seeds 2 --random 1; resume them with the same flags" \
        in capsys.readouterr().err
    # A search stopped with Ctrl-C (its run KILLED) is continued by its own --resume,
    # which also continues the confirmation runs its config asks for.
    parent = client.search_runs([children[0].info.experiment_id],
                                "tags.`sslstudy.role` = 'study'")[0].info.run_id
    client.update_run(parent, status="KILLED")
    try:
        assert main(["confirm", str(study_dir), "--resume", "--top", "1", "--seeds", "2",
                     "--random", "1"]) == 2
    finally:
        client.update_run(parent, status="FINISHED")
    assert "has not finished (its MLflow run is KILLED)" in capsys.readouterr().err


def test_a_sweep_runs_every_cell_with_every_seed(finished_study: Path) -> None:
    config = finished_study / "tiny.yaml"
    assert main(["sweep", str(config), "--method", "simclr", "--param", "temperature",
                 "--values", "0.1,0.5", "--seeds", "2", "--around", "best"]) == 0
    client, _, children = _children(finished_study, "tiny")
    sweeps = [r for r in client.search_runs([children[0].info.experiment_id])
              if r.data.tags.get("sslstudy.role") == "sweep"]
    assert len(sweeps) == 1
    cells = [r for r in children
             if r.data.tags.get("mlflow.parentRunId") == sweeps[0].info.run_id]
    assert len(cells) == 4 and all(r.data.tags["run_kind"] == "sweep" for r in cells)
    assert sorted((r.data.params["temperature"], r.data.params["seed"]) for r in cells) == [
        ("0.1", "0"), ("0.1", "1"), ("0.5", "0"), ("0.5", "1")]
    # Around the best: every other hyperparameter is the best trial's.
    others = {frozenset((k, v) for k, v in r.data.params.items()
                        if k not in ("temperature", "seed")) for r in cells}
    assert len(others) == 1
    assert all(r.data.tags["status"] == "completed" for r in cells)
    out = finished_study / "sweep-report"
    assert main(["analyze", "--experiment", "tiny", "--tracking-uri",
                 f"sqlite:///{finished_study / 'mlflow.db'}", "--out", str(out)]) == 0
    table = pd.read_csv(out / "sweeps.csv")
    assert sorted(table["value"]) == [0.1, 0.5] and (table["n"] == 2).all()
    assert (table["metric"] == "knn_acc").all()


def test_the_report_shows_the_protocols_in_the_layout_of_table_2(finished_study: Path) -> None:
    """After the confirmation runs (and the sweep) logged the protocols."""
    out = finished_study / "protocols-report"
    assert main(["analyze", "--experiment", "tiny", "--tracking-uri",
                 f"sqlite:///{finished_study / 'mlflow.db'}", "--out", str(out)]) == 0
    report = (out / "report.html").read_text()
    assert "Fine-tuning with few labels" in report
    for header in ("<th>method</th>", "<th>evaluation</th>", "<th>10%</th>", "<th>20%</th>"):
        assert header in report
    for row in ("frozen", "unfrozen", "prune 90% *", "supervised baseline"):
        assert f"<td>{row}</td>" in report
    assert " ± " in report, "replicates (fresh seeds) give mean ± std"
    table = pd.read_csv(out / "protocols.csv")
    assert set(table["method"]) == {"simclr", "moco"} and (table["n"] >= 2).all()
    client, (parent,), _ = _children(finished_study, "tiny")
    attached = {a.path for a in client.list_artifacts(parent.info.run_id, "report")}
    assert {"report/protocols.csv", "report/retrieval.csv"} <= attached
    assert {"simclr_embedding.png", "moco_embedding.png"} <= {
        p.name for p in (out / "plots").iterdir()}
    runs = pd.read_parquet(out / "runs.parquet")
    assert "final_finetune_unfrozen_20_acc" in runs


def test_a_study_whose_ray_does_not_start_closes_its_parent_run(tmp_path: Path,
                                                               monkeypatch) -> None:
    """A study that starts its own Ray opens its parent run meanwhile: when Ray then fails
    to start, that run is closed as failed with Ray's error and no study state is left."""
    import study.cluster

    def refuse() -> None:
        raise RuntimeError("no Ray on this machine")

    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(study.cluster, "_start_local_ray", refuse)
    with pytest.raises(RuntimeError, match="no Ray on this machine"):
        main(["search", str(write_study_config(tmp_path, "unstarted", {"simclr": {}}))])
    client, parents, children = _children(tmp_path, "unstarted")
    assert len(parents) == 1 and children == []
    assert parents[0].info.status == "FAILED"
    summary = json.loads(Path(client.download_artifacts(
        parents[0].info.run_id, "summary.json", str(tmp_path))).read_text())
    assert "no Ray on this machine" in summary["error"]
    assert not list((tmp_path / "ray").rglob("study.json"))


def test_ctrl_c_while_a_study_starts_leaves_its_parent_run_stopped(tmp_path: Path,
                                                                    monkeypatch) -> None:
    """Ctrl-C while Ray starts: the parent run opened meanwhile is stopped, not failed, and
    says that there is nothing to resume (before: FAILED, without a word)."""
    import study.cluster

    def stop() -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(study.cluster, "_start_local_ray", stop)
    assert main(["search", str(write_study_config(tmp_path, "stopped", {"simclr": {}}))]) \
        == 130
    _, parents, children = _children(tmp_path, "stopped")
    assert [p.info.status for p in parents] == ["KILLED"] and children == []
    assert "without --resume" in parents[0].data.tags["sslstudy.interrupted"]
    assert not list((tmp_path / "ray").rglob("study.json"))


def test_a_study_whose_reference_scoring_fails_closes_its_parent_run(tmp_path: Path,
                                                                    monkeypatch) -> None:
    """The parent run opens before the untrained encoders are scored: when scoring fails,
    the run is closed as failed rather than left RUNNING with no study to resume."""
    import study.search

    def fail(*args, **kwargs) -> None:
        raise MemoryError("scoring the untrained encoder")

    monkeypatch.setattr(study.search, "_log_references", fail)
    with pytest.raises(MemoryError):
        main(["search", str(write_study_config(tmp_path, "unscored", {"simclr": {}}))])
    client, parents, children = _children(tmp_path, "unscored")
    assert [p.info.status for p in parents] == ["FAILED"] and children == []
    summary = json.loads(Path(client.download_artifacts(
        parents[0].info.run_id, "summary.json", str(tmp_path))).read_text())
    assert "scoring the untrained encoder" in summary["error"]
    assert not list((tmp_path / "ray").rglob("study.json"))


def test_a_local_ray_knows_its_api_server_and_starts_no_idle_workers(monkeypatch) -> None:
    """What a study's own Ray gets through its processes' environment: the address of its
    API server (for Ray Train's placement-group cleaner) and no prestarted workers (a
    study runs none of Ray's tasks); the driver's environment is left as it was."""
    import types

    import study.cluster

    seen: dict[str, str | None] = {}

    def init(**kwargs):
        seen.update({name: os.environ.get(name) for name in
                     ("RAY_API_SERVER_ADDRESS", "RAY_prestart_worker_first_driver")})
        return types.SimpleNamespace(dashboard_url=f"127.0.0.1:{kwargs['dashboard_port']}")

    monkeypatch.setenv("RAY_API_SERVER_ADDRESS", "http://elsewhere:8265")
    monkeypatch.delenv("RAY_prestart_worker_first_driver", raising=False)
    monkeypatch.setattr(ray, "init", init)
    study.cluster._start_local_ray()
    assert seen["RAY_API_SERVER_ADDRESS"].startswith("http://127.0.0.1:")
    assert seen["RAY_prestart_worker_first_driver"] == "0"
    assert os.environ["RAY_API_SERVER_ADDRESS"] == "http://elsewhere:8265"
    assert "RAY_prestart_worker_first_driver" not in os.environ
