"""Every method's search in one Tuner: a searcher and a scheduler that keep the methods'
searches apart while their trials share the cluster's slots.

Ray supports one Tuner at a time on a cluster, so a study that ran one Tuner per method, one
after the other, left slots idle at the end of each method's search (ASHA's last rungs
run alone) and started fresh trial processes for every method. Here a study of several
methods runs one Tuner whose trials come from each method's own search in turn: each
method keeps its Optuna study and sampler (:class:`PerMethodSearch`) and its own ASHA
rungs (:class:`PerMethodScheduler`: a MoCo trial is only ever compared with MoCo trials).
What changes is timing: a method has fewer of its own trials in flight at once, so TPE
suggests from a history that differs in order, not in kind. A cross-method search
(``search.cross_method``) is the other way: one Optuna study and one set of rungs across
methods.

A trial's config names its method under ``METHOD_PARAM`` and its own parameters as
``<method>.<parameter>``, the form of a cross-method search, so both run the same trial,
progress and summary code.
"""

from __future__ import annotations

import pickle
from collections import Counter
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from ray.tune.schedulers import AsyncHyperBandScheduler, FIFOScheduler
from ray.tune.search import Searcher

from search_spaces import METHOD_PARAM

if TYPE_CHECKING:
    from ray.tune.execution.tune_controller import TuneController
    from ray.tune.experiment import Trial


class PerMethodSearch(Searcher):
    """Hands each new trial to the method with the fewest trials so far (the config's
    order breaks ties) until every method has ``trials_per_method``; results and ends go
    back to the searcher that suggested the trial.

    Balancing by count keeps every method's search moving when the slots are few: with
    two slots and two methods, each method has a trial running most of the time, and a
    method's last rungs overlap the other's trials.
    """

    def __init__(
        self, searchers: Mapping[str, Searcher], trials_per_method: int, metric: str, mode: str
    ) -> None:
        super().__init__(metric=metric, mode=mode)
        self._searchers = dict(searchers)
        self._trials_per_method = trials_per_method
        #: Tune trial id -> the method whose searcher suggested it.
        self._method_of_trial: dict[str, str] = {}
        self._suggested: Counter[str] = Counter()
        #: Methods whose searcher said it has nothing more to suggest.
        self._exhausted: set[str] = set()

    def suggest(self, trial_id: str) -> dict | str | None:
        while True:
            open_methods = [m for m in self._searchers if m not in self._exhausted
                            and self._suggested[m] < self._trials_per_method]
            if not open_methods:
                return Searcher.FINISHED
            method = min(open_methods, key=lambda m: self._suggested[m])  # first on ties
            suggestion = self._searchers[method].suggest(trial_id)
            if suggestion == Searcher.FINISHED:
                self._exhausted.add(method)
                continue
            if suggestion is None:  # not ready; Tune asks again later
                return None
            self._method_of_trial[trial_id] = method
            self._suggested[method] += 1
            return {METHOD_PARAM: method,
                    **{f"{method}.{k}": v for k, v in suggestion.items()}}

    def _searcher_of(self, trial_id: str) -> Searcher | None:
        method = self._method_of_trial.get(trial_id)
        return None if method is None else self._searchers[method]

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        searcher = self._searcher_of(trial_id)
        if searcher is not None:
            searcher.on_trial_result(trial_id, result)

    def on_trial_complete(
        self, trial_id: str, result: dict | None = None, error: bool = False
    ) -> None:
        searcher = self._searcher_of(trial_id)
        if searcher is not None:
            searcher.on_trial_complete(trial_id, result=result, error=error)

    def save(self, checkpoint_path: str) -> None:
        # Tune saves the searcher's state with the experiment's (a resumed study goes on
        # from it); the method searchers' own state travels inside.
        with open(checkpoint_path, "wb") as file:
            pickle.dump(self.__dict__, file)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "rb") as file:
            self.__dict__.update(pickle.load(file))


class PerMethodScheduler(FIFOScheduler):
    """One ASHA per method, each seeing only its method's trials; trials start in the
    order they were suggested (ASHA's own choice of the next trial)."""

    def __init__(
        self, make_scheduler: Callable[[], AsyncHyperBandScheduler], methods: list[str]
    ) -> None:
        super().__init__()
        self._schedulers = {method: make_scheduler() for method in methods}

    def set_search_properties(self, metric: str | None, mode: str | None, **spec: Any) -> bool:
        super().set_search_properties(metric, mode, **spec)
        # A list, not a generator: every method's scheduler must be told.
        return all([s.set_search_properties(metric, mode, **spec)
                    for s in self._schedulers.values()])

    def _scheduler_of(self, trial: Trial) -> AsyncHyperBandScheduler:
        return self._schedulers[trial.config[METHOD_PARAM]]

    def on_trial_add(self, tune_controller: TuneController, trial: Trial) -> None:
        self._scheduler_of(trial).on_trial_add(tune_controller, trial)

    def on_trial_error(self, tune_controller: TuneController, trial: Trial) -> None:
        self._scheduler_of(trial).on_trial_error(tune_controller, trial)

    def on_trial_result(self, tune_controller: TuneController, trial: Trial, result: dict) -> str:
        return self._scheduler_of(trial).on_trial_result(tune_controller, trial, result)

    def on_trial_complete(self, tune_controller: TuneController, trial: Trial,
                          result: dict) -> None:
        self._scheduler_of(trial).on_trial_complete(tune_controller, trial, result)

    def on_trial_remove(self, tune_controller: TuneController, trial: Trial) -> None:
        self._scheduler_of(trial).on_trial_remove(tune_controller, trial)

    def debug_string(self) -> str:
        return "\n".join(f"{m}: {s.debug_string()}" for m, s in self._schedulers.items())
