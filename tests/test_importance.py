"""Importance, its interval and permutation null, marginal responses, the noise floor,
budgets and failures, on planted data whose answers are known (no MLflow: fast)."""

from __future__ import annotations

import itertools
import warnings

import numpy as np
import optuna
import pandas as pd
import pytest
from planted import uniform_design

from analysis.budgets import rank_correlations, unpredictive
from analysis.comparison import expected_best
from analysis.failures import failure_rates, reason_group, reasons_table
from analysis.importance import estimate, importance_table
from analysis.noise import NoiseFloor, collapse, configurations, noise_floor
from analysis.response import effects_table, sensitivity_table

DEMO_LIKE = {"temperature": ("log", (0.05, 1.0)), "batch_size": ("categorical", [64, 128, 256]),
             "aug_strength": ("linear", (0.0, 1.0))}
DEMO_SCALES = {"temperature": "log", "batch_size": "categorical", "aug_strength": "linear"}


def _fraction(values: pd.Series, low: float, high: float, log: bool = False) -> np.ndarray:
    """Where each value sits in [low, high], on a log axis if ``log``: 0 to 1."""
    x = np.log10(values) if log else np.asarray(values)
    a, b = (np.log10(low), np.log10(high)) if log else (low, high)
    return (x - a) / (b - a)


def test_log_and_linear_parameters_with_equal_effects_get_equal_importance() -> None:
    """``lr`` (log-uniform on [1e-4, 1e-1]) and ``b`` (uniform on [0, 1]) raise the metric
    by the same amount over their own ranges: equal importance on the search scales,
    while a linear axis would squeeze lr's three decades into its last one."""
    rng = np.random.default_rng(1)
    frame = uniform_design(rng, 60, {"lr": ("log", (1e-4, 1e-1)), "b": ("linear", (0, 1))})
    y = pd.Series(_fraction(frame["lr"], 1e-4, 1e-1, log=True) + frame["b"]
                  + rng.normal(0, 0.05, 60))
    found = estimate(frame, y, {"lr": "log", "b": "linear"})
    lr, b = found.importance
    assert abs(lr - b) < 0.1 and min(lr, b) > 0.35
    assert found.significant.all()
    linear = estimate(frame, y, {"lr": "linear", "b": "linear"}, null=False)
    assert linear.importance[0] < lr - 0.15


def test_pure_noise_flags_nothing_at_the_family_wise_five_percent_level() -> None:
    """12 trials of demo-like parameters whose metric is pure noise: the permutation null
    (family-wise 5%) flags a parameter in about 5% of such experiments, and the shares
    are small instead of summing to 1.

    A procedure calibrated at 5% flags about 1 experiment in 20 and 2 or more in 20 about
    a quarter of the time, so "at least 19 of 20 seeds" is checked as a rate over 100
    seeds: at most 10 flagged (a calibrated procedure exceeds that with probability
    about 1%; its long-run rate here is 3.6% over 2,000 seeds)."""
    flagged, shares, beyond_noise = 0, [], 0
    for seed in range(100):
        rng = np.random.default_rng(seed)
        frame = uniform_design(rng, 12, DEMO_LIKE)
        found = estimate(frame, pd.Series(rng.normal(0.5, 0.02, 12)), DEMO_SCALES, seed=seed)
        flagged += bool(found.significant.any())
        shares.append(found.importance.sum())
        # The range of a noisy response is biased upwards: its interval may lie above the
        # noise floor, but only a significant parameter's effect is said to exceed it.
        effects = effects_table("m", 4.0, found, NoiseFloor(0.02, configs=3, runs=6))
        exceeds = effects["exceeds_noise"] == "true"
        assert not (exceeds & ~found.significant).any(), seed
        beyond_noise += int((effects["low"] > 0.02).sum())
    assert flagged <= 10
    assert beyond_noise > 0  # what the significance requirement guards against
    assert np.median(shares) < 0.4


def test_a_parameter_without_effect_is_not_flagged_for_its_correlation_with_one() -> None:
    """A multivariate TPE search correlates its parameters: ``echo`` follows ``cause``
    (correlation about 0.9) but does nothing, ``cause`` alone moves the metric. Shuffling
    ``echo``'s own column as the null breaks the correlation, so that ``echo`` is flagged
    in about a third of such studies; the null must keep it (Freedman and Lane's), and
    ``echo`` is then flagged in about ALPHA / P of them: at most 2 of 20 here."""
    flagged = 0
    for seed in range(20):
        rng = np.random.default_rng(100 + seed)
        cause = rng.uniform(0, 1, 60)
        frame = pd.DataFrame({"cause": cause,
                              "echo": np.clip(cause + rng.normal(0, 0.16, 60), 0, 1),
                              "other": rng.uniform(0, 1, 60)})
        y = pd.Series(0.3 * cause + rng.normal(0, 0.03, 60))
        found = estimate(frame, y, {p: "linear" for p in frame}, seed=seed)
        assert found.significant[0], seed
        flagged += bool(found.significant[1])
    assert flagged <= 2


