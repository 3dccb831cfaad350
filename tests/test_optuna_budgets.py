"""The searcher tells Optuna each trial's budget: learning curves as intermediate values at
their epochs, ASHA-stopped trials PRUNED, finished ones COMPLETE at the full budget, a
non-finite metric FAIL. Driven the way Tune drives it, without starting Ray (the real
study is in test_study.py)."""

from __future__ import annotations

import math

import optuna

from study.tuner import LinkedOptunaSearch
from tracking.runs import TrackingTarget

State = optuna.trial.TrialState


def test_optuna_trials_carry_budgets_and_end_in_the_state_asha_left_them() -> None:
    searcher = LinkedOptunaSearch(
        space={"x": optuna.distributions.FloatDistribution(0.0, 1.0)}, metric="knn_acc",
        mode="max", sampler=optuna.samplers.RandomSampler(seed=0),
        target=TrackingTarget("sqlite:///unused.db", "0"), max_budget=4,
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
