"""One method's analysis: budgets, noise floor, importance, marginal responses, failures,
the recommended configuration and the figures.

Trials enter as configurations (replicates averaged, see :mod:`analysis.noise`), scored
at one budget (:mod:`analysis.budgets`), each parameter on its search scale
(:mod:`analysis.scales`). Importance is estimated at every budget that enough trials
reached; the figures and the summary use the comparison budget.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd

from analysis import plots
from analysis.budgets import (
    BUDGET_COLUMNS,
    BudgetChoice,
    choose_budget,
    rank_correlations,
    unpredictive,
    values_at_budget,
)
from analysis.failures import FAILURE_COLUMNS, REASON_COLUMNS, failure_rates, reasons_table
from analysis.importance import (
    EVALUATOR,
    IMPORTANCE_COLUMNS,
    MIN_SUPPORT,
    Marginals,
    estimate,
)
from analysis.importance import importance_table as make_importance_table
from analysis.noise import (
    MEASURE_COMMAND,
    NoiseFloor,
    collapse,
    configurations,
    confirmed,
    independent_runs,
    noise_floor,
)
from analysis.response import (
    EFFECT_COLUMNS,
    SENSITIVITY_COLUMNS,
    effects_table,
    heatmap_grid,
    sensitivity_table,
)
from analysis.runs import Experiment
from analysis.scales import FROM_SPACE, INFERRED, Scale, describe, param_scale
from analysis.summary import Recommendation, recommend
from tracking import schema

#: Configurations a marginal response needs when there are too few for importance.
MIN_CURVE_TRIALS = 3
#: The pair of parameters whose heat map is kept wherever a method searches both.
CLASSIC_HEATMAP = ("temperature", "batch_size")
FINISHED = (schema.COMPLETED, schema.STOPPED_EARLY)


@dataclass
class Scored:
    """A method's configurations scored at one budget."""

    budget: float
    #: One row per independent run that reached the budget (the others are counted
    #: below), its score, and its configuration id.
    runs: pd.DataFrame
    y: pd.Series
    groups: pd.Series
    #: One row per configuration (its first run), the mean of its runs, their number and
    #: standard deviation (NaN for a single run).
    frame: pd.DataFrame
    scores: pd.Series
    counts: pd.Series
    stds: pd.Series
    #: Runs that reached the budget and are not among ``runs``: search runs whose
    #: configuration confirmation runs repeat, and runs of a seed their configuration
    #: already ran with (averaged into that run).
    repeated_by_confirmation: int = 0
    same_seed: int = 0


def score(usable: pd.DataFrame, history: pd.DataFrame, metric: str, budget: float,
          params: list[str]) -> Scored:
    """The configurations of ``usable`` (finished runs) at ``budget``, each scored by its
    independent runs (:func:`analysis.noise.independent_runs`)."""
    y = values_at_budget(usable, history, metric, budget)
    y = y[np.isfinite(y.to_numpy(dtype=float))]
    runs = usable.loc[y.index]
    groups = configurations(runs, [p for p in params if p in runs])
    independent = independent_runs(runs, y, groups)
    y = independent.y
    runs, groups = runs.loc[y.index], groups[y.index]
    frame, scores, counts = collapse(runs, y, groups)
    spread = pd.Series(np.asarray(y, dtype=float), index=runs.index).groupby(
        groups.to_numpy()).std()
    stds = pd.Series(spread[groups[frame.index]].to_numpy(), index=frame.index)
    return Scored(budget, runs, y, groups, frame, scores, counts, stds,
                  independent.repeated_by_confirmation, independent.same_seed)


@dataclass
class MethodAnalysis:
    method: str
    #: All runs of the method, finished or not.
    trials: int
    failed: pd.DataFrame
    budget: BudgetChoice | None = None
    scales: dict[str, Scale] = field(default_factory=dict)
    #: param -> where its scale came from (the study's search space, or inferred).
    scale_sources: dict[str, str] = field(default_factory=dict)
    #: Rows of importance.csv at every analysed budget.
    importance: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(
        columns=IMPORTANCE_COLUMNS))
    sensitivity: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(
        columns=SENSITIVITY_COLUMNS))
    effects: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(
        columns=EFFECT_COLUMNS))
    budgets: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(
        columns=BUDGET_COLUMNS))
    reasons: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(
        columns=REASON_COLUMNS))
    failure_rates: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(
        columns=FAILURE_COLUMNS))
    noise: NoiseFloor = field(default_factory=lambda: NoiseFloor(float("nan"), 0, 0))
    recommendation: Recommendation | None = None
    #: The method's finished runs and searched parameters, to score them at other budgets.
    usable: pd.DataFrame | None = None
    params: list[str] = field(default_factory=list)
    #: The configurations at the comparison budget.
    scored: Scored | None = None
    plots: list[Path] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def importance_at_budget(self) -> pd.DataFrame:
        if self.budget is None:
            return self.importance.iloc[0:0]
        return self.importance[self.importance["budget"] == self.budget.budget]


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in text)