def test_a_strong_and_a_weak_effect_are_both_flagged() -> None:
    """Noise of 1, a strong linear effect of 20 and a weak one of 5 over their ranges, and
    a parameter without effect: both effects are significant, the null one is not, and
    the effects are recovered in metric units."""
    rng = np.random.default_rng(2)
    frame = uniform_design(rng, 40, {p: ("linear", (0, 1)) for p in ("strong", "weak", "none")})
    y = pd.Series(20 * frame["strong"] + 5 * frame["weak"] + rng.normal(0, 1, 40))
    found = estimate(frame, y, {p: "linear" for p in frame})
    assert found.significant.tolist() == [True, True, False]
    assert found.importance[0] > found.importance[1] > found.importance[2]
    table = importance_table("m", 8.0, found)
    assert list(table["param"]) == ["strong", "weak", "none"]
    assert (table["low"] <= table["importance"]).all() and (
        table["importance"] <= table["high"]).all()
    # Bins of a fifth of the range: the step function spans 4/5 of each effect.
    strong, weak = found.effect[:2]
    assert 12 < strong < 20 and 2 < weak < 6
    assert found.effect_interval[0, 0] < strong < found.effect_interval[0, 1]


def test_agrees_with_optunas_fanova_on_a_uniform_design() -> None:
    """On a uniform design without interactions, the additive surrogate's shares,
    renormalised, match Optuna's FanovaImportanceEvaluator (a random forest) and the
    true main-effect fractions (0.787 and 0.213)."""
    rng = np.random.default_rng(5)
    frame = uniform_design(rng, 80, {p: ("linear", (0, 1)) for p in "abc"})
    y = 2 * frame["a"] + np.where(frame["b"] > 0.5, 0.6, 0.0) + rng.normal(0, 0.05, 80)
    ours = estimate(frame, pd.Series(y), {p: "linear" for p in "abc"}, null=False).importance
    ours = ours / ours.sum()
    study = optuna.create_study(direction="maximize")
    space = {p: optuna.distributions.FloatDistribution(0.0, 1.0) for p in "abc"}
    for i in range(80):
        study.add_trial(optuna.trial.create_trial(
            params={p: float(frame[p].iloc[i]) for p in "abc"}, distributions=space,
            value=float(y[i])))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        theirs = optuna.importance.get_param_importances(
            study, evaluator=optuna.importance.FanovaImportanceEvaluator(n_trees=32, seed=0))
    for i, p in enumerate("abc"):
        assert abs(ours[i] - theirs[p]) < 0.1, (p, ours[i], theirs[p])
    assert ours[:2] == pytest.approx([0.787, 0.213], abs=0.05)


def test_marginal_response_recovers_a_planted_optimum() -> None:
    """A temperature whose best value is 0.2 (a dip on the log axis) beside a linear
    augmentation effect: the partial dependence peaks in the bin holding 0.2; bins with
    fewer than three trials get no band."""
    rng = np.random.default_rng(3)
    frame = uniform_design(rng, 50, {"temperature": ("log", (0.02, 2.0)),
                                     "aug": ("linear", (0, 1))})
    y = pd.Series(0.6 - 0.1 * (np.log10(frame["temperature"]) - np.log10(0.2)) ** 2
                  + 0.05 * frame["aug"] + rng.normal(0, 0.005, 50))
    found = estimate(frame, y, {"temperature": "log", "aug": "linear"}, null=False)
    table = sensitivity_table("m", found)
    temperature = table[table["param"] == "temperature"].reset_index(drop=True)
    best = temperature.loc[temperature["mean"].idxmax(), "value"]
    assert 0.1 < best < 0.4
    assert temperature["n"].sum() == 50
    sparse = temperature["n"] < 3
    assert temperature.loc[sparse, "low"].isna().all()
    assert temperature.loc[~sparse, "low"].notna().all()


def test_noise_floor_recovers_the_seed_standard_deviation() -> None:
    """Ten configurations run with four seeds each, seed noise 0.02: the pooled standard
    deviation is recovered within 30%, ``seed`` never splits a configuration, and each
    configuration counts once with its mean."""
    rng = np.random.default_rng(4)
    base = uniform_design(rng, 10, {"lr": ("log", (1e-4, 1e-1))})
    runs = base.loc[base.index.repeat(4)].reset_index(drop=True)
    runs["seed"] = np.tile(range(4), 10)
    true = 0.5 + 0.1 * np.log10(runs["lr"])
    y = pd.Series(true + rng.normal(0, 0.02, 40))
    groups = configurations(runs, ["lr"])
    assert groups.nunique() == 10
    floor = noise_floor(y, groups)
    assert (floor.configs, floor.runs) == (10, 40)
    assert floor.std == pytest.approx(0.02, rel=0.3)
    frame, means, counts = collapse(runs, y, groups)
    assert len(frame) == 10 and (counts == 4).all()
    assert means.iloc[0] == pytest.approx(y.iloc[:4].mean())
    assert not noise_floor(y.iloc[::4], groups.iloc[::4]).known


