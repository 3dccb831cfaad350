"""Every method's search in one Tuner: the searcher hands trials to the methods in turn
and routes what comes back to the searcher that suggested the trial; the scheduler keeps
one set of ASHA rungs per method, which a restored experiment keeps. Planted trials; one
small Ray session for the restore."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import ray
from ray import tune
from ray.tune.schedulers import ASHAScheduler, TrialScheduler
from ray.tune.search import Searcher

from search_spaces import METHOD_PARAM
from study.per_method import PerMethodScheduler, PerMethodSearch


class CountingSearcher(Searcher):
    """Suggests ``{"n": <how many it suggested before>}`` and records what reaches it."""

    def __init__(self) -> None:
        super().__init__(metric="acc", mode="max")
        self.suggested = 0
        self.results: list[tuple[str, dict]] = []
        self.completed: list[tuple[str, bool]] = []

    def suggest(self, trial_id: str) -> dict:
        self.suggested += 1
        return {"n": self.suggested - 1}

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        self.results.append((trial_id, result))

    def on_trial_complete(self, trial_id: str, result: dict | None = None,
                          error: bool = False) -> None:
        self.completed.append((trial_id, error))


def _search(trials_per_method: int = 3) -> tuple[PerMethodSearch, dict[str, CountingSearcher]]:
    inner = {"simclr": CountingSearcher(), "moco": CountingSearcher()}
    return PerMethodSearch(inner, trials_per_method, "acc", "max"), inner


def test_methods_take_turns_until_each_has_its_trials() -> None:
    search, inner = _search(trials_per_method=3)
    suggestions = [search.suggest(f"t{i}") for i in range(7)]
    assert [s[METHOD_PARAM] for s in suggestions[:6]] == ["simclr", "moco"] * 3
    assert suggestions[6] == Searcher.FINISHED
    # Each method's own parameters, under the names of a cross-method suggestion.
    assert suggestions[2] == {METHOD_PARAM: "simclr", "simclr.n": 1}
    assert suggestions[3] == {METHOD_PARAM: "moco", "moco.n": 1}
    assert inner["simclr"].suggested == inner["moco"].suggested == 3


def test_results_and_ends_reach_the_searcher_that_suggested_the_trial() -> None:
    search, inner = _search()
    search.suggest("a")
    search.suggest("b")
    search.on_trial_result("b", {"acc": 0.5})
    search.on_trial_complete("a", {"acc": 0.7})
    search.on_trial_complete("b", error=True)
    search.on_trial_complete("unknown", {"acc": 0.1})  # a trial no searcher suggested
    assert inner["simclr"].results == [] and inner["simclr"].completed == [("a", False)]
    assert inner["moco"].results == [("b", {"acc": 0.5})]
    assert inner["moco"].completed == [("b", True)]


def test_a_method_that_runs_faster_does_not_take_the_others_trials() -> None:
    """Turns go by trials suggested, not by trials finished: a method whose trials end
    sooner (or are stopped early) still gets only its share."""
    search, _ = _search(trials_per_method=2)
    search.suggest("s0")
    search.suggest("m0")
    search.on_trial_complete("s0", {"acc": 0.1})
    search.on_trial_complete("m0", {"acc": 0.1})
    assert search.suggest("s1")[METHOD_PARAM] == "simclr"
    search.on_trial_complete("s1", {"acc": 0.1})
    assert search.suggest("m1")[METHOD_PARAM] == "moco"
    assert search.suggest("x") == Searcher.FINISHED


class ExhaustedSearcher(CountingSearcher):
    """A searcher with nothing left to suggest (a finite space, say)."""

    def suggest(self, trial_id: str) -> str:
        return Searcher.FINISHED


def test_a_method_whose_searcher_is_done_leaves_the_trials_to_the_others() -> None:
    search = PerMethodSearch({"simclr": ExhaustedSearcher(), "moco": CountingSearcher()},
                             2, "acc", "max")
    assert [search.suggest(t)[METHOD_PARAM] for t in ("a", "b")] == ["moco", "moco"]
    assert search.suggest("c") == Searcher.FINISHED


def test_a_restored_search_goes_on_where_it_was(tmp_path: Path) -> None:
    search, _ = _search(trials_per_method=2)
    for trial_id in ("s0", "m0", "s1"):
        search.suggest(trial_id)
    search.save(str(tmp_path / "searcher.pkl"))
    restored, _ = _search(trials_per_method=2)
    restored.restore(str(tmp_path / "searcher.pkl"))
    # The method searchers' own state came back too: moco's next suggestion is its second.
    assert restored.suggest("m1") == {METHOD_PARAM: "moco", "moco.n": 1}
    assert restored.suggest("x") == Searcher.FINISHED


@dataclass
class PlantedTrial:
    trial_id: str
    method: str
    config: dict[str, Any] = field(init=False)

    def __post_init__(self) -> None:
        self.config = {METHOD_PARAM: self.method}


def _asha() -> ASHAScheduler:
    return ASHAScheduler(time_attr="epoch", max_t=4, grace_period=1, reduction_factor=2)


def _first_rung(scheduler: TrialScheduler, planted: list[tuple[str, str, float]]) -> dict:
    """Each planted trial (id, method, accuracy) reports epoch 1 in turn; the decisions."""
    scheduler.set_search_properties("acc", "max")
    decisions = {}
    for trial_id, method, acc in planted:
        trial = PlantedTrial(trial_id, method)
        scheduler.on_trial_add(None, trial)
        decisions[trial_id] = scheduler.on_trial_result(None, trial, {"epoch": 1, "acc": acc})
    return decisions


PLANTED = [("s1", "simclr", 0.9), ("s2", "simclr", 0.8), ("m1", "moco", 0.3),
           ("m2", "moco", 0.2)]


def test_asha_compares_a_trial_only_with_its_own_method() -> None:
    """MoCo scores below SimCLR here: one set of rungs across both stops MoCo's best trial
    at the first rung, the per-method rungs let it go on and stop MoCo's worse trial."""
    shared = _first_rung(_asha(), PLANTED)
    assert shared["m1"] == TrialScheduler.STOP
    per_method = _first_rung(PerMethodScheduler(_asha, ["simclr", "moco"]), PLANTED)
    assert per_method == {"s1": TrialScheduler.CONTINUE, "s2": TrialScheduler.STOP,
                          "m1": TrialScheduler.CONTINUE, "m2": TrialScheduler.STOP}


