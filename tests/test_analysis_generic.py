"""The analysis works on any MLflow experiment with params and a metric, and never
imports torch."""

from __future__ import annotations

import html
import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient

from analysis import plots
from analysis.budgets import choose_budget, values_at_budget
from analysis.html import _summary
from analysis.method import analyse_method, score
from analysis.noise import noise_floor
from analysis.runs import Experiment
from analysis.scales import make_binning, param_scale
from study.cli import main
from tracking import schema


@pytest.fixture
def foreign_experiment(tmp_path: Path) -> str:
    """Runs logged by some other tool: no platform tags, params as strings, a word-valued
    optimiser and a learning rate whose effect is strong."""
    uri = f"sqlite:///{tmp_path / 'other.db'}"
    client = MlflowClient(uri)
    exp = client.create_experiment("other-tool")
    rng = np.random.default_rng(0)
    for i in range(12):
        lr = float(10 ** rng.uniform(-4, -1))
        optimiser = ["adam", "sgd"][i % 2]
        run = client.create_run(exp, run_name=f"run-{i}")
        score = 0.9 - 0.1 * abs(math.log10(lr) + 2.5) + (0.02 if optimiser == "adam" else 0)
        client.log_batch(
            run.info.run_id,
            params=[Param("lr", str(lr)), Param("optimiser", optimiser),
                    Param("dropout", str(0.1 * (i % 4)))],
            metrics=[Metric("val_acc", score * s / 5, 0, s) for s in range(1, 6)],
        )
        client.set_terminated(run.info.run_id)
    return uri


def test_analysis_of_a_foreign_experiment(foreign_experiment: str, tmp_path: Path) -> None:
    out = tmp_path / "report"
    assert main(["analyze", "--experiment", "other-tool", "--tracking-uri", foreign_experiment,
                 "--metric", "val_acc", "--out", str(out)]) == 0
    runs = pd.read_parquet(out / "runs.parquet")
    assert len(runs) == 12 and set(runs["method"]) == {"all"}
    assert runs["budget"].tolist() == [5.0] * 12
    # Histories read in bulk are those MLflow gives run by run.
    history = pd.read_parquet(out / "history.parquet")
    client = MlflowClient(foreign_experiment)
    one_by_one = sorted((r, m.step, m.value) for r in runs["run_id"]
                        for m in client.get_metric_history(r, "val_acc"))
    assert sorted(history[["run_id", "step", "value"]].itertuples(index=False,
                                                                  name=None)) == one_by_one
    importance = pd.read_csv(out / "importance.csv")
    assert set(importance["param"]) == {"lr", "optimiser", "dropout"}
    assert set(importance["evaluator"]) == {"additive_fanova"}
    assert importance.set_index("param")["importance"].idxmax() == "lr"
    sensitivity = pd.read_csv(out / "sensitivity.csv")
    assert set(sensitivity.loc[sensitivity["param"] == "optimiser", "value"]) == {"adam", "sgd"}
    assert (out / "plots" / "all_lr.png").is_file()
    assert (out / "report.html").read_text().count("<img") >= 4


def test_unknown_metric_and_experiment_are_input_errors(foreign_experiment: str, tmp_path,
                                                        capsys) -> None:
    out = tmp_path / "r"
    assert main(["analyze", "--experiment", "other-tool", "--tracking-uri", foreign_experiment,
                 "--metric", "knn_acc", "--out", str(out)]) == 2
    assert "--metric: no run logged 'knn_acc'; logged: val_acc" in capsys.readouterr().err
    assert main(["analyze", "--experiment", "nope", "--tracking-uri", foreign_experiment,
                 "--out", str(out)]) == 2
    assert "no experiment named 'nope'; found:" in capsys.readouterr().err
    assert not out.exists()