def test_budget_rankings_reversed_at_the_largest_budget_are_flagged() -> None:
    """Configurations that look best after 2 epochs are the worst after 8, while 4
    epochs already rank them as 8 does."""
    rng = np.random.default_rng(6)
    quality = rng.uniform(0, 1, 12)
    runs = pd.DataFrame({"run_id": [f"r{i}" for i in range(12)], "budget": 8.0})
    history = pd.DataFrame(
        [(f"r{i}", "acc", step, value) for i, q in enumerate(quality)
         for step, value in ((2, 0.3 - 0.1 * q), (4, 0.35 + 0.05 * q), (8, 0.5 + 0.2 * q))],
        columns=["run_id", "metric", "step", "value"])
    table = rank_correlations("m", runs, history, "acc", [2.0, 4.0, 8.0])
    rho = table.set_index(["budget_a", "budget_b"])["spearman"]
    assert rho[(2.0, 8.0)] == pytest.approx(-1.0) and rho[(4.0, 8.0)] == pytest.approx(1.0)
    assert (table["n"] == 12).all()
    assert unpredictive(table, 8.0)["budget_a"].tolist() == [2.0]


def test_a_low_correlation_over_few_configurations_is_not_taken_for_a_reversal() -> None:
    """Six configurations ranked 1-6 at 2 epochs and 4 1 5 2 6 3 at 8: Spearman 0.2, but
    over six (ASHA's survivors, say) an interval that reaches well above 0.5: no warning.
    The same disorder over sixty is a clear one."""
    final = [4, 1, 5, 2, 6, 3]

    def table(copies: int) -> pd.DataFrame:
        runs = pd.DataFrame({"run_id": [f"r{i}" for i in range(6 * copies)], "budget": 8.0})
        history = pd.DataFrame(
            [(f"r{i}", "acc", step, value) for i in range(6 * copies)
             for step, value in ((2, i // copies + 0.001 * i),
                                 (8, final[i // copies] + 0.001 * i))],
            columns=["run_id", "metric", "step", "value"])
        return rank_correlations("m", runs, history, "acc", [2.0, 8.0])

    few = table(1).iloc[0]
    assert few["spearman"] == pytest.approx(0.2)
    assert few["spearman_low"] < 0.2 < 0.5 < few["spearman_high"]
    assert unpredictive(table(1), 8.0).empty
    many = table(10).iloc[0]
    assert many["spearman_high"] < 0.5
    assert unpredictive(table(10), 8.0)["budget_a"].tolist() == [2.0]


def test_failures_are_grouped_by_reason_and_located_along_parameters() -> None:
    """Trials diverge at low temperature and run out of memory at the largest batch:
    reasons are grouped despite their different numbers, and the failure rate per bin
    puts the failures where they were planted."""
    rng = np.random.default_rng(7)
    ended = uniform_design(rng, 60, DEMO_LIKE)
    diverged = ended["temperature"] < 0.1
    oom = (ended["batch_size"] == 256) & ~diverged
    ended["failure_reason"] = None
    ended.loc[diverged, "failure_reason"] = [
        f"Traceback...\nNonFiniteLossError: loss became nan at epoch {i % 3 + 1}"
        for i in range(int(diverged.sum()))]
    ended.loc[oom, "failure_reason"] = "RuntimeError: CUDA out of memory. Tried 2.00 GiB"
    failed = diverged | oom
    reasons = reasons_table(ended[failed])
    assert dict(zip(reasons["reason"], reasons["trials"], strict=True)) == {
        "NonFiniteLossError": diverged.sum(), "RuntimeError": oom.sum()}
    assert reason_group("killed after 3600 s") == "killed after # s"
    assert reason_group(None) == "unknown"
    rates = failure_rates("m", ended, failed, DEMO_SCALES)
    assert list(rates.columns) == ["method", "param", "value", "failed", "total"]
    by_batch = rates[rates["param"] == "batch_size"].set_index("value")
    assert by_batch.loc[256, "failed"] == by_batch.loc[256, "total"]
    temperature = rates[rates["param"] == "temperature"].sort_values("value")
    assert temperature["failed"].iloc[0] == temperature["total"].iloc[0] > 0
    assert (temperature["total"].sum(), by_batch["total"].sum()) == (60, 60)


def test_expected_best_of_n_is_exact() -> None:
    """The expected best of n draws without replacement, against every draw."""
    values = np.array([0.3, 0.9, 0.5, 0.7, 0.1])
    for n in range(1, 6):
        draws = list(itertools.combinations(values, n))
        assert expected_best(values, n, "max") == pytest.approx(
            np.mean([max(d) for d in draws]))
        assert expected_best(values, n, "min") == pytest.approx(
            np.mean([min(d) for d in draws]))
    assert np.isnan(expected_best(values, 6, "max"))