@pytest.fixture(scope="module")
def ray_instance():
    ray.init(address="local", include_dashboard=False, num_cpus=2, logging_level="WARNING")
    yield
    ray.shutdown()


@pytest.mark.slow
def test_a_resumed_experiment_stops_trials_against_the_rungs_it_had(ray_instance,
                                                                      tmp_path: Path) -> None:
    """Ray saves no scheduler: the study's callback carries the rungs across a restore.
    Trial a0 reaches the first rung with 0.9; a1 fails before reporting, and is run again
    after the experiment is restored, reaching the rung with 0.1: against a0's 0.9 it is
    stopped there; with an empty rung it would have trained to the full budget."""
    from study.tuner import KeepSchedulerState

    marker = tmp_path / "a1-failed-once"

    def trainable(config: dict) -> None:
        if config["a.x"] < 0.5 and not marker.exists():
            marker.touch()
            raise RuntimeError("planted failure before the first report")
        for epoch in range(1, 5):
            tune.report({"epoch": epoch, "acc": config["a.x"]})

    scheduler = PerMethodScheduler(_asha, ["a"])
    tuner = tune.Tuner(
        trainable,
        param_space={METHOD_PARAM: "a", "a.x": tune.grid_search([0.9, 0.1])},
        tune_config=tune.TuneConfig(scheduler=scheduler, metric="acc", mode="max",
                                    max_concurrent_trials=1),
        run_config=tune.RunConfig(name="rungs", storage_path=str(tmp_path / "ray"),
                                  callbacks=[KeepSchedulerState(scheduler)], verbose=0),
    )
    first = tuner.fit()
    assert sorted(r.error is not None for r in first) == [False, True]
    restored = tune.Tuner.restore(str(tmp_path / "ray" / "rungs"), trainable=trainable,
                                  restart_errored=True)
    epochs = {r.config["a.x"]: r.metrics["epoch"] for r in restored.fit()}
    assert epochs == {0.9: 4, 0.1: 1}
