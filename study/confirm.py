"""``sslstudy confirm``: re-run configurations of a finished study at the full budget with
fresh seeds.

For each method, the ``top`` best configurations (on the study's validation objective
at the full budget) and ``random`` others chosen at random (seeded) among the trials that
did not fail, each with ``seeds`` new seeds: the best ones give the recommended
configuration's expected score with its seed-to-seed spread, the random ones an
estimate of the noise that is not biased towards configurations that were lucky. Each
run is a child of the study's parent run, tagged ``run_kind: confirm`` and
``replicate_of: <trial id>``, with its ``seed`` as a param.
"""

from __future__ import annotations

import json
import logging
import random
import statistics
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from study import checks
from study.config import ConfigError, ConfirmConfig, StudyConfig, load_config, parse_config
from study.launch import Launch, analyze_command, check_tracking, launch, read_state
from study.settings import study_root
from tracking import schema
from tracking.read import child_runs, run_status
from tracking.runs import TrackingTarget, end_study_run
from trainables.hyperparameters import declared_hyperparameters

logger = logging.getLogger("sslstudy")
#: The Tuner of a study's confirmation runs.
CONFIRM = "confirm"
#: The plan (top, seeds, random) the study's confirmation runs started with, beside its
#: study.json: their Tuner keeps its runs, so a resume must ask for the same ones.
PLAN_FILE = "confirm_plan.json"


@dataclass(frozen=True)
class Candidate:
    """A trial of the study whose configuration is to be re-run."""

    method: str
    trial_id: str
    values: Mapping[str, Any]
    score: float | None
    why: str
    #: The epochs its search run reached (fewer than the full budget: ASHA stopped it).
    budget: int | None = None


def _values(method: str, params: Mapping[str, str]) -> dict[str, Any]:
    """A run's hyperparameters from its recorded params (text), as typed values."""
    declared = declared_hyperparameters(method)
    return {name: declared[name].parse(name, text) for name, text in params.items()
            if name in declared}


def candidates(config: StudyConfig, target: TrackingTarget, plan: ConfirmConfig,
               strict: bool = True) -> list[Candidate]:
    """The trials to confirm, per method: the best ``plan.top`` completed ones at the full
    budget, then ``plan.random`` others drawn (seeded) from the trials that did not fail.
    A method without a completed trial is an input error, or (``strict=False``, at the
    end of a search) skipped with a warning."""
    sign = 1.0 if config.search.mode == "max" else -1.0
    runs = [r for r in child_runs(target.tracking_uri, target.experiment_id,
                                  target.parent_run_id or "")
            if r.data.tags.get(schema.TAG_RUN_KIND, schema.KIND_SEARCH) == schema.KIND_SEARCH]
    chosen: list[Candidate] = []
    rng = random.Random(config.seed)
    for method in config.methods:
        mine = [r for r in runs if r.data.tags.get(schema.TAG_METHOD) == method]
        finished = [r for r in mine
                    if r.data.tags.get(schema.TAG_STATUS) == schema.COMPLETED
                    and config.objective in r.data.metrics]
        if not finished:
            problem = (f"no trial of {method} completed the full budget with "
                       f"{config.objective}; nothing to confirm")
            if strict:
                raise ConfigError(f"STUDY: {problem}")
            logger.warning("confirm: %s", problem)
            continue
        finished.sort(key=lambda r: -sign * r.data.metrics[config.objective])
        best = finished[: plan.top]
        others = [r for r in mine if r not in best
                  and r.data.tags.get(schema.TAG_STATUS) in (schema.COMPLETED,
                                                             schema.STOPPED_EARLY)]
        drawn = rng.sample(others, min(plan.random, len(others)))
        for run, why in [*((r, "best") for r in best), *((r, "random") for r in drawn)]:
            chosen.append(Candidate(
                method, run.data.tags[schema.TAG_TRIAL_ID], _values(method, run.data.params),
                run.data.metrics.get(config.objective), why,
                int(run.data.tags[schema.TAG_BUDGET]) if schema.TAG_BUDGET in run.data.tags
                else None,
            ))
    return chosen


def fresh_seed(study_seed: int, trial_id: str, replicate: int) -> int:
    """A seed no trial of the search used, the same on every resume."""
    return zlib.crc32(f"confirm:{study_seed}:{trial_id}:{replicate}".encode())


def confirm_in_session(
    config: StudyConfig, target: TrackingTarget, run: Launch, plan: ConfirmConfig,
    resume: bool,
) -> list[dict]:
    """The confirmation runs of a study whose trials have finished, in its Ray session."""
    from study.grid import FixedRun, run_fixed

    chosen = candidates(config, target, plan, strict=False)
    runs = [
        FixedRun(
            c.method, c.values, fresh_seed(config.seed, c.trial_id, i),
            tags={schema.TAG_REPLICATE_OF: c.trial_id},
            label=f"{c.method} confirm {c.trial_id} ({c.why}) seed {i + 1}/{plan.seeds}",
        )
        for c in chosen for i in range(plan.seeds)
    ]
    if not runs:
        return []
    root = study_root(config)
    if resume and _confirmation_started(root):
        _check_same_plan(root, plan)
    else:
        (root / PLAN_FILE).write_text(json.dumps(plan.model_dump()))
    results = run_fixed(config, CONFIRM, runs, run.data, target, run.max_concurrent, resume,
                        schema.KIND_CONFIRM)
    return _summary(config, chosen, results)


