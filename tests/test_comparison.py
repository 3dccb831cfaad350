"""The cross-method comparison: per-method best, median, spread and the robustness of the
best configuration, on synthetic experiments whose answers are known."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient

from analysis.comparison import compare_method, neighbour_distances
from study.cli import main


def test_neighbour_distances_follow_the_search_scales() -> None:
    frame = pd.DataFrame({"lr": [1e-4, 1e-3, 1e-2], "loss": ["mse", "mse", "bce"]})
    scales = {"lr": "log", "loss": "categorical"}
    d = neighbour_distances(frame, scales, origin=0)
    # lr on log10, normalised to [0, 1]: 0, 0.5, 1; loss differs only for the third.
    np.testing.assert_allclose(d, [0.0, np.sqrt(0.25 / 2), np.sqrt((1 + 1) / 2)])


def test_a_peaked_best_drops_more_than_a_plateau() -> None:
    x = np.linspace(0, 1, 11)
    frame = pd.DataFrame({"x": x})
    plateau = pd.Series(0.8 - 0.01 * np.abs(x - 0.5))
    peak = pd.Series(np.where(x == 0.5, 0.8, 0.4))
    flat_row = compare_method("flat", plateau, frame, {"x": "linear"}, 8.0, "max")
    peak_row = compare_method("peaked", peak, frame, {"x": "linear"}, 8.0, "max")
    assert flat_row["best"] == pytest.approx(0.8) and peak_row["best"] == pytest.approx(0.8)
    assert flat_row["best_drop"] < 0.01 < 0.3 < peak_row["best_drop"]
    assert peak_row["median"] == pytest.approx(0.4)
    assert peak_row["neighbours"] == 3


def test_minimised_metrics_and_single_trials() -> None:
    frame = pd.DataFrame({"x": [0.0, 0.5, 1.0]})
    row = compare_method("m", pd.Series([0.3, 0.1, 0.2]), frame, {"x": "linear"}, 1.0, "min")
    assert row["best"] == pytest.approx(0.1) and row["best_drop"] == pytest.approx(0.15)
    single = compare_method("m", pd.Series([0.5]), frame.iloc[:1], {"x": "linear"}, 1.0, "max")
    assert single["neighbours"] == 0 and np.isnan(single["best_drop"])


def test_report_compares_the_methods_of_an_experiment(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'cmp.db'}"
    client = MlflowClient(uri)
    exp = client.create_experiment("cmp")
    rng = np.random.default_rng(0)
    for method, centre, width in (("robust", 0.7, 0.5), ("fragile", 0.75, 0.02)):
        for _ in range(10):
            lr = float(10 ** rng.uniform(-4, -2))
            score = centre - 0.3 * min(1.0, abs(np.log10(lr) + 3) / (10 * width))
            run = client.create_run(exp, run_name=method, tags={
                "method": method, "status": "completed", "budget": "4", "max_budget": "4"})
            client.log_batch(run.info.run_id, params=[Param("lr", str(lr))],
                             metrics=[Metric("knn_acc", score, 0, 4)],
                             tags=[RunTag("budget", "4")])
            client.set_terminated(run.info.run_id)
    out = tmp_path / "report"
    assert main(["analyze", "--experiment", "cmp", "--tracking-uri", uri, "--out",
                 str(out)]) == 0
    table = pd.read_csv(out / "comparison.csv").set_index("method")
    assert set(table.index) == {"robust", "fragile"}
    assert table.loc["robust", "median"] > table.loc["fragile", "median"]
    assert table.loc["robust", "best_drop"] < table.loc["fragile", "best_drop"]
    assert (out / "plots" / "method_comparison.png").is_file()
    assert "Method comparison" in (out / "report.html").read_text()