def test_html_escapes_run_names_and_params(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'x.db'}"
    client = MlflowClient(uri)
    exp = client.create_experiment("xss")
    for i in range(3):
        run = client.create_run(exp, run_name=f"<script>alert({i})</script>")
        client.log_batch(run.info.run_id, params=[Param("p", f"<b>{i}</b>")],
                         metrics=[Metric("m", float(i), 0, 1)],
                         tags=[RunTag("method", "<i>m</i>")])
    out = tmp_path / "r"
    assert main(["analyze", "--experiment", "xss", "--tracking-uri", uri, "--metric", "m",
                 "--out", str(out)]) == 0
    report = (out / "report.html").read_text()
    assert "<script>alert" not in report and "&lt;script&gt;alert" in report
    assert "<b>1</b>" not in report and "<i>m</i>" not in report


def test_budget_choice_and_values_at_budget() -> None:
    runs = pd.DataFrame({"run_id": ["a", "b", "c"], "budget": [8.0, 2.0, 4.0],
                         "max_budget": [8.0, 8.0, 8.0]})
    history = pd.DataFrame({
        "run_id": ["a"] * 8 + ["b"] * 2 + ["c"] * 4,
        "metric": ["acc"] * 14,
        "step": [*range(1, 9), 1, 2, 1, 2, 3, 4],
        "value": [*(0.1 * s for s in range(1, 9)), 0.05, 0.07, 0.2, 0.3, 0.35, 0.4],
    })
    common = choose_budget(runs, "common", n_params=1)
    assert (common.budget, common.full_budget, common.reached_full) == (2.0, 8.0, 1)
    at_common = values_at_budget(runs, history, "acc", common.budget)
    assert at_common.to_dict() == pytest.approx({"a": 0.2, "b": 0.07, "c": 0.3})
    at_four = values_at_budget(runs, history, "acc", 4)
    assert set(at_four.index) == {"a", "c"}
    assert choose_budget(runs, "full", n_params=1).budget == 8.0
    # Three trials are too few for importance anywhere: auto falls back to common.
    auto = choose_budget(runs, "auto", n_params=1)
    assert auto.budget == 2.0 and auto.fallback and auto.analysed == ()


def test_auto_budget_is_the_largest_that_enough_trials_reached() -> None:
    """12 trials at 1 epoch, 8 at 2, 4 at 4 (ASHA-like): with 3 parameters a budget needs
    6 trials, so auto picks 2 epochs where common would pick the grace period."""
    budgets = [1.0] * 4 + [2.0] * 4 + [4.0] * 4
    runs = pd.DataFrame({"run_id": [str(i) for i in range(12)], "budget": budgets,
                         "max_budget": 4.0})
    auto = choose_budget(runs, "auto", n_params=3)
    assert (auto.budget, auto.at_budget, auto.needed, auto.analysed) == (2.0, 8, 6, (1.0, 2.0))
    assert choose_budget(runs, "common", n_params=3).budget == 1.0
    assert choose_budget(runs, "auto", n_params=5).budget == 1.0  # needs 10: only 1 epoch


def test_bins_on_the_parameter_scale() -> None:
    x = pd.Series([0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0])
    binning = make_binning(x, "log", 3)
    assert binning.labels == pytest.approx([10 ** -1.6667, 10 ** -1.0, 10 ** -0.3333],
                                           rel=1e-3)
    assert binning.assign(x).tolist() == [0, 0, 1, 1, 1, 2, 2]
    # Momentum's bins are equally wide in log10(1 - m), over [-4, -1] here.
    momentum = make_binning(pd.Series([0.9, 0.99, 0.999, 0.9999, 0.95]), "log1m", 3)
    assert momentum.labels == pytest.approx([1 - 10**-3.5, 1 - 10**-2.5, 1 - 10**-1.5])
    assert momentum.assign(pd.Series([0.9999, 0.999, 0.99, 0.9])).tolist() == [0, 1, 2, 2]
    few = make_binning(pd.Series([64.0, 128.0, 64.0]), "categorical", 3)
    assert few.labels == (64.0, 128.0) and few.assign(pd.Series([128, 64])).tolist() == [1, 0]


