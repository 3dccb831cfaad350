"""The contrastive family through the whole platform: a tiny Ray study of CPC, spatial
contrasting, the layer-wise patch triplet and Deep InfoMax, logged to MLflow and
reported by ``sslstudy analyze`` without special cases."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import ray
from conftest import write_study_config
from mlflow.tracking import MlflowClient

from study.cli import main

pytestmark = pytest.mark.slow

METHODS = {
    "cpc": {"space": {"batch_size": {"choices": [32]}, "patch_size": {"choices": [16]},
                      "pred_steps": 1}},
    "spatial_contrasting": {"space": {"batch_size": {"choices": [32, 64]}}},
    "patch_triplet": {"space": {"batch_size": {"choices": [32, 64]}, "transfer_epochs": 1}},
    "dim": {"space": {"batch_size": {"choices": [32, 64]}}},
}


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("family")
    config = write_study_config(tmp, "family", METHODS, train={"epochs": 2},
                                search={"grace_period": 2})
    ray.init(num_cpus=2, logging_level="WARNING")
    try:
        assert main(["search", str(config)]) == 0
    finally:
        ray.shutdown()
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
        assert 0.0 <= run.data.metrics["knn_acc"] <= 1.0
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
    sensitivity = pd.read_csv(out / "sensitivity.csv")
    assert set(sensitivity["method"]) == set(METHODS)
    # Each method is reported on its own parameters; none gets a temperature it lacks.
    params = sensitivity.groupby("method")["param"].agg(set)
    assert "margin" in params["patch_triplet"] and "temperature" not in params["patch_triplet"]
    assert "alpha" in params["dim"] and "temperature" not in params["dim"]
    report = (out / "report.html").read_text()
    assert all(method in report for method in METHODS)
