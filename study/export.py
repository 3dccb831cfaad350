"""``sslstudy export``: what a study produced, in the form other tools take.

``--format model`` (the default) finds a method's best run at the full budget on the
study's metric (the metric and mode the study recorded; runs that reached the full
budget only, since a value after fewer epochs is not comparable) and, with
``--register``, registers that run's encoder in the MLflow Model Registry.
``--format deepcave`` writes the study in DeepCAVE's run format (``tracking.deepcave``).

Every input is checked before anything is written: the experiment must hold finished
runs (of the method, when one is named), a name the registry rejects leaves nothing
behind, and ``--out`` must be an empty directory or one that can be created.
"""

from __future__ import annotations

import json
import logging
import shlex
import sys
from pathlib import Path

from mlflow.entities import Run
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from study import paths
from study.errors import ConfigError
from tracking import schema
from tracking.deepcave import CROSS_METHOD, deepcave_run, write_run
from tracking.read import (
    all_runs,
    best_trial_runs,
    find_experiment,
    logged_model_id,
    metric_histories,
    open_store,
    recorded_objective,
    recorded_spaces,
    split_parents,
)
from tracking.server import open_instructions
from tracking.uris import resolve_tracking_uri

logger = logging.getLogger("sslstudy")
#: The metric exported on when the study recorded none: the validation kNN accuracy a
#: search optimises by default, else the test one (runs from before the validation split).
FALLBACK_METRICS = (schema.validation(schema.KNN_ACC), schema.KNN_ACC)


def run_export(tracking_uri: str, experiment: str, method: str | None, fmt: str,
               register: str | None, out: Path | None) -> int:
    if fmt == "model":
        if method is None:
            raise ConfigError("--method: required to export a model (the best run of which "
                              "method?)")
        if out is not None:
            raise ConfigError("--out: only with --format deepcave (a model goes to MLflow)")
    else:
        if register is not None:
            raise ConfigError("--register: only with --format model")
        if out is None:
            raise ConfigError("--out: required with --format deepcave (a new or empty "
                              "directory)")
        if out.exists() and (not out.is_dir() or any(out.iterdir())):
            raise ConfigError(f"--out: {str(out)!r} exists and is not an empty directory")
        paths.check_creatable_dir("--out", out)
    tracking_uri = resolve_tracking_uri(tracking_uri)
    client = open_store(tracking_uri, check_server=True)
    found = find_experiment(client, experiment)
    parents, trials = split_parents(list(all_runs(client, found.experiment_id)))
    metric, mode = _objective(client, found, trials)
    if fmt == "model":
        assert method is not None
        return _export_model(client, tracking_uri, found.experiment_id, trials, method,
                             metric, mode, register)
    assert out is not None
    return _export_deepcave(client, parents, trials, method, metric, mode, out)


def _objective(client: MlflowClient, found, trials: list[Run]) -> tuple[str, str]:
    metric, mode = recorded_objective(client, found)
    if metric is None:
        logged = {k for r in trials for k in r.data.metrics}
        metric = next((m for m in FALLBACK_METRICS if m in logged), FALLBACK_METRICS[-1])
    return metric, mode or "max"


def _methods(trials: list[Run]) -> list[str]:
    return sorted({r.data.tags[schema.TAG_METHOD] for r in trials
                   if schema.TAG_METHOD in r.data.tags})


def _check_method(method: str, trials: list[Run], experiment: str) -> None:
    known = _methods(trials)
    if method not in known:
        raise ConfigError(f"--method: no runs of {method!r} in {experiment!r}; found: "
                          f"{', '.join(known) or 'none'}")


