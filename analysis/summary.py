"""The summary a researcher reads first, per method: which parameters matter beyond
noise and by how much, which do not, and the configuration to use.

The recommended configuration is the best configuration at the method's comparison
budget (the mean of its runs where it was run with several seeds), given as YAML that
can be pasted into a config's ``methods.<name>.space`` to fix every searched parameter.
Its expected score is that mean +- the seed noise floor when replicates measured one, else
the score with "noise unknown". A best-of-many score is optimistic (the winner's curse):
the more configurations were tried, the more the best one owes to luck, which is what
the noise floor and confirmation runs with fresh seeds are for.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import yaml

from analysis.noise import MEASURE_COMMAND, NoiseFloor

#: Significant digits of the recommended values.
DIGITS = 4


@dataclass(frozen=True)
class Recommendation:
    params: dict[str, Any]
    score: float
    runs: int
    budget: float
    run_name: str
    noise: NoiseFloor
    #: The first run of the configuration (its id), and the ids of all its independent
    #: runs at the budget.
    run_id: str = ""
    run_ids: tuple[str, ...] = ()
    #: How many confirmed configurations it was chosen among (0: among all of them).
    among_confirmed: int = 0
    #: Where ``budget`` is below the study's full budget (the one ``sslstudy train``
    #: trains for): that budget, and the mean of the configuration's runs that reached it
    #: (None: the scheduler stopped them all before it).
    full_budget: float | None = None
    full_score: float | None = None
    full_runs: int = 0

    def yaml(self, method: str) -> str:
        """The configuration as lines for ``methods.<method>.space``."""
        if not self.params:  # one configuration, or runs that agree on every parameter
            return ("# no parameter varies among the compared configurations: nothing to "
                    "fix in a search space")
        body = yaml.safe_dump({k: config_value(v) for k, v in self.params.items()},
                              sort_keys=False, default_flow_style=False)
        return f"# paste under methods.{method}.space: fixes every searched parameter\n{body}"

    def expected(self) -> str:
        seeds = f" (mean of {self.runs} seeds)" if self.runs > 1 else ""
        if self.noise.known:
            return (f"{self.score:.4g} +- {self.noise.std:.2g}{seeds}: seed noise (1 std) "
                    f"pooled over {self.noise.configs} repeated configurations")
        return f"{self.score:.4g}{seeds}; noise unknown: measure it with `{MEASURE_COMMAND}`"

    def at_full_budget(self) -> str:
        """What the configuration scored at the full budget, when it was chosen at a lower
        one: a score at 2 epochs is no forecast of one at 8, which training it again
        would give."""
        if self.full_budget is None:
            return ""
        if self.full_score is None:
            return (f"Its runs stopped before the full budget of {self.full_budget:g} "
                    "epochs (in a study, the scheduler stopped them): its score there is "
                    "unknown.")
        seeds = f" (mean of {self.full_runs} seeds)" if self.full_runs > 1 else ""
        return f"At the full budget of {self.full_budget:g} epochs: {self.full_score:.4g}{seeds}."


def recommend(
    frame: pd.DataFrame, scores: pd.Series, runs: pd.Series, params: list[str], mode: str,
    budget: float, noise: NoiseFloor,
) -> Recommendation | None:
    """The best configuration of ``frame`` (one row per configuration, ``scores`` its
    mean score, ``runs`` its number of runs) and what to expect of it."""
    if scores.empty:
        return None
    best = scores.idxmax() if mode == "max" else scores.idxmin()
    row = frame.loc[best]
    return Recommendation(
        params={p: _native(row[p]) for p in params if pd.notna(row[p])},
        score=float(scores[best]), runs=int(runs[best]), budget=budget,
        run_name=str(row.get("run_name", best)), noise=noise, run_id=str(best),
    )


def _native(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


def config_value(value: Any) -> Any:
    """A value as a config would write it: 4 significant digits, whole numbers as
    integers (MLflow params are strings; a batch size comes back as 64.0), booleans."""
    if isinstance(value, str) and value in ("True", "False", "true", "false"):
        return value.lower() == "true"
    if isinstance(value, float) and math.isfinite(value):
        if value.is_integer() and abs(value) >= 1:
            return int(value)
        return float(f"{value:.{DIGITS}g}")
    return value


def verdicts(importance: pd.DataFrame, effects: pd.DataFrame) -> pd.DataFrame:
    """Per parameter at the comparison budget: importance and its interval, whether it
    clears the null, and its effect in metric units with its interval and its standing
    against the seed noise."""
    merged = importance.merge(effects, on=["method", "param", "budget"],
                              suffixes=("", "_effect"))
    return merged.rename(columns={"low": "importance_low", "high": "importance_high",
                                  "low_effect": "effect_low", "high_effect": "effect_high"})