def test_param_scale_inference() -> None:
    assert param_scale(pd.Series(["a", "b"]), None) == "categorical"
    assert param_scale(pd.Series([64.0, 128.0, 256.0]), None) == "categorical"
    assert param_scale(pd.Series([1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2]), None) == "log"
    assert param_scale(pd.Series([0.1, 0.2, 0.3, 0.4, 0.5, 0.6]), None) == "linear"
    # Two decades, but spread evenly on a linear axis: a uniform search that came near 0.
    assert param_scale(pd.Series([0.004, 0.2, 0.4, 0.5, 0.7, 0.9]), None) == "linear"
    assert param_scale(pd.Series([0.9, 0.99]), {"type": "float", "scale": "log1m"}) == "log1m"


def test_noise_marks_hang_from_the_best_whichever_way_the_metric_goes() -> None:
    """The seed-noise band of a response plot and the outlined cells of a heat map start at
    the best value: the highest for an accuracy, the lowest for a loss."""
    means = np.array([0.50, 0.80, 0.62])
    assert plots.noise_band(means, 0.05, "max") == pytest.approx((0.75, 0.80))
    assert plots.noise_band(means, 0.05, "min") == pytest.approx((0.50, 0.55))
    grid = np.array([[0.50, np.nan], [0.53, 0.80]])
    np.testing.assert_array_equal(plots.within_noise_of_best(grid, 0.05, "max"),
                                  [[False, False], [False, True]])
    np.testing.assert_array_equal(plots.within_noise_of_best(grid, 0.05, "min"),
                                  [[True, False], [True, False]])
    assert not plots.within_noise_of_best(np.full((2, 2), np.nan), 0.05, "max").any()


def test_a_failed_run_without_parameters_leaves_the_analysis_whole(
    foreign_experiment: str, tmp_path: Path
) -> None:
    """A trial killed before it logged its parameters has none: the others' parameters are
    still analysed, and the failure is counted."""
    client = MlflowClient(foreign_experiment)
    run = client.create_run(client.get_experiment_by_name("other-tool").experiment_id)
    client.set_terminated(run.info.run_id, status="FAILED")
    out = tmp_path / "report"
    assert main(["analyze", "--experiment", "other-tool", "--tracking-uri", foreign_experiment,
                 "--metric", "val_acc", "--out", str(out)]) == 0
    importance = pd.read_csv(out / "importance.csv")
    assert set(importance["param"]) == {"lr", "optimiser", "dropout"}


def test_analysing_a_test_split_score_warns_that_selection_uses_it(tmp_path: Path) -> None:
    """Runs that log the validation kNN accuracy beside the test one, and a protocol's
    test score without a validation form: analysing a test score gives its sensitivity,
    with a warning that the best configurations are chosen on the test split. A pair of
    another tool's names (Keras's ``acc`` and ``val_acc``, where ``acc`` is the training
    accuracy) is not taken for one."""
    uri = f"sqlite:///{tmp_path / 'both.db'}"
    client = MlflowClient(uri)
    exp = client.create_experiment("both")
    for i in range(8):
        run = client.create_run(exp)
        client.log_batch(run.info.run_id, params=[Param("lr", str(0.001 * (i + 1)))],
                         metrics=[Metric(name, 0.5 + 0.01 * i, 0, 1) for name in
                                  ("knn_acc", "val_knn_acc", "acc", "val_acc",
                                   "finetune_frozen_10_acc", "retrieval_p5")])
        client.set_terminated(run.info.run_id)
    hints = {"knn_acc": "analyse val_knn_acc to select",
             "finetune_frozen_10_acc": "no run logged val_finetune_frozen_10_acc",
             "retrieval_p5": "no run logged val_retrieval_p5", "acc": None,
             "val_knn_acc": None}
    for metric, hint in hints.items():
        out = tmp_path / metric
        assert main(["analyze", "--experiment", "both", "--tracking-uri", uri, "--metric",
                     metric, "--out", str(out)]) == 0
        text = (out / "report.html").read_text()
        assert ("is scored on the test split" in text) == (hint is not None), metric
        assert hint is None or hint in text, metric