def _export_model(client: MlflowClient, tracking_uri: str, experiment_id: str,
                  trials: list[Run], method: str, metric: str, mode: str,
                  register: str | None) -> int:
    experiment = client.get_experiment(experiment_id).name
    _check_method(method, trials, experiment)
    candidates = [r for r in trials
                  if r.data.tags.get(schema.TAG_RUN_KIND, schema.KIND_SEARCH)
                  in schema.SELECTING_KINDS and logged_model_id(r) is not None]
    best = best_trial_runs(candidates, metric, mode).get(method)
    if best is None:
        raise ConfigError(
            f"--experiment: no run of {method} in {experiment!r} finished the full budget "
            f"with {metric} and a logged encoder; nothing to export"
        )
    model_id = logged_model_id(best)
    assert model_id is not None
    uri = f"models:/{model_id}"
    version = None
    if register is not None:
        version = _register(client, register, best.info.run_id, model_id)
        uri = f"models:/{register}/{version}"
    logger.info("best %s run at the full budget: %s (%s, %s=%.4f)", method,
                best.info.run_name, best.info.run_id, metric, best.data.metrics[metric])
    if version is not None:
        logger.info("registered as %s, version %s", register, version)
    loader = (f"import mlflow; mlflow.set_tracking_uri({json.dumps(tracking_uri)}); "
              f"encoder = mlflow.pytorch.load_model({json.dumps(uri)})")
    logger.info("load it (images in [0, 1], N x C x H x W, to features): %s -c %s",
                shlex.quote(sys.executable), shlex.quote(loader))
    for line in open_instructions(tracking_uri, experiment_id, best.info.run_id):
        logger.info(line)
    return 0


def _register(client: MlflowClient, name: str, run_id: str, model_id: str) -> str:
    """A new version of the registered model ``name`` (created if new); a name MLflow
    rejects is an input error and creates nothing."""
    try:
        client.create_registered_model(name)
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_ALREADY_EXISTS":
            message = str(exc.message).splitlines()[0] if exc.message else str(exc)
            raise ConfigError(f"--register: MLflow rejects {name!r}: {message}") from None
    # The model's own artifact location, not its models:/ URI: MLflow resolves such a URI
    # through the process's default tracking store, not this client's.
    location = client.get_logged_model(model_id).artifact_location
    version = client.create_model_version(name, location, run_id=run_id, model_id=model_id)
    return str(version.version)


def _export_deepcave(client: MlflowClient, parents: list[Run], trials: list[Run],
                     method: str | None, metric: str, mode: str, out: Path) -> int:
    experiment = client.get_experiment(trials[0].info.experiment_id).name if trials else ""
    if method is not None:
        _check_method(method, trials, experiment)
    spaces = recorded_spaces(client, parents)
    runs = [r for r in trials
            if r.data.tags.get(schema.TAG_RUN_KIND, schema.KIND_SEARCH) != schema.KIND_SWEEP
            and r.data.tags.get(schema.TAG_STATUS) in (schema.COMPLETED, schema.STOPPED_EARLY,
                                                       schema.FAILED, schema.ORPHANED)]
    finished = [r for r in runs if r.data.tags.get(schema.TAG_STATUS) in (
        schema.COMPLETED, schema.STOPPED_EARLY)]
    methods = [m for m in _methods(finished) if spaces.get(m)]
    if method is not None:
        methods = [m for m in methods if m == method]
    if not methods:
        raise ConfigError(
            f"--experiment: {experiment!r} has no finished runs of a study with a recorded "
            "search space; nothing to export"
        )
    history = metric_histories(client, [r.info.run_id for r in runs], [metric])
    written = []
    for name in methods:
        files = deepcave_run(runs, history, {name: spaces[name]}, metric, mode, cross=False)
        write_run(out / name, files)
        written.append(name)
    if method is None and len(methods) > 1 and _searched_across(parents):
        files = deepcave_run(runs, history, {m: spaces[m] for m in methods}, metric, mode,
                             cross=True)
        write_run(out / CROSS_METHOD, files)
        written.append(CROSS_METHOD)
    logger.info("DeepCAVE runs (%s, on %s): %s", ", ".join(written), metric, out.resolve())
    logger.info("open them: deepcave --open, then choose %s as the working directory",
                out.resolve())
    return 0


def _searched_across(parents: list[Run]) -> bool:
    """Whether a study of the experiment searched all its methods at once."""
    return any(r.data.params.get("search.cross_method") == "True" for r in parents)
