"""The searcher tells Optuna each trial's budget: learning curves as intermediate values at
their epochs, ASHA-stopped trials PRUNED, finished ones COMPLETE at the full budget, a
non-finite metric FAIL. Driven the way Tune drives it, without starting Ray (the real
study is in test_study.py)."""

from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace

import optuna
from mlflow.tracking import MlflowClient

from study.config import SearchConfig, load_config
from study.tuner import LinkedOptunaSearch, _summarise, make_sampler
from tracking import schema
from tracking.runs import TrackingTarget, start_study_run

State = optuna.trial.TrialState
CONFIGS = Path(__file__).resolve().parent.parent / "configs"


def _target(tmp: Path) -> tuple[TrackingTarget, dict[str, str]]:
    """A study's parent run with one child run per Tune trial, as trials create them."""
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    target = start_study_run(uri, "linked", "linked", {}, {}, ("knn_acc", "max"))
    client = MlflowClient(uri)
    runs = {trial_id: client.create_run(target.experiment_id, tags={
        schema.TAG_TRIAL_ID: trial_id, schema.TAG_PARENT_RUN: target.parent_run_id,
    }).info.run_id for trial_id in ("full", "stopped", "diverged")}
    return target, runs


def test_optuna_trials_carry_budgets_and_end_in_the_state_asha_left_them(tmp_path) -> None:
    target, run_ids = _target(tmp_path)
    searcher = LinkedOptunaSearch(
        space={"x": optuna.distributions.FloatDistribution(0.0, 1.0)}, metric="knn_acc",
        mode="max", sampler=optuna.samplers.RandomSampler(seed=0),
        target=target, max_budget=4, study_attrs={"config": {"name": "linked"}},
    )
    for trial_id in ("full", "stopped", "diverged"):
        searcher.suggest(trial_id)
    # Tune calls on_trial_result for the results the scheduler lets pass; the result at
    # which ASHA stops a trial (at a rung, or at max_t) comes only with on_trial_complete.
    for epoch, value in ((1, 0.1), (2, 0.2), (3, 0.3)):
        searcher.on_trial_result("full", {"knn_acc": value, "epoch": epoch})
    searcher.on_trial_result("full", {"knn_acc": 0.31, "epoch": 3})  # retrained on resume
    searcher.on_trial_complete("full", {"knn_acc": 0.45, "epoch": 4})
    searcher.on_trial_result("stopped", {"knn_acc": 0.05, "epoch": 1})
    searcher.on_trial_complete("stopped", {"knn_acc": 0.08, "epoch": 2})
    searcher.on_trial_complete("diverged", {"knn_acc": math.nan, "epoch": 1})
    searcher.on_trial_complete("stopped", {"knn_acc": 0.08, "epoch": 2})  # told once

    trials = {t.user_attrs["tune_trial_id"]: t for t in searcher._ot_study.trials}
    full, stopped, diverged = trials["full"], trials["stopped"], trials["diverged"]
    assert full.state == State.COMPLETE and full.value == 0.45
    assert full.intermediate_values == {1: 0.1, 2: 0.2, 3: 0.3, 4: 0.45}
    assert stopped.state == State.PRUNED and stopped.intermediate_values == {1: 0.05, 2: 0.08}
    assert stopped.value == 0.08  # Optuna keeps a pruned trial's last intermediate value
    assert diverged.state == State.FAIL and diverged.user_attrs["failure_reason"] == (
        "knn_acc is nan")
    # Each Optuna trial names its MLflow run and the budget it reached; the study its
    # config and where its runs are.
    for trial_id, trial in trials.items():
        assert trial.user_attrs["mlflow_run_id"] == run_ids[trial_id]
    assert (full.user_attrs["budget"], stopped.user_attrs["budget"]) == (4, 2)
    study = searcher._ot_study
    assert study.user_attrs["config"] == {"name": "linked"}
    assert study.user_attrs["mlflow_parent_run_id"] == target.parent_run_id


def test_the_best_of_a_method_is_taken_at_the_full_budget_only() -> None:
    """A trial ASHA stopped reports a value after fewer epochs: with a loss to minimise, an
    early value is often the lowest, and must not be named the method's best."""
    config = load_config(CONFIGS / "demo.yaml")
    config = config.model_copy(update={
        "search": config.search.model_copy(update={"mode": "min"}),
        "train": config.train.model_copy(update={"epochs": 4}),
    })
    objective = config.objective
    results = [
        SimpleNamespace(error=None, config={"x": "full"},
                        metrics={schema.EPOCH: 4, objective: 0.40}),
        SimpleNamespace(error=None, config={"x": "stopped"},
                        metrics={schema.EPOCH: 1, objective: 0.10}),
        SimpleNamespace(error=RuntimeError("boom"), config={"x": "failed"},
                        metrics={schema.EPOCH: 4, objective: 0.05}),
    ]
    outcome = _summarise(results, "simclr", lambda c: dict(c), config)
    assert (outcome.completed, outcome.stopped_early, outcome.failed) == (1, 1, 1)
    assert outcome.best_value == 0.40 and outcome.best_params == {"x": "full"}


def test_qmc_trials_fill_every_parameter_s_range_evenly(tmp_path) -> None:
    """search.sampler: qmc. Tune asks for trials while earlier ones still run: after the
    first (random: Optuna learns the space from it), 8 trials put one value in each
    eighth of every parameter's search scale (log10 for a log parameter), which 8 random
    draws do with probability 8!/8^8 per parameter (0.24%)."""
    target, _ = _target(tmp_path)
    space = {"lr": optuna.distributions.FloatDistribution(1e-4, 1e-1, log=True),
             "temperature": optuna.distributions.FloatDistribution(0.05, 1.0, log=True),
             "aug_strength": optuna.distributions.FloatDistribution(0.2, 1.0)}
    searcher = LinkedOptunaSearch(
        space=space, metric="knn_acc", mode="max",
        sampler=make_sampler(SearchConfig(sampler="qmc"), seed=3),
        target=target, max_budget=4, study_attrs={},
    )
    suggested = [searcher.suggest(f"t{i}") for i in range(9)]
    for name, dist in space.items():
        scale = math.log10 if dist.log else (lambda v: v)
        low, high = scale(dist.low), scale(dist.high)
        eighths = sorted(int(8 * (scale(s[name]) - low) / (high - low)) for s in suggested[1:])
        assert eighths == list(range(8)), (name, eighths)