def _varying(frame: pd.DataFrame, params: list[str]) -> list[str]:
    """Parameters with a value in every row of ``frame`` and more than one value."""
    return [p for p in params if p in frame and frame[p].notna().all()
            and frame[p].nunique() > 1]


def _searched(frame: pd.DataFrame, params: list[str]) -> list[str]:
    """Parameters that take more than one value in ``frame``, whether or not every row
    has one (a trial that failed before logging its parameters has none)."""
    return [p for p in params if p in frame and frame[p].nunique() > 1]


def analyse_method(
    experiment: Experiment, method: str, metric: str, mode: str, budget_request: str,
    plots_dir: Path,
) -> MethodAnalysis:
    runs = experiment.runs[experiment.runs["method"] == method].set_index("run_id", drop=False)
    ended = runs[runs["status"].isin([*FINISHED, schema.FAILED])]
    failed = runs[runs["status"] == schema.FAILED]
    analysis = MethodAnalysis(method, len(runs), failed)
    spec = experiment.spaces.get(method, {})
    searched = _searched(ended, experiment.params)
    analysis.scales = {p: param_scale(ended[p], spec.get(p)) for p in searched}
    analysis.scale_sources = {p: FROM_SPACE if p in spec else INFERRED for p in searched}
    if not failed.empty:
        analysis.reasons = reasons_table(failed)
        analysis.failure_rates = failure_rates(
            method, ended, ended["status"] == schema.FAILED, analysis.scales)

    unfinished = int(runs["status"].isin([schema.RUNNING, schema.INTERRUPTED]).sum())
    if unfinished:
        analysis.notes.append(
            f"{unfinished} run(s) had not finished (still running, or interrupted and "
            "waiting for --resume): left out until they finish")
    column = f"final_{metric}"
    usable = runs[runs["status"].isin(FINISHED)]
    usable = usable[usable[column].notna()] if column in usable else usable.iloc[0:0]
    if usable.empty:
        analysis.notes.append(f"no finished trial reported {metric}")
        return analysis
    params = _varying(usable, searched)
    for param in searched:
        if param not in params and usable[param].isna().any():
            analysis.notes.append(
                f"{param} is missing from {int(usable[param].isna().sum())} of the "
                f"{len(usable)} finished runs that reported {metric}: left out of importance "
                "and the response curves"
            )
    # Budgets count configurations: a configuration reached a budget when one of its
    # runs did.
    groups = configurations(usable, [p for p in experiment.params if p in usable])
    per_config = usable.groupby(groups.to_numpy())[["budget", "max_budget"]].max()
    budget = choose_budget(per_config, budget_request, len(params))
    scored = score(usable, experiment.history, metric, budget.budget, experiment.params)
    if scored.runs.empty:
        longest = float(usable["budget"].max())
        if longest < budget.budget:  # another method's runs trained that long
            analysis.notes.append(f"no run of {method} trained for {budget.budget:g} epochs "
                                  f"(the longest reached {longest:g}): choose a smaller "
                                  "--budget")
        else:
            # Runs that trained that long but first evaluated later (an evaluation every
            # few epochs): nothing to compare there.
            analysis.notes.append(f"no run reported {metric} at or before "
                                  f"{budget.budget:g} epochs: choose a larger --budget")
        return analysis
    analysis.budget, analysis.usable, analysis.params = budget, usable, params
    analysis.scored = scored
    analysis.noise = noise_floor(scored.y, scored.groups)
    analysis.recommendation = _at_full_budget(
        _recommend(scored, params, mode, analysis.noise), usable, experiment.history, metric,
        budget.full_budget)
    _budget_notes(analysis, len(params))

    marginals = _importance(analysis, experiment, metric)
    _sampler_note(analysis, experiment)
    if marginals is not None:
        analysis.sensitivity = sensitivity_table(method, marginals)
        analysis.effects = effects_table(method, budget.budget, marginals, analysis.noise)
    largest = float(usable["budget"].max())
    analysis.budgets = rank_correlations(method, usable, experiment.history, metric,
                                         [*budget.analysed, largest], groups)
    for _, row in unpredictive(analysis.budgets, largest).iterrows():
        analysis.warnings.append(
            f"the ranking at {row['budget_a']:g} epochs does not predict the ranking at "
            f"{largest:g} epochs (Spearman {row['spearman']:.2f}, 95% interval "
            f"{row['spearman_low']:.2f} to {row['spearman_high']:.2f}, over "
            f"{int(row['n'])} configurations): configurations judged at the lower budget "
            "may not be the best at the largest"
        )
    _plots(analysis, marginals, metric, mode, plots_dir)
    return analysis