def test_a_budget_before_the_first_evaluation_says_so(foreign_experiment: str,
                                                       tmp_path: Path) -> None:
    """Every run trained past 0.5 epochs, none reported before its first evaluation at 1:
    the report says there is nothing to compare there, instead of comparing no runs."""
    out = tmp_path / "report"
    assert main(["analyze", "--experiment", "other-tool", "--tracking-uri", foreign_experiment,
                 "--metric", "val_acc", "--budget", "0.5", "--out", str(out)]) == 0
    assert "no run reported val_acc at or before 0.5 epochs" in (out / "report.html").read_text()


def test_a_budget_beyond_every_run_is_refused(foreign_experiment: str, tmp_path: Path,
                                              capsys) -> None:
    """Before: an empty report, exit 0, advising a larger --budget."""
    out = tmp_path / "report"
    assert main(["analyze", "--experiment", "other-tool", "--tracking-uri", foreign_experiment,
                 "--metric", "val_acc", "--budget", "1000", "--out", str(out)]) == 2
    assert "--budget: no run trained for 1000 epochs; the longest reached" in \
        capsys.readouterr().err
    assert not out.exists()


def test_scores_and_noise_come_from_independent_runs_only(tmp_path: Path) -> None:
    """Configuration A's search run (0.90, chosen for its luck) was confirmed with three
    fresh seeds (0.48, 0.50, 0.52): A is scored by those alone, mean 0.50 and spread 0.02,
    not pulled up to 0.60 by the run they repeat. B ran three times with the study's one
    seed (0.60, 0.70, 0.80): one seed, scored 0.70, not three draws. C, from another tool,
    has two runs without a seed: two draws (0.30, 0.34). D's confirmation run stopped
    before the analysed budget: its search run (0.40) still scores it. The recommendation
    is the best confirmed configuration, A, though B's single seed scores higher."""
    rows = [("a-search", "A", "search", 0, 4, 0.90),
            *[(f"a-confirm-{s}", "A", "confirm", s, 4, v)
              for s, v in ((11, 0.48), (12, 0.50), (13, 0.52))],
            *[(f"b-{i}", "B", "search", 0, 4, v) for i, v in enumerate((0.6, 0.7, 0.8))],
            ("c-0", "C", "search", None, 4, 0.30), ("c-1", "C", "search", None, 4, 0.34),
            ("d-search", "D", "search", 0, 4, 0.40), ("d-confirm", "D", "confirm", 21, 2, 0.5)]
    runs = pd.DataFrame(
        [{"run_id": run_id, "run_name": run_id, "method": "m", "status": "completed",
          "config": config, "run_kind": kind, "seed": seed, "budget": float(budget),
          "max_budget": 4.0, "parent_run_id": "p"}
         for run_id, config, kind, seed, budget, _ in rows])
    history = pd.DataFrame([{"run_id": run_id, "metric": "acc", "step": budget, "value": v}
                            for run_id, _, _, _, budget, v in rows])
    runs = runs.assign(final_acc=[v for *_, v in rows])
    scored = score(runs.set_index("run_id", drop=False), history, "acc", 4.0, ["config"])
    means = dict(zip(scored.frame["config"], scored.scores, strict=True))
    counts = dict(zip(scored.frame["config"], scored.counts, strict=True))
    assert means == pytest.approx({"A": 0.50, "B": 0.70, "C": 0.32, "D": 0.40})
    assert counts == {"A": 3, "B": 1, "C": 2, "D": 1}
    assert (scored.repeated_by_confirmation, scored.same_seed) == (1, 2)
    noise = noise_floor(scored.y, scored.groups)
    # Pooled over A (squares 0.0008, 2 degrees of freedom) and C (0.0008, 1).
    assert (noise.configs, noise.runs) == (2, 5)
    assert noise.std == pytest.approx(math.sqrt(0.0016 / 3))

    experiment = Experiment(runs, history, ["config"], ["acc"])
    analysis = analyse_method(experiment, "m", "acc", "max", "4", tmp_path)
    assert analysis.recommendation is not None
    assert analysis.recommendation.params == {"config": "A"}
    assert analysis.recommendation.score == pytest.approx(0.50)
    assert sorted(analysis.recommendation.run_ids) == [f"a-confirm-{s}" for s in (11, 12, 13)]
    assert analysis.recommendation.among_confirmed == 1
    notes = " ".join(analysis.notes)
    assert "1 earlier run(s) of configurations that confirmation runs repeat" in notes
    assert ("the recommendation is chosen among the 1 configuration(s) that confirmation "
            "runs score at 4 epochs") in notes
    assert "2 run(s) repeat a configuration with a seed it already ran with" in notes


