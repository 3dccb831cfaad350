"""sampler-power: how often the sensitivity analysis finds a real effect, and flags one
that is not there, over trials chosen by each of the study's samplers.

Planted searches, no training: four parameters on the search scales of the demo's
(learning rate, temperature and weight decay on log10, augmentation strength linear,
over wider ranges than its defaults); the
learning rate alone moves the score, by a concave response whose range is ``--effect``
seed-noise standard deviations (peak at 10^-2.2, as a learning rate would), with normal
noise of one standard deviation on every trial. Each search asks the sampler that
``search.sampler`` builds (``study.tuner.make_sampler``, TPE with its default random
start) for ``--trials`` trials one after the other and tells it each score, as the
searcher does without early stopping; then the analysis's importance with its
permutation null (``analysis.importance.estimate``) runs on the trials, as the report
runs it at one budget.

Per sampler it prints in how many searches the learning rate was significant (power),
in how many any of the three others was (false alarms: the null's family-wise level,
5% over the four), and the regret of the trial that scored best: how far its true
score lies below the optimum, in noise standard deviations (what a sampler buys for
the recommendation).

    python -m benchmarks.sampler_power [--trials 24] [--searches 200] [--effect 2.5]
"""

from __future__ import annotations

import argparse
import logging
import math

import numpy as np
import optuna
import pandas as pd

from analysis.importance import estimate
from study.config import SearchConfig
from study.tuner import make_sampler

#: name -> (search scale, low, high).
SPACE = {"lr": ("log", 1e-4, 1e-1), "temperature": ("log", 0.05, 1.0),
         "aug_strength": ("linear", 0.2, 1.0), "weight_decay": ("log", 1e-6, 1e-3)}
SAMPLERS = ("tpe", "qmc", "random")
#: Where the learning rate's response peaks, as a fraction of its log10 range.
PEAK = 0.6


def planted_response(lr: float, effect: float) -> float:
    """The true score over the noise, in noise standard deviations: 0 at the worst end of
    the learning rate's range, ``effect`` at the peak."""
    low, high = math.log10(SPACE["lr"][1]), math.log10(SPACE["lr"][2])
    x = (math.log10(lr) - low) / (high - low)
    worst = max(PEAK, 1 - PEAK) ** 2
    return effect * (1 - (x - PEAK) ** 2 / worst)


def one_search(sampler: str, trials: int, effect: float, seed: int
               ) -> tuple[bool, bool, float]:
    """(effect found, a null parameter flagged, regret of the best-scoring trial)."""
    rng = np.random.default_rng(seed)
    study = optuna.create_study(direction="maximize",
                                sampler=make_sampler(SearchConfig(sampler=sampler), seed))
    rows, scores, truths = [], [], []
    for _ in range(trials):
        trial = study.ask()
        values = {name: trial.suggest_float(name, low, high, log=scale == "log")
                  for name, (scale, low, high) in SPACE.items()}
        truth = planted_response(values["lr"], effect)
        score = truth + rng.normal()
        study.tell(trial, score)
        rows.append(values)
        scores.append(score)
        truths.append(truth)
    found = estimate(pd.DataFrame(rows), pd.Series(scores),
                     {name: scale for name, (scale, _, _) in SPACE.items()}, seed=seed)
    regret = effect - truths[int(np.argmax(scores))]
    return bool(found.significant[0]), bool(found.significant[1:].any()), regret


def main() -> None:
    cli = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    cli.add_argument("--trials", type=int, default=24, help="trials per search (default 24)")
    cli.add_argument("--searches", type=int, default=200,
                     help="planted searches per sampler (default 200)")
    cli.add_argument("--effect", type=float, default=2.5,
                     help="the learning rate's effect, in noise standard deviations "
                          "(default 2.5)")
    args = cli.parse_args()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    logging.getLogger("optuna").setLevel(logging.ERROR)
    print("== sampler-power ==")
    print(f"{args.searches} planted searches per sampler, {args.trials} trials each, 4 "
          f"parameters, the learning rate's effect {args.effect:g} noise std")
    found: dict[str, float] = {}
    for sampler in SAMPLERS:
        results = [one_search(sampler, args.trials, args.effect, seed)
                   for seed in range(args.searches)]
        hits, alarms, regrets = (np.array(column, dtype=float) for column in zip(*results,
                                                                                  strict=True))
        found[sampler] = hits.mean()
        print(f"{sampler:>6}: effect found in {hits.mean():6.1%} of searches, a parameter "
              f"without effect flagged in {alarms.mean():5.1%}, regret of the best-scoring "
              f"trial {regrets.mean():.2f} noise std")
    ratio = f"{found['qmc'] / found['tpe']:.1f}x" if found["tpe"] else "tpe none"
    print(f"sampler-power: {ratio} searches that found the effect, qmc over tpe "
          f"({found['qmc']:.0%} against {found['tpe']:.0%})")


if __name__ == "__main__":
    main()