def _recommend(scored: Scored, params: list[str], mode: str, noise: NoiseFloor
               ) -> Recommendation | None:
    """The best configuration, among the confirmed ones where there are any (their
    fresh seeds score them free of the luck that ranked the others), with the ids of its
    independent runs."""
    candidates = confirmed(scored.frame)
    among = int(candidates.sum())
    if not among:
        candidates = pd.Series(True, index=scored.frame.index)
    chosen = recommend(scored.frame[candidates], scored.scores[candidates],
                       scored.counts[candidates], params, mode, scored.budget, noise)
    if chosen is None:
        return None
    members = scored.groups.index[scored.groups == scored.groups[chosen.run_id]]
    return replace(chosen, run_ids=tuple(map(str, members)), among_confirmed=among)


def _at_full_budget(recommendation: Recommendation | None, usable: pd.DataFrame,
                    history: pd.DataFrame, metric: str, full_budget: float
                    ) -> Recommendation | None:
    """The recommendation with what its configuration's runs scored at the full budget,
    when it was chosen at a lower one."""
    if recommendation is None or recommendation.budget >= full_budget:
        return recommendation
    y = values_at_budget(usable.loc[list(recommendation.run_ids)], history, metric,
                         full_budget)
    y = y[np.isfinite(y.to_numpy(dtype=float))]
    return replace(recommendation, full_budget=full_budget,
                   full_score=float(y.mean()) if len(y) else None, full_runs=len(y))


def _budget_notes(analysis: MethodAnalysis, n_params: int) -> None:
    budget = analysis.budget
    assert budget is not None and analysis.scored is not None
    analysis.notes.append(
        f"{budget.reached_full} of {budget.eligible} finished configurations reached the "
        f"full budget of {budget.full_budget:g} epochs. Figures and the summary compare the "
        f"{budget.at_budget} configurations ({len(analysis.scored.runs)} runs) that reached "
        f"{budget.budget:g} epochs, each scored at that budget."
    )
    if budget.fallback:
        analysis.notes.append(
            f"importance over {n_params} searched parameters needs {budget.needed} "
            "configurations at one budget (2 per parameter, at least 6), and no budget "
            "was reached by that many: compared at the budget every trial reached, "
            "without importance"
        )
    scored = analysis.scored
    if scored.repeated_by_confirmation:
        analysis.notes.append(
            f"{scored.repeated_by_confirmation} earlier run(s) of configurations that "
            "confirmation runs repeat are left out of their scores and the seed noise at "
            f"{budget.budget:g} epochs: the fresh seeds stand in for them (the best were "
            "chosen for their scores, which would bias both upward)"
        )
    if analysis.recommendation is not None and analysis.recommendation.among_confirmed:
        analysis.notes.append(
            "the recommendation is chosen among the "
            f"{analysis.recommendation.among_confirmed} configuration(s) that confirmation "
            f"runs score at {budget.budget:g} epochs"
        )
    if scored.same_seed:
        analysis.notes.append(
            f"{scored.same_seed} run(s) repeat a configuration with a seed it already ran "
            f"with at {budget.budget:g} epochs: averaged with that run and counted as one "
            "seed"
        )
    if analysis.noise.known:
        analysis.notes.append(
            f"seed noise: {analysis.noise.std:.3g} (1 std, pooled over "
            f"{analysis.noise.configs} configurations run with several seeds, "
            f"{analysis.noise.runs} runs)"
        )
    else:
        analysis.notes.append(
            "seed noise unknown: no configuration of this method was run with more than "
            f"one seed. Confirmation runs measure it: `{MEASURE_COMMAND}` runs the best "
            "configurations again with fresh seeds"
        )


def _sampler_note(analysis: MethodAnalysis, experiment: Experiment) -> None:
    """Say so when the method's search trials come from TPE searches: TPE samples where
    scores were high and leaves the rest of the space thin, which costs the analysis
    power (``benchmarks/sampler_power.py``), not its level; the response curves too are
    thin where TPE did not look, with importance or without."""
    assert analysis.usable is not None
    searched = analysis.usable[analysis.usable["run_kind"] == schema.KIND_SEARCH]
    by_tpe = int(searched["parent_run_id"].isin(experiment.tpe_studies()).sum())
    if by_tpe:
        analysis.notes.append(
            f"{by_tpe} of the {len(searched)} search trials come from a TPE search, which "
            "samples where scores were high: the null keeps its level, but a real effect "
            "is found less often than over trials that fill the space, and the response "
            "curves are thin where TPE did not look (planted searches "
            "of 24 trials: an effect of 2.5 seed-noise standard deviations was found by "
            "6.5% of TPE searches and 22% of QMC ones, whose best trials were as good). For "
            "a sensitivity study, search with search.sampler: qmc"
        )