@pytest.mark.parametrize(("a_at_2", "full"), [
    (0.75, "At the full budget of 4 epochs: 0.8."),
    (0.65, "Its runs stopped before the full budget of 4 epochs (in a study, the scheduler "
           "stopped them): its score there is unknown."),
])
def test_a_recommendation_below_the_full_budget_says_what_it_scored_there(
        a_at_2: float, full: str, tmp_path: Path) -> None:
    """Compared at 2 epochs, the best configuration is recommended with its score there;
    `sslstudy train` trains it for the full 4, so the summary also gives what it scored
    at 4 (A went on), or that the scheduler stopped it first (B)."""
    rows = [("a", "A", 2, a_at_2), ("a", "A", 4, 0.80), ("b", "B", 2, 0.70),
            ("c", "C", 2, 0.50)]
    budgets = {"a": 4.0, "b": 2.0, "c": 2.0}
    final = {r: v for r, _, _, v in rows}  # each run's last value
    runs = pd.DataFrame(
        [{"run_id": r, "run_name": r, "method": "m", "config": c, "run_kind": "search",
          "status": "completed" if budgets[r] == 4 else "stopped_early", "seed": 0,
          "budget": budgets[r], "max_budget": 4.0, "final_acc": final[r],
          "parent_run_id": "p"}
         for r, c in (("a", "A"), ("b", "B"), ("c", "C"))]).set_index("run_id", drop=False)
    history = pd.DataFrame([{"run_id": r, "metric": "acc", "step": step, "value": v}
                            for r, _, step, v in rows])
    tpe_study = SimpleNamespace(info=SimpleNamespace(run_id="p"), data=SimpleNamespace(
        tags={schema.TAG_ROLE: schema.ROLE_STUDY},
        params={schema.STUDY_PARAM_SAMPLES: "3", schema.STUDY_PARAM_SAMPLER: "tpe",
                schema.STUDY_PARAM_STARTUP: "1"}))
    experiment = Experiment(runs, history, ["config"], ["acc"], parents=[tpe_study])
    analysis = analyse_method(experiment, "m", "acc", "max", "2", tmp_path)
    assert analysis.recommendation is not None and analysis.recommendation.budget == 2
    page = html.unescape(_summary(analysis, "acc"))
    assert "expected acc at 2 epochs: " in page and full in page
    # Too few for importance, yet the curves come from where TPE looked: it says so.
    assert analysis.importance.empty
    assert "3 of the 3 search trials come from a TPE search" in " ".join(analysis.notes)


def test_a_response_plot_keeps_its_counts_and_legend_off_the_trials(tmp_path: Path,
                                                                    monkeypatch) -> None:
    """The trials' counts per knot sit above the plotting area and the legend beside it:
    inside, they covered the best trial (the one recommended) and other trials."""
    kept = {}

    def keep(fig, path: Path) -> Path:
        kept["figure"] = fig
        return path

    monkeypatch.setattr(plots, "_save", keep)
    x = pd.Series([1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 1e-2])
    points = pd.DataFrame({"x": x, "y": [0.30, 0.34, 0.36, 0.33, 0.29, 0.35],
                           "reached": [2.0, 2, 8, 8, 2, 8]})
    curve = pd.DataFrame({"value": [1e-4, 1e-2], "mean": [0.33, 0.33],
                          "low": [0.30, np.nan], "high": [0.36, np.nan], "n": [4, 2]})
    plots.response_plot(tmp_path / "lr.png", "m", "lr", param_scale(x, None), points, curve,
                        pd.Series(dtype=float), None, noise_floor(pd.Series(dtype=float),
                                                                  pd.Series(dtype=object)),
                        "acc", "max", 2.0, "evaluator")
    figure = kept["figure"]
    figure.canvas.draw()
    renderer = figure.canvas.get_renderer()
    ax = figure.axes[0]
    area = ax.get_window_extent(renderer)
    counts = [t for t in ax.texts if t.get_text().startswith("n=")]
    assert [t.get_text() for t in counts] == ["n=4", "n=2"]
    assert all(t.get_window_extent(renderer).y0 >= area.y1 for t in counts)
    assert not ax.get_legend().get_window_extent(renderer).overlaps(area)