def _summary(config: StudyConfig, chosen: list[Candidate], results: list) -> list[dict]:
    """Logs, and returns for the parent run, each confirmed configuration's search score
    beside its fresh-seed mean and spread."""
    by_trial: dict[str, list[float]] = {}
    for result in results:
        if result.error is None and result.metrics:
            replicate_of = result.config["run"]["tags"][schema.TAG_REPLICATE_OF]
            value = result.metrics.get(config.objective)
            if value is not None:
                by_trial.setdefault(replicate_of, []).append(float(value))
    rows = []
    for c in chosen:
        values = by_trial.get(c.trial_id, [])
        mean = statistics.fmean(values) if values else None
        std = statistics.stdev(values) if len(values) > 1 else None
        # A random pick may have been stopped by ASHA: its search score is an earlier one.
        early = (f" (after {c.budget} of {config.train.epochs} epochs)"
                 if c.budget is not None and c.budget < config.train.epochs else "")
        logger.info("%s %s (%s): %s = %s in the search%s, %s%s over %d fresh seeds at %d "
                    "epochs", c.method, c.trial_id, c.why, config.objective,
                    "n/a" if c.score is None else f"{c.score:.4f}", early,
                    "n/a" if mean is None else f"{mean:.4f}",
                    "" if std is None else f" +- {std:.4f}", len(values), config.train.epochs)
        rows.append({"method": c.method, "trial_id": c.trial_id, "chosen": c.why,
                     "search_value": c.score, "search_budget": c.budget, "mean": mean,
                     "std": std, "runs": len(values)})
    return rows


def _confirmation_started(root: Path) -> bool:
    """Whether the study's confirmation runs have a Tuner that a resume continues."""
    from ray import tune

    return tune.Tuner.can_restore(str(root / CONFIRM))


def _check_same_plan(root: Path, plan: ConfirmConfig) -> None:
    """Resumed confirmation runs are the ones they started as: their Tuner would run its
    own and ignore different flags (a study confirmed before the plan was saved is not
    checked)."""
    saved = root / PLAN_FILE
    if not saved.is_file():
        return
    before = json.loads(saved.read_text())
    if before != plan.model_dump():
        flags = " ".join(f"--{key} {value}" for key, value in before.items())
        raise ConfigError(f"--resume: the confirmation runs of {str(root)!r} started with "
                          f"{flags}; resume them with the same flags")


def _study(where: Path) -> tuple[Path, dict[str, Any]]:
    """The study directory and its saved state, from the directory or its config file."""
    if where.is_dir():
        return where.resolve(), read_state(where, flag="STUDY")
    if where.is_file():
        config = load_config(where)
        root = study_root(config)
        return root, read_state(root, flag="STUDY")
    raise ConfigError(f"STUDY: {str(where)!r} is neither a study directory nor a config file")


def recorded_config(root: Path, state: dict[str, Any], max_concurrent: int | None
                    ) -> StudyConfig:
    """The study's config as it was started, its places pinned to where the study is: the
    saved config holds its paths as the user wrote them, relative to the directory the
    search ran from, which confirmation, run from anywhere, must not resolve again. A
    relative ``data.data_dir`` is taken from the directory the study recorded, or, for a
    study recorded before it did, from where its directory is less the recorded
    ``storage_path``."""
    written = state["config"]
    overrides: dict[str, Any] = {"storage_path": str(root.parent),
                                 "tracking.tracking_uri": state["tracking_uri"]}
    data_dir = (written.get("data") or {}).get("data_dir")
    if data_dir is not None and not Path(data_dir).expanduser().is_absolute():
        overrides["data.data_dir"] = str(_started_in(root, state) / data_dir)
    if max_concurrent:
        overrides["search.max_concurrent"] = max_concurrent
    return parse_config(state["config"], overrides)


def _started_in(root: Path, state: dict[str, Any]) -> Path:
    """The directory the study was started from."""
    if "working_directory" in state:
        return Path(state["working_directory"])
    storage = Path(str(state["config"].get("storage_path", "ray_results"))).expanduser()
    if storage.is_absolute() or ".." in storage.parts or len(storage.parts) >= len(
            root.parents):
        logger.warning("the study at %s does not say which directory it was started from; "
                       "its relative data.data_dir is read from the current one", root)
        return Path.cwd()
    return root.parents[len(storage.parts)]


def run_confirm(
    where: Path, plan: ConfirmConfig, address: str | None, max_concurrent: int | None,
    resume: bool,
) -> int:
    root, state = _study(where)
    config = recorded_config(root, state, max_concurrent)
    target = TrackingTarget(state["tracking_uri"], state["experiment_id"],
                            state["parent_run_id"])
    tracking_uri = check_tracking(config, address)
    checks.check_local_device(config, address)
    if (root / CONFIRM).exists() and not resume:
        raise ConfigError(f"STUDY: {str(root)!r} already has confirmation runs; pass --resume "
                          "to continue them")
    if resume and not (root / CONFIRM).exists():
        raise ConfigError(f"--resume: {str(root)!r} has no confirmation runs to continue; "
                          "leave --resume out to start them")
    searched = run_status(target.tracking_uri, target.parent_run_id)
    if searched != "FINISHED":
        raise ConfigError(
            f"STUDY: the search of {str(root)!r} has not finished (its MLflow run is "
            f"{searched}): continue it with its `sslstudy search CONFIG --resume`, which "
            "also continues confirmation runs that search.confirm started")
    if resume and _confirmation_started(root):
        _check_same_plan(root, plan)
    candidates(config, target, plan)  # nothing to confirm is an input error
    dataset = checks.load_study_dataset(config)
    with launch(config, root, state, address, dataset, tracking_uri, lambda: target) as run:
        rows = confirm_in_session(config, target, run, plan, resume)
    end_study_run(target, {"metric": config.objective, "confirmed": rows}, failed=False,
                  artifact=schema.CONFIRM_SUMMARY)
    logger.info("write the report: %s", analyze_command(config.experiment, tracking_uri,
                                                        root / "report"))
    return 0