def _importance(
    analysis: MethodAnalysis, experiment: Experiment, metric: str
) -> Marginals | None:
    """Importance at every analysed budget (and at the comparison budget, if it has
    enough trials); the marginals at the comparison budget, also when it has too few
    trials for importance but enough for a response curve."""
    budget = analysis.budget
    assert budget is not None and analysis.usable is not None and analysis.scored is not None
    wanted = set(budget.analysed)
    if budget.at_budget >= budget.needed:
        wanted.add(budget.budget)
    tables, chosen = [], None
    for b in sorted(wanted):
        scored = analysis.scored if b == budget.budget else score(
            analysis.usable, experiment.history, metric, b, experiment.params)
        params = _varying(scored.frame, analysis.params)
        if len(scored.frame) < budget.needed or not params:
            continue
        marginals = estimate(scored.frame, scored.scores,
                             {p: analysis.scales[p] for p in params})
        tables.append(make_importance_table(analysis.method, b, marginals))
        if b == budget.budget:
            chosen = marginals
    if tables:
        analysis.importance = pd.concat(tables, ignore_index=True)
    if chosen is None:
        frame = analysis.scored.frame
        params = _varying(frame, analysis.params)
        if len(frame) >= MIN_CURVE_TRIALS and params:
            chosen = estimate(frame, analysis.scored.scores,
                              {p: analysis.scales[p] for p in params}, null=False)
            analysis.notes.append(
                f"{len(frame)} configurations at {budget.budget:g} epochs, too few for "
                f"importance ({budget.needed}): the curves below are drawn without ranking "
                "any parameter, their bands are wide, and a value tried by fewer than "
                f"{MIN_SUPPORT} configurations has none"
            )
        else:
            analysis.notes.append(
                f"{len(frame)} configurations at {budget.budget:g} epochs: too few for "
                "marginal responses"
            )
    return chosen


def _heatmap_pairs(analysis: MethodAnalysis, frame: pd.DataFrame) -> list[tuple[str, str]]:
    """The two most important parameters, and temperature x batch size wherever the
    method's trials have both."""
    ranked = analysis.importance_at_budget.sort_values("importance", ascending=False)
    pairs = []
    top = [p for p in ranked["param"] if p in analysis.scales][:2]
    if len(top) == 2:
        pairs.append((top[0], top[1]))
    if all(p in frame and frame[p].notna().all() for p in CLASSIC_HEATMAP) and set(
            CLASSIC_HEATMAP) != set(top):
        pairs.append(CLASSIC_HEATMAP)
    return pairs


def _plots(
    analysis: MethodAnalysis, marginals: Marginals | None, metric: str, mode: str,
    plots_dir: Path,
) -> None:
    budget, scored = analysis.budget, analysis.scored
    assert budget is not None and scored is not None
    method = analysis.method
    stem = _slug(method)
    importance = analysis.importance_at_budget
    if not importance.empty:
        analysis.plots.append(plots.importance_plot(
            plots_dir / f"{stem}_importance.png", method, importance, budget.budget,
            EVALUATOR))
    if analysis.importance["budget"].nunique() > 1:
        analysis.plots.append(plots.importance_by_budget(
            plots_dir / f"{stem}_importance_by_budget.png", method, analysis.importance,
            EVALUATOR))
    for param in analysis.params:
        curve = None
        if marginals is not None and param in marginals.params:
            curve = analysis.sensitivity[analysis.sensitivity["param"] == param]
        points = pd.DataFrame({"x": scored.runs[param], "y": scored.y,
                               "reached": scored.runs["budget"]})
        failed_x = analysis.failed[param] if param in analysis.failed else pd.Series(
            dtype=float)
        rates = analysis.failure_rates
        failures = rates[rates["param"] == param] if not rates.empty else None
        analysis.plots.append(plots.response_plot(
            plots_dir / f"{stem}_{_slug(param)}.png", method, param, analysis.scales[param],
            points, curve, failed_x, failures, analysis.noise, metric, mode, budget.budget,
            EVALUATOR))
    frame = scored.frame
    for pair in _heatmap_pairs(analysis, frame):
        rows, columns = ((p, analysis.scales.get(p) or param_scale(frame[p], None))
                         for p in pair)
        grid, counts = heatmap_grid(frame, scored.scores, rows, columns)
        analysis.plots.append(plots.heatmap(
            plots_dir / f"{stem}_heatmap_{_slug(pair[0])}_{_slug(pair[1])}.png", method,
            grid, counts, rows, columns, metric, mode, budget.budget, analysis.noise))


def scales_table(analysis: MethodAnalysis) -> pd.DataFrame:
    """Each searched parameter's scale and where it came from."""
    return pd.DataFrame(
        [{"param": p, "scale": describe(s), "from": analysis.scale_sources[p]}
         for p, s in analysis.scales.items()],
        columns=["param", "scale", "from"],
    )