def test_the_studies_whose_trials_tpe_chose_are_told_from_the_others(tmp_path: Path) -> None:
    """A study records its sampler in its parent run's params; one from before there was
    a choice ran TPE; TPE whose random start covers every trial chose none; a parent run
    of another tool records nothing and is not counted."""
    from planted import Trial, create_experiment, write_study

    from analysis.runs import load_experiment, open_experiment
    from tracking import schema

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client, experiment_id = create_experiment(uri, "samplers")
    trial = [Trial("simclr", {"lr": 0.1}, {"knn_acc": {1: 0.5}})]
    samples = {schema.STUDY_PARAM_SAMPLES: "8"}
    parents = {
        name: write_study(client, experiment_id, trial, settings=settings)
        for name, settings in {
            "tpe": {**samples, schema.STUDY_PARAM_SAMPLER: "tpe",
                    schema.STUDY_PARAM_STARTUP: "4"},
            "older": samples,
            "qmc": {**samples, schema.STUDY_PARAM_SAMPLER: "qmc"},
            "all random": {**samples, schema.STUDY_PARAM_SAMPLER: "tpe",
                           schema.STUDY_PARAM_STARTUP: "8"},
            "other tool": {},
        }.items()
    }
    client_, found = open_experiment(uri, "samplers")
    experiment = load_experiment(client_, found, "knn_acc", "max")
    assert experiment.tpe_studies() == {parents["tpe"], parents["older"]}


def test_unfinished_runs_are_left_out_and_counted_neither_failed_nor_scored(
    tmp_path: Path,
) -> None:
    """A study stopped with Ctrl-C, analysed before its --resume: its interrupted runs
    (and any still running) are not failures and not scores, and the report says so."""
    statuses = ["completed"] * 4 + ["interrupted", "running", "failed"]
    runs = pd.DataFrame(
        [{"run_id": f"r{i}", "run_name": f"r{i}", "method": "m", "status": status,
          "failure_reason": "boom" if status == "failed" else None,
          "x": float(i), "seed": 0, "budget": 4.0 if status == "completed" else 2.0,
          "max_budget": 4.0, "final_acc": 0.5 + 0.01 * i, "run_kind": "search",
          "parent_run_id": "p"}
         for i, status in enumerate(statuses)])
    history = pd.DataFrame([{"run_id": f"r{i}", "metric": "acc", "step": 4 if i < 4 else 2,
                             "value": 0.5 + 0.01 * i} for i in range(len(statuses))])
    experiment = Experiment(runs, history, ["x"], ["acc"])
    analysis = analyse_method(experiment, "m", "acc", "max", "4", tmp_path)
    assert len(analysis.failed) == 1
    assert sorted(analysis.usable["run_id"]) == ["r0", "r1", "r2", "r3"]
    assert ("2 run(s) had not finished (still running, or interrupted and waiting for "
            "--resume): left out until they finish") in " ".join(analysis.notes)


def test_a_recommendation_without_varied_parameters_pastes_nothing() -> None:
    """One configuration (or runs that agree on every parameter): before, `{}` to paste
    under the method's search space."""
    from analysis.summary import Recommendation

    lone = Recommendation(params={}, score=0.5, runs=1, budget=2.0, run_name="r",
                          noise=noise_floor(pd.Series(dtype=float), pd.Series(dtype=object)))
    assert lone.yaml("simclr").startswith("# no parameter varies")
    assert "{}" not in lone.yaml("simclr")
