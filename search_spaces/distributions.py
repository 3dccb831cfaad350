"""Search spaces in Optuna's terms: distributions for ``OptunaSearch``, and the
define-by-run space of a cross-method search. The only module of the package that
imports Optuna."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import optuna.distributions as od

from search_spaces.space import METHOD_PARAM, CrossMethodSpace, ParamSpec, SearchSpace


def to_optuna(space: SearchSpace) -> dict[str, od.BaseDistribution]:
    """Optuna distributions under Optuna's names (``one_minus_<name>`` for log1m)."""
    return {space.optuna_name(name): distribution(spec) for name, spec in space.params.items()}


@dataclass(frozen=True)
class DefineByRun:
    """The callable Ray's ``OptunaSearch`` takes as a define-by-run space: the method
    first, then that method's parameters only (a plain dataclass, so the searcher's state
    can be saved and restored)."""

    cross: CrossMethodSpace

    def __call__(self, trial: Any) -> None:
        method = trial.suggest_categorical(METHOD_PARAM, list(self.cross.spaces))
        for name, dist in to_optuna(self.cross.spaces[method]).items():
            suggest(trial, f"{method}.{name}", dist)


def distribution(spec: ParamSpec) -> od.BaseDistribution:
    """The Optuna distribution of one parameter; ``log1m`` becomes a log-uniform
    distribution of ``1 - value``."""
    if spec.type == "categorical":
        return od.CategoricalDistribution(list(spec.choices))
    low, high = float(spec.low), float(spec.high)
    if spec.scale == "log1m":
        return od.FloatDistribution(1.0 - high, 1.0 - low, log=True)
    log = spec.scale == "log"
    if spec.type == "int":
        return od.IntDistribution(int(low), int(high), log=log, step=int(spec.step or 1))
    return od.FloatDistribution(low, high, log=log, step=spec.step)


def suggest(trial: Any, name: str, dist: od.BaseDistribution) -> Any:
    """Ask an Optuna trial for ``name`` drawn from ``dist`` (define-by-run)."""
    if isinstance(dist, od.CategoricalDistribution):
        return trial.suggest_categorical(name, list(dist.choices))
    if isinstance(dist, od.IntDistribution):
        return trial.suggest_int(name, dist.low, dist.high, step=dist.step, log=dist.log)
    return trial.suggest_float(name, dist.low, dist.high, step=dist.step, log=dist.log)
