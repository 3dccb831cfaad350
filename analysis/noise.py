"""The noise floor: how much the metric moves when only the seed changes.

Runs whose params are identical apart from ``seed`` are replicates of one configuration
(confirmation runs of a study, or any experiment that repeats a configuration). Their
pooled within-configuration standard deviation,

    sqrt( sum over configurations of sum over its runs of (y - its mean)^2
          / sum over configurations of (runs - 1) ),

is the seed-to-seed noise: a difference between configurations smaller than it cannot be
told from a reseeded run. Without replicates the noise is unknown and the report says so.

For importance and response curves each configuration counts once, with the mean of its
runs, however many seeds it has; otherwise the configurations that happen to be repeated
(usually the best ones) would weigh more.

Only independent runs count (:func:`independent_runs`). A configuration that
``sslstudy confirm`` ran again is scored by its confirmation runs alone: the search run
they repeat was chosen for its score, so beside them it would pull the configuration's
mean up and widen its spread (the winner's curse the fresh seeds are there to remove).
For the same reason a selection (the recommendation, the protocols' configuration)
chooses among the confirmed configurations when there are any: the others' scores are
the single search runs whose luck ranked them.
And runs of one configuration with the same seed (a study run twice into one
experiment, a categorical space proposing a configuration again, with the study's
shared seed) are one seed, not several: averaged into one, so that the noise floor is
never measured between runs that differ in nothing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from tracking import schema

NOISE_COLUMNS = ["method", "metric", "std", "configs", "runs"]
#: What the report shows when no configuration has replicates. The command runs the
#: best configurations again with fresh seeds (confirmation runs).
MEASURE_COMMAND = "sslstudy confirm <study dir> --top 3 --seeds 3"


@dataclass(frozen=True)
class NoiseFloor:
    """Pooled seed-to-seed standard deviation; ``std`` NaN when nothing was repeated."""

    std: float
    #: Configurations with two or more runs, and the runs they hold.
    configs: int
    runs: int

    @property
    def known(self) -> bool:
        return self.configs > 0 and math.isfinite(self.std)


def configurations(frame: pd.DataFrame, params: list[str]) -> pd.Series:
    """A configuration id per row of ``frame``: rows with equal values of ``params``
    (``seed`` excluded by the caller) share one."""
    if not params or frame.empty:
        return pd.Series(0, index=frame.index, dtype=int)
    keys = pd.util.hash_pandas_object(frame[params], index=False)
    return pd.Series(pd.factorize(keys)[0], index=frame.index)


@dataclass(frozen=True)
class Independent:
    """The independent runs' scores (indexed by run id, a same-seed repeat averaged into
    the first of its runs) and what was left out or merged to get them."""

    y: pd.Series
    #: Search runs left out because confirmation runs repeat their configuration.
    repeated_by_confirmation: int
    #: Runs averaged into an earlier run of their configuration with the same seed.
    same_seed: int


def independent_runs(runs: pd.DataFrame, y: pd.Series, groups: pd.Series) -> Independent:
    """The runs of ``runs`` (aligned with ``y`` and ``groups``) that are independent draws
    of their configuration's score: its confirmation runs where it has any, and one per
    seed (a run without a seed is its own)."""
    data = pd.DataFrame({"y": np.asarray(y, dtype=float), "g": np.asarray(groups)},
                        index=runs.index)
    confirmation = confirmed(runs).to_numpy()
    repeated_configurations = data.loc[confirmation, "g"].unique()
    keep = ~data["g"].isin(repeated_configurations).to_numpy() | confirmation
    repeated = int((~keep).sum())
    data = data[keep]
    if schema.PARAM_SEED in runs:
        seeds = runs.loc[data.index, schema.PARAM_SEED]
        # A run without a seed param stands alone: its own id as its seed.
        data["seed"] = seeds.astype(object).where(seeds.notna(), pd.Series(
            data.index, index=data.index)).astype(str)
    else:
        data["seed"] = data.index.astype(str)
    first = ~data[["g", "seed"]].duplicated()
    means = data.groupby(["g", "seed"], sort=False)["y"].transform("mean")
    return Independent(means[first.to_numpy()], repeated, int((~first).sum()))


def confirmed(runs: pd.DataFrame) -> pd.Series:
    """Per run: whether it is a confirmation run. Among independent runs, a configuration
    with one has only those, so on a frame of one row per configuration (its first
    independent run) this tells the configurations that confirmation runs score."""
    if "run_kind" not in runs:
        return pd.Series(False, index=runs.index)
    return runs["run_kind"] == schema.KIND_CONFIRM


def noise_floor(y: pd.Series, groups: pd.Series) -> NoiseFloor:
    """The pooled standard deviation of ``y`` within ``groups`` (aligned with ``y``)."""
    data = pd.DataFrame({"y": np.asarray(y, dtype=float), "g": np.asarray(groups)})
    sizes = data.groupby("g")["y"].transform("size")
    repeated = data[sizes >= 2]
    if repeated.empty:
        return NoiseFloor(math.nan, 0, 0)
    deviations = repeated["y"] - repeated.groupby("g")["y"].transform("mean")
    configs = repeated["g"].nunique()
    dof = len(repeated) - configs
    return NoiseFloor(float(np.sqrt((deviations**2).sum() / dof)), int(configs),
                      len(repeated))


def collapse(
    frame: pd.DataFrame, y: pd.Series, groups: pd.Series
) -> tuple[pd.DataFrame, pd.Series, pd.Series]:
    """One row per configuration: its first run's params, the mean of its runs' scores,
    and how many runs it has; indexed by that first run's id."""
    data = pd.DataFrame({"y": np.asarray(y, dtype=float), "g": np.asarray(groups)},
                        index=frame.index)
    first = ~data["g"].duplicated()
    means = data.groupby("g")["y"].mean()
    counts = data.groupby("g")["y"].size()
    keep = frame.loc[first.to_numpy()]
    ids = data.loc[first.to_numpy(), "g"]
    return (keep, pd.Series(means[ids].to_numpy(), index=keep.index),
            pd.Series(counts[ids].to_numpy(), index=keep.index))
