"""Paper-style sweep tables on planted sweeps: mean +- std per value on the test split,
the best marked, values within noise of it marked, sweep runs kept out of the search's
sensitivity analysis."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
from planted import Trial, create_experiment, write_study

from study.cli import main
from tracking import schema

#: temperature -> the test scores of its seeds (val scores are 0.1 lower).
PLANTED = {0.1: [0.60, 0.62, 0.61], 0.5: [0.70, 0.71, 0.72], 1.0: [0.69, 0.70, 0.74],
           2.0: [0.40, 0.42, 0.41]}


def _cells() -> list[Trial]:
    return [
        Trial("simclr", {"temperature": t, "lr": 0.001, "seed": seed},
              {"knn_acc": {4: score}, "val_knn_acc": {2: score - 0.2, 4: score - 0.1}},
              max_budget=4,
              tags={schema.TAG_RUN_KIND: schema.KIND_SWEEP,
                    schema.TAG_SWEEP_CELL: json.dumps({"temperature": t})})
        for t, scores in PLANTED.items() for seed, score in enumerate(scores)
    ]


def test_analyze_writes_the_sweep_table(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client, experiment_id = create_experiment(uri, "sw")
    write_study(client, experiment_id, _cells(), objective=("val_knn_acc", "max"))
    out = tmp_path / "report"
    assert main(["analyze", "--experiment", "sw", "--tracking-uri", uri, "--out", str(out)]) == 0
    table = pd.read_csv(out / "sweeps.csv")
    assert list(table.columns) == ["method", "param", "value", "param2", "value2", "metric",
                                   "mean", "std", "n"]
    assert (table["metric"] == "knn_acc").all(), "a sweep reports the held-out score"
    for _, row in table.iterrows():
        scores = PLANTED[row["value"]]
        assert row["mean"] == np.mean(scores) and row["n"] == 3
        assert abs(row["std"] - np.std(scores, ddof=1)) < 1e-12
    report = (out / "report.html").read_text()
    assert '">Sweeps</h2>' in report
    # 0.5 is best (0.71); 1.0 (0.71) is within noise of it, 0.1 and 2.0 are not.
    assert "<b>0.7100 &plusmn; 0.0100</b>" in report
    rows = report.split('">Sweeps</h2>')[1].split("</table>")[0].split("<tr>")
    marks = {r.split("</td>")[0].removeprefix("<td>"): r for r in rows[2:]}
    assert "within noise" in marks["1.0"] and "within noise" not in marks["0.1"]
    assert "within noise" not in marks["2.0"]
    assert any(p.name.startswith("sweep_simclr_temperature") for p in (out / "plots").iterdir())


def test_a_sweep_analysed_on_its_test_score_is_not_warned_about_selection(
    tmp_path: Path, caplog
) -> None:
    """A sweep recommends nothing, so its test score may be analysed without the warning
    that a search's selection would use the test split."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client, experiment_id = create_experiment(uri, "sw")
    write_study(client, experiment_id, _cells(), objective=("val_knn_acc", "max"))
    out = tmp_path / "report"
    assert main(["analyze", "--experiment", "sw", "--tracking-uri", uri, "--metric", "knn_acc",
                 "--out", str(out)]) == 0
    assert "is scored on the test split" not in (out / "report.html").read_text()
    assert "is scored on the test split" not in caplog.text
