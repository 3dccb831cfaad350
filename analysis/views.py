"""What the report adds for a reader in a browser, per method: every trial's learning
curve with the references it must beat, the interactive view, the parameters that did
not vary (so a missing response curve is explained), the command that trains the
recommended configuration, and links from each trial to its MLflow run.

References come from what the runs recorded: per method on a study's parent run
(``<method>.random_init_<metric>``, ``<method>.chance_acc``), or on runs of ``sslstudy
train`` themselves; an experiment of another tool has none and the curves go without.
"""

from __future__ import annotations

import logging
import shlex
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import yaml
from mlflow.entities import Run
from mlflow.tracking import MlflowClient

from analysis import plots
from analysis.interactive import parallel_coordinates
from analysis.method import FINISHED, MethodAnalysis
from analysis.runs import Experiment
from analysis.summary import config_value
from tracking import schema
from tracking.read import download_artifact
from tracking.uris import runs_view_url, ui_base

logger = logging.getLogger("sslstudy")

#: Names the references go by in figures and text.
RANDOM_INIT = "random init"
CHANCE = "chance"


@dataclass
class MethodView:
    """A method's additions to the report."""

    curves: Path | None = None
    interactive: str | None = None
    #: Parameters with a single value in the method's trials: no response curve.
    fixed: dict[str, Any] = field(default_factory=dict)
    references: dict[str, float] = field(default_factory=dict)
    train_command: str | None = None


@dataclass
class Views:
    methods: dict[str, MethodView] = field(default_factory=dict)
    #: run id -> the run's page in the MLflow UI, when the store is a server with a URL.
    run_url: Callable[[str], str] | None = None


def references(parents: list[Run], runs: pd.DataFrame, method: str, metric: str
               ) -> dict[str, float]:
    """The method's random-init score on ``metric`` and the chance accuracy, where
    recorded: the latest study's, else the mean over ``sslstudy train`` runs."""
    init_key = schema.RANDOM_INIT_PREFIX + metric
    found: dict[str, float] = {}
    for run in sorted(parents, key=lambda r: r.info.start_time or 0):
        values = run.data.metrics
        for key, label in ((init_key, RANDOM_INIT), (schema.CHANCE_ACC, CHANCE)):
            value = values.get(schema.method_key(method, key))
            if value is not None:
                found[label] = value
    mine = runs[runs["method"] == method]
    for key, label in ((init_key, RANDOM_INIT), (schema.CHANCE_ACC, CHANCE)):
        column = f"final_{key}"
        if label not in found and column in mine and mine[column].notna().any():
            found[label] = float(mine[column].mean())
    if not metric.endswith("_acc"):
        found.pop(CHANCE, None)
    return found


def _curves(analysis: MethodAnalysis, data: Experiment, metric: str, refs: dict[str, float],
            plots_dir: Path, stem: str) -> Path | None:
    runs = data.runs[data.runs["method"] == analysis.method][["run_id", "status"]]
    history = data.history[(data.history["metric"] == metric)
                           & data.history["run_id"].isin(runs["run_id"])]
    if history.empty:
        return None
    curves = history.merge(runs, on="run_id")
    stopped = data.runs[(data.runs["method"] == analysis.method)
                        & (data.runs["status"] == schema.STOPPED_EARLY)]["budget"]
    rungs = sorted(float(b) for b in stopped.dropna().unique())
    return plots.learning_curves(plots_dir / f"{stem}_learning_curves.png", analysis.method,
                                 curves, metric, refs, rungs)


def _fixed(analysis: MethodAnalysis, data: Experiment) -> dict[str, Any]:
    runs = data.runs[(data.runs["method"] == analysis.method)
                     & data.runs["status"].isin(FINISHED)]
    fixed = {}
    for param in data.params:
        if param in runs and runs[param].notna().all() and runs[param].nunique() == 1:
            fixed[param] = config_value(runs[param].iloc[0])
    return fixed


def study_configs(client: MlflowClient, parents: list[Run], out: Path) -> dict[str, Path]:
    """Each study's resolved config, written beside the report as
    ``config_<study>.yaml`` (the latest study of a name wins), for the train commands."""
    written: dict[str, Path] = {}
    for run in sorted(parents, key=lambda r: r.info.start_time or 0):
        if run.data.tags.get(schema.TAG_ROLE) != schema.ROLE_STUDY:
            continue
        with tempfile.TemporaryDirectory() as tmp:
            path = download_artifact(client, run.info.run_id, schema.RESOLVED_CONFIG, tmp)
            if path is None:
                # A study recorded before configs were logged: the report leaves its
                # train command out and says why here.
                logger.info("no resolved config for study run %s: the report gives no "
                            "train command for it", run.info.run_id)
                continue
            config = yaml.safe_load(path.read_text())
        study = run.data.tags.get(schema.TAG_STUDY) or run.info.run_name or run.info.run_id
        target = out / f"config_{study}.yaml"
        target.write_text(yaml.safe_dump(config, sort_keys=False))
        written[study] = target
    return written


def _train_command(analysis: MethodAnalysis, configs: dict[str, Path], data: Experiment,
                   tracking_uri: str, experiment: str) -> str | None:
    """``sslstudy train`` of the recommended configuration, with the config of the study
    that ran the method (written beside the report) and this experiment's store."""
    recommendation = analysis.recommendation
    if recommendation is None:
        return None
    studies = data.runs[data.runs["method"] == analysis.method]["study"].dropna()
    config = next((configs[s] for s in reversed(studies.unique().tolist()) if s in configs),
                  None)
    if config is None:
        return None
    executable = Path(sys.executable).parent / "sslstudy"
    command = [str(executable) if executable.exists() else "sslstudy", "train",
               str(config.resolve()), "--method", analysis.method,
               "--tracking-uri", tracking_uri, "--experiment", experiment]
    # Every hyperparameter of the recommended run, also those its rivals shared (the
    # summary's snippet lists only what varied): the config's defaults may differ.
    runs = data.runs[(data.runs["method"] == analysis.method)
                     & (data.runs["run_name"] == recommendation.run_name)]
    values = runs.iloc[0] if len(runs) else pd.Series(recommendation.params)
    for name in data.params:
        if name in values and pd.notna(values[name]):
            command += ["--param", f"{name}={_exact(values[name])}"]
    return shlex.join(command)


def _exact(value: Any) -> str:
    """A run's value as ``--param`` takes it, unrounded (the run's own configuration)."""
    value = value.item() if hasattr(value, "item") else value
    if isinstance(value, str) and value in ("True", "False"):
        return value.lower()
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def build_views(
    client: MlflowClient, experiment_id: str, experiment: str, tracking_uri: str,
    parents: list[Run], analyses: list[MethodAnalysis], data: Experiment, metric: str,
    out: Path, plots_dir: Path,
) -> Views:
    configs = study_configs(client, parents, out)
    base = ui_base(tracking_uri)
    views = Views(run_url=None if base is None else (
        lambda run_id: runs_view_url(base, experiment_id, run_id)))
    library_embedded = False
    for analysis in analyses:
        refs = references(parents, data.runs, analysis.method, metric)
        stem = "".join(c if c.isalnum() or c in "-_." else "_" for c in analysis.method)
        interactive = parallel_coordinates(analysis, metric,
                                           include_library=not library_embedded)
        library_embedded = library_embedded or interactive is not None
        views.methods[analysis.method] = MethodView(
            curves=_curves(analysis, data, metric, refs, plots_dir, stem),
            interactive=interactive,
            fixed=_fixed(analysis, data),
            references=refs,
            train_command=_train_command(analysis, configs, data, tracking_uri, experiment),
        )
    return views
