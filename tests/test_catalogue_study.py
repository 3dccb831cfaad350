"""The method catalogue through the whole platform: a tiny Ray study of CPC, spatial
contrasting, the layer-wise patch triplet and Deep InfoMax, and a cross-method search
over contrastive and pretext methods, logged to MLflow and reported by
``sslstudy analyze`` without special cases."""

from __future__ import annotations

from pathlib import Path

import optuna
import pandas as pd
import pytest
import ray
from conftest import write_study_config
from mlflow.tracking import MlflowClient

from study.cli import main
from trainables.methods import METHODS as METHOD_CLASSES

pytestmark = pytest.mark.slow

METHODS = {
    "cpc": {"space": {"batch_size": {"choices": [32]}, "patch_size": {"choices": [16]},
                      "pred_steps": 1}},
    "spatial_contrasting": {"space": {"batch_size": {"choices": [32, 64]}}},
    "patch_triplet": {"space": {"batch_size": {"choices": [32, 64]}, "transfer_epochs": 1}},
    "dim": {"space": {"batch_size": {"choices": [32, 64]}}},
}


@pytest.fixture(scope="module", autouse=True)
def ray_instance():
    ray.init(address="local", include_dashboard=False, num_cpus=2, logging_level="WARNING")
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("family")
    config = write_study_config(tmp, "family", METHODS, train={"epochs": 2},
                                search={"grace_period": 2})
    assert main(["search", str(config)]) == 0
    return tmp


def test_every_method_completes_its_trials(study: Path) -> None:
    client = MlflowClient(f"sqlite:///{study / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("family")
    runs = [r for r in client.search_runs([experiment.experiment_id])
            if "mlflow.parentRunId" in r.data.tags]
    by_method: dict[str, list] = {}
    for run in runs:
        by_method.setdefault(run.data.tags["method"], []).append(run)
    assert {m: len(r) for m, r in by_method.items()} == {m: 2 for m in METHODS}
    for run in runs:
        assert run.data.tags["status"] == "completed", run.data.tags.get("failure_reason")
        assert 0.0 <= run.data.metrics["val_knn_acc"] <= 1.0
    assert all(r.data.tags["backbone"] == "layerwise_conv" for r in by_method["patch_triplet"])
    assert all(r.data.tags["backbone"] == "small_cnn" for r in by_method["dim"])


def test_patch_triplet_logs_its_transfer_protocol_and_filter_image(study: Path) -> None:
    client = MlflowClient(f"sqlite:///{study / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("family")
    runs = client.search_runs([experiment.experiment_id], "tags.method = 'patch_triplet'")
    for run in runs:
        assert {"transfer_random_acc", "transfer_frozen_acc",
                "transfer_finetune_acc"} <= set(run.data.metrics)
        (artifact,) = client.list_artifacts(run.info.run_id, "filters")
        assert artifact.path == "filters/layer1.png"
        local = Path(client.download_artifacts(run.info.run_id, artifact.path, str(study)))
        assert local.read_bytes().startswith(b"\x89PNG")
    # Artifacts of a local study live beside its database, not in Ray's trial folders.
    assert list((study / "mlartifacts").rglob("layer1.png"))
    assert not list((study / "ray").rglob("layer1.png"))


def test_analysis_reports_every_method(study: Path) -> None:
    out = study / "report"
    assert main(["analyze", "--experiment", "family", "--tracking-uri",
                 f"sqlite:///{study / 'mlflow.db'}", "--out", str(out)]) == 0
    runs = pd.read_parquet(out / "runs.parquet")
    assert set(runs["method"]) == set(METHODS)
    # Each method is recorded with its own parameters; none gets a temperature it lacks.
    by_method = runs.set_index("method")
    assert by_method.loc["patch_triplet", "margin"].notna().all()
    assert by_method.loc["patch_triplet", "temperature"].isna().all()
    assert by_method.loc["dim", "alpha"].notna().all()
    assert by_method.loc["dim", "temperature"].isna().all()
    # Two configurations per method: too few for a response curve, and the report says
    # so for every method instead of drawing one.
    assert pd.read_csv(out / "sensitivity.csv").empty
    report = (out / "report.html").read_text()
    assert all(method in report for method in METHODS)
    assert report.count("too few for marginal responses") == len(METHODS)


CROSS = {
    "simclr": {"space": {"batch_size": {"choices": [32]}, "proj_hidden_dim": 64}},
    "rotnet": {"space": {"batch_size": {"choices": [32]}}},
    "denoising_ae": {"space": {"batch_size": {"choices": [32]}}},
}


def test_cross_method_search_chooses_methods_and_the_report_compares_them(
    tmp_path: Path,
) -> None:
    config = write_study_config(
        tmp_path, "cross", CROSS, train={"epochs": 2, "linear_probe": "every"},
        search={"num_samples": 6, "n_startup_trials": 6, "grace_period": 2,
                "cross_method": True, "metric": "linear_acc"},
    )
    assert main(["search", str(config)]) == 0
    storage = f"sqlite:///{tmp_path / 'ray' / 'cross' / 'optuna.db'}"
    trials = optuna.load_study(study_name="cross-cross_method", storage=storage).trials
    assert len(trials) == 6
    chosen = {t.params["method"] for t in trials}
    assert len(chosen) >= 2
    for trial in trials:
        method = trial.params["method"]
        # Only the chosen method's parameters were suggested (conditional space).
        assert {k.split(".")[0] for k in trial.params if k != "method"} == {method}
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("cross")
    runs = [r for r in client.search_runs([experiment.experiment_id])
            if "mlflow.parentRunId" in r.data.tags]
    assert sorted(r.data.tags["method"] for r in runs) == sorted(
        t.params["method"] for t in trials)
    for run in runs:
        assert run.data.tags["status"] == "completed", run.data.tags.get("failure_reason")
        # Each run records its own method's hyperparameters (RotNet's num_rotations...).
        assert set(METHOD_CLASSES[run.data.tags["method"]].hyperparameters) <= set(
            run.data.params)
    out = tmp_path / "report"
    assert main(["analyze", "--experiment", "cross", "--tracking-uri",
                 f"sqlite:///{tmp_path / 'mlflow.db'}", "--out", str(out)]) == 0
    comparison = pd.read_csv(out / "comparison.csv")
    assert set(comparison["method"]) == chosen
    report = (out / "report.html").read_text()
    assert "Method comparison" in report
    # Without --metric the report follows the metric the study optimised.
    assert "Metric <b>val_linear_acc</b>" in report
    best = comparison.set_index("method")["best"]
    finals = {m: max(r.data.metrics["val_linear_acc"] for r in runs
                     if r.data.tags["method"] == m)
              for m in chosen}
    assert all(best[m] <= finals[m] + 1e-9 for m in chosen)
