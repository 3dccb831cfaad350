"""The lifecycle of a study's runs: one parent run per study, one child run per trial.

Everything goes through an explicit ``MlflowClient`` rather than ``mlflow.start_run``'s
process-global active run, so several trials in one process, or a trial and the driver,
cannot write into each other's runs. A trial's run id travels with its checkpoints so
that a resumed trial continues its run instead of forking a new one.
"""

from __future__ import annotations

import getpass
import json
import logging
import math
import os
import tempfile
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from mlflow.entities import Dataset, DatasetInput, InputTag, Metric, Param, RunTag
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from mlflow.utils.git_utils import get_git_commit

from tracking import schema
from tracking.read import best_trial_runs, child_runs, open_store
from tracking.uris import artifact_location, sqlite_path, sqlite_without_store

logger = logging.getLogger(__name__)

#: MLflow keeps a failure reason in a tag; longer texts are cut.
_MAX_REASON = 5000
#: Tries at logging a dataset input that another run is inserting at the same moment.
DATASET_ATTEMPTS = 3


@dataclass(frozen=True)
class TrackingTarget:
    """Where trial runs go; plain data so that it can be shipped to Ray workers."""

    tracking_uri: str
    experiment_id: str
    parent_run_id: str | None = None


def _chunks(items: list, size: int):
    for i in range(0, len(items), size):
        yield items[i : i + size]


class TrialRun:
    """The MLflow run of one trial (or of one ``sslstudy train`` invocation): open one
    with :meth:`create`, continue one with :meth:`resume`, or log into another process's
    with :meth:`attach`."""

    def __init__(self, client: MlflowClient, run_id: str) -> None:
        self.client = client
        self.run_id = run_id

    @classmethod
    def create(
        cls,
        target: TrackingTarget,
        *,
        name: str,
        tags: Mapping[str, str],
        params: Mapping[str, Any],
    ) -> TrialRun:
        """A new run under the study's parent run, status ``running``, with its params."""
        client = MlflowClient(target.tracking_uri)
        all_tags = {**tags, schema.TAG_STATUS: schema.RUNNING}
        if target.parent_run_id:
            all_tags[schema.TAG_PARENT_RUN] = target.parent_run_id
        run_id = client.create_run(target.experiment_id, run_name=name, tags=all_tags).info.run_id
        for chunk in _chunks([Param(k, str(v)) for k, v in params.items()], 100):
            client.log_batch(run_id, params=chunk)
        return cls(client, run_id)

    @classmethod
    def resume(cls, target: TrackingTarget, run_id: str, params: Mapping[str, Any]
               ) -> TrialRun:
        """Continue a retried or resumed trial's run; an earlier attempt may have marked
        it failed, or have been killed between creating the run and logging its params
        (those missing are logged now)."""
        client = MlflowClient(target.tracking_uri)
        client.update_run(run_id, status="RUNNING")
        client.set_tag(run_id, schema.TAG_STATUS, schema.RUNNING)
        logged = client.get_run(run_id).data.params
        missing = [Param(k, str(v)) for k, v in params.items() if k not in logged]
        for chunk in _chunks(missing, 100):
            client.log_batch(run_id, params=chunk)
        return cls(client, run_id)

    @classmethod
    def attach(cls, target: TrackingTarget, run_id: str) -> TrialRun:
        """Log into a run another process opened and will close (a data-parallel worker
        logging into its coordinator's run)."""
        return cls(MlflowClient(target.tracking_uri), run_id)

    def set_tag(self, key: str, value: str) -> None:
        self.client.set_tag(self.run_id, key, value)

    def log_dataset(self, name: str, digest: str, source: Mapping[str, Any],
                    profile: Mapping[str, Any]) -> None:
        """The data the run trained and was scored on, as an MLflow dataset input (the
        UI's Dataset column): ``profile`` holds the split sizes. Logged once; a resumed
        trial's run already has it."""
        if self.client.get_run(self.run_id).inputs.dataset_inputs:
            return
        dataset = Dataset(name=name, digest=digest, source_type="sslstudy",
                          source=json.dumps(dict(source), default=str),
                          profile=json.dumps(dict(profile)))
        inputs = [DatasetInput(dataset, tags=[InputTag(schema.TAG_DATASET_CONTEXT, "train")])]
        # MLflow's SQL store looks the dataset up, then inserts it when missing: two
        # trials starting together both insert, and one fails the experiment's unique
        # (name, digest) constraint. Once the other's insert landed, a second call finds
        # the row and only links it.
        for attempt in range(DATASET_ATTEMPTS):
            try:
                self.client.log_inputs(self.run_id, datasets=inputs)
                return
            except MlflowException as exc:
                if attempt == DATASET_ATTEMPTS - 1 or "UNIQUE" not in str(exc).upper():
                    raise
                logger.debug("dataset input of run %s raced another run: %s", self.run_id,
                             exc)
                time.sleep(0.2 * (attempt + 1))

    def log_model(self, directory: Path, name: str, step: int, tags: Mapping[str, str]
                  ) -> str:
        """Log a saved MLflow model (``directory``, as ``mlflow.<flavor>.save_model``
        wrote it) as a model of this run: a logged model carrying the run's params, shown
        in the UI's Models column and loadable as ``models:/<model id>``. Returns the id."""
        from mlflow.entities import LoggedModelOutput, LoggedModelStatus

        run = self.client.get_run(self.run_id)
        model = self.client.create_logged_model(
            run.info.experiment_id, name=name, source_run_id=self.run_id,
            params=dict(run.data.params), tags=dict(tags),
        )
        self.client.log_model_artifacts(model.model_id, str(directory))
        self.client.finalize_logged_model(model.model_id, LoggedModelStatus.READY)
        self.client.log_outputs(self.run_id, [LoggedModelOutput(model.model_id, step)])
        return model.model_id

    def log_dict(self, data: Mapping[str, Any], artifact: str) -> None:
        self.client.log_dict(self.run_id, dict(data), artifact)

    def log_metrics(self, metrics: Mapping[str, float]) -> None:
        """Values of the run as a whole (no step)."""
        now = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[
            Metric(k, float(v), now, 0) for k, v in metrics.items() if math.isfinite(v)])

    def log_result(
        self, metrics: Mapping[str, float], step: int, artifacts: Mapping[str, bytes]
    ) -> None:
        """Metrics at ``step`` (the budget so far) and any files (relative path to
        content) of that step."""
        now = int(time.time() * 1000)
        batch = [Metric(k, float(v), now, step) for k, v in metrics.items()]
        self.client.log_batch(self.run_id, metrics=batch,
                              tags=[RunTag(schema.TAG_BUDGET, str(step))])
        for relative, content in artifacts.items():
            path = PurePosixPath(relative)
            with tempfile.TemporaryDirectory() as directory:
                local = Path(directory) / path.name
                local.write_bytes(content)
                parent = str(path.parent)
                self.client.log_artifact(self.run_id, str(local),
                                         artifact_path=None if parent == "." else parent)

    def finish(self, status: str, reason: str | None = None) -> None:
        tags = [RunTag(schema.TAG_STATUS, status)]
        if reason:
            tags.append(RunTag(schema.TAG_FAILURE_REASON, reason[:_MAX_REASON]))
        self.client.log_batch(self.run_id, tags=tags)
        self.client.set_terminated(self.run_id,
                                   "FAILED" if status == schema.FAILED else "FINISHED")


def source_tags(command: str) -> dict[str, str]:
    """MLflow's source tags for a run made by ``sslstudy <command>``: the command (the
    UI's Source column), the git commit of the code that ran, when it runs from a git
    checkout, and the user."""
    tags = {schema.TAG_SOURCE_NAME: f"sslstudy {command}", schema.TAG_SOURCE_TYPE: "LOCAL",
            schema.TAG_USER: getpass.getuser()}
    commit = get_git_commit(str(Path(__file__).resolve().parent))
    if commit:
        tags[schema.TAG_GIT_COMMIT] = commit
    return tags


def get_or_create_experiment(tracking_uri: str, name: str) -> str:
    """The experiment's id, created if needed, tagged with its kind (model development,
    not GenAI) for MLflow's UI. Two studies started at once into one store may both get
    here first (see :func:`_one_at_a_time`)."""
    with _one_at_a_time(tracking_uri):
        client = MlflowClient(tracking_uri)
        existing = client.get_experiment_by_name(name)
        if existing is not None:
            experiment_id = existing.experiment_id
            if existing.tags.get(schema.TAG_EXPERIMENT_KIND) == schema.EXPERIMENT_KIND:
                return experiment_id
        else:
            try:
                experiment_id = client.create_experiment(
                    name, artifact_location=artifact_location(tracking_uri))
            except MlflowException as exc:
                # A tracking server: another study created it in between.
                if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                    raise
                experiment_id = client.get_experiment_by_name(name).experiment_id
        client.set_experiment_tag(experiment_id, schema.TAG_EXPERIMENT_KIND,
                                  schema.EXPERIMENT_KIND)
    return experiment_id


@contextmanager
def _one_at_a_time(tracking_uri: str) -> Iterator[None]:
    """For a SQLite store, an exclusive lock (``flock``) on its directory, held while the
    store and the experiment are looked up or created. The first client of a new SQLite
    store writes MLflow's tables; two at once both run the schema migrations, and one
    fails ("duplicate column name: step"). A lock on the directory leaves no file behind.
    A tracking server creates its own store. (``flock`` is POSIX: elsewhere, no lock.)"""
    path = sqlite_path(tracking_uri)
    if path is None or os.name != "posix":
        yield
        return
    import fcntl

    directory = os.open(path.parent, os.O_RDONLY)
    try:
        fcntl.flock(directory, fcntl.LOCK_EX)
        yield
    finally:
        os.close(directory)  # releases the lock


def is_deleted_experiment(tracking_uri: str, name: str) -> bool:
    """Whether ``name`` is an experiment deleted in MLflow (its name stays reserved, and
    runs logged into it are hidden in the UI). A SQLite store that does not exist yet, or
    an empty file (``touch mlflow.db``), holds no experiment and is not opened: MLflow
    would write its tables into it, before the study's other checks have passed. A file
    that is not an SQLite database is an input error (``tracking.tracking_uri``)."""
    if sqlite_without_store(tracking_uri) is not None:
        return False
    found = open_store(tracking_uri, field="tracking.tracking_uri").get_experiment_by_name(name)
    return found is not None and found.lifecycle_stage == "deleted"


def start_study_run(
    tracking_uri: str,
    experiment: str,
    study_name: str,
    resolved_config: Mapping[str, Any],
    search_spaces: Mapping[str, Mapping[str, Any]],
    objective: tuple[str, str],
) -> TrackingTarget:
    """Create (or reuse) the experiment and open the study's parent run, with the resolved
    config and the search spaces as artifacts; the analysis reads the spaces back to know
    each parameter's scale. ``objective`` is the (metric, mode) the study optimises."""
    client = MlflowClient(tracking_uri)
    experiment_id = get_or_create_experiment(tracking_uri, experiment)
    metric, mode = objective
    run = client.create_run(experiment_id, run_name=study_name, tags={
        schema.TAG_ROLE: schema.ROLE_STUDY, schema.TAG_STUDY: study_name,
        schema.TAG_STUDY_METRIC: metric, schema.TAG_STUDY_MODE: mode,
        schema.TAG_NOTE: f"Study {study_name}: one child run per trial. Optimises {metric} "
        f"({mode}). Per method, the metrics <method>.trials, <method>.completed and "
        f"<method>.{schema.SUMMARY_BEST_PREFIX}{metric} and the tag "
        f"<method>.{schema.SUMMARY_BEST_RUN} summarise it once it ends; the report "
        f"appears under the artifacts' {schema.REPORT_DIR}/ once `sslstudy analyze` ran.",
        **source_tags("search"),
    })
    run_id = run.info.run_id
    params = _study_params(resolved_config)
    for chunk in _chunks([Param(k, v) for k, v in params.items()], 100):
        client.log_batch(run_id, params=chunk)
    client.log_dict(run_id, dict(resolved_config), schema.RESOLVED_CONFIG)
    client.log_text(run_id, json.dumps(search_spaces, indent=2, default=str),
                    schema.SEARCH_SPACES)
    return TrackingTarget(tracking_uri, experiment_id, run_id)


def _study_params(config: Mapping[str, Any]) -> dict[str, str]:
    """The settings that tell studies apart, as the parent run's params: the training
    budget and data, what was searched and how (per-method spaces stay an artifact)."""
    sections = {"data": ("dataset", "num_train", "val_fraction"),
                "train": ("backbone", "epochs", "optimizer", "lr_scaling", "budget_unit"),
                "search": ("num_samples", "metric", "mode", "grace_period",
                           "reduction_factor", "cross_method", "sampler",
                           "n_startup_trials")}
    params = {f"{section}.{key}": str(config.get(section, {}).get(key))
              for section, keys in sections.items() for key in keys
              if key in config.get(section, {})}
    params["seed"] = str(config.get("seed"))
    params["seed_policy"] = str(config.get("seed_policy"))
    params["methods"] = ",".join(config.get("methods", {}))
    return params


def reopen_study_run(target: TrackingTarget) -> str:
    """A resumed study (or the confirmation of a finished one) continues its parent run,
    which is no longer interrupted. Returns the run's status before."""
    assert target.parent_run_id is not None
    client = MlflowClient(target.tracking_uri)
    run = client.get_run(target.parent_run_id)
    client.update_run(target.parent_run_id, status="RUNNING")
    if schema.TAG_STUDY_INTERRUPTED in run.data.tags:
        client.delete_tag(target.parent_run_id, schema.TAG_STUDY_INTERRUPTED)
    return run.info.status


def close_interrupted(target: TrackingTarget, note: str, finished_before: bool) -> int:
    """Close the runs of a command the user stopped: every child run of its parent still
    running (their trials stopped with Tune, their checkpoints kept) becomes
    ``interrupted``, and the parent run gets ``note`` (what was left, how to continue).
    The parent run is KILLED, unless it had finished before this command reopened it
    (the confirmation of a finished search): its search is no less finished. ``--resume``
    reopens all of them. Returns how many trial runs were open.

    The MLflow UI shows KILLED runs as stopped, not failed, and the analysis leaves
    interrupted runs out, as it does running ones."""
    assert target.parent_run_id is not None
    client = MlflowClient(target.tracking_uri)
    runs = [r for r in child_runs(target.tracking_uri, target.experiment_id,
                                  target.parent_run_id) if r.info.status == "RUNNING"]
    for run in runs:
        client.set_tag(run.info.run_id, schema.TAG_STATUS, schema.INTERRUPTED)
        client.set_terminated(run.info.run_id, "KILLED")
    client.set_tag(target.parent_run_id, schema.TAG_STUDY_INTERRUPTED, note)
    client.set_terminated(target.parent_run_id, "FINISHED" if finished_before else "KILLED")
    return len(runs)


def end_study_run(
    target: TrackingTarget, summary: Mapping[str, Any], failed: bool,
    artifact: str = schema.SUMMARY,
) -> None:
    """Close the parent run with ``summary`` as the JSON artifact ``artifact``."""
    client = MlflowClient(target.tracking_uri)
    assert target.parent_run_id is not None
    client.log_dict(target.parent_run_id, dict(summary), artifact)
    client.set_terminated(target.parent_run_id, "FAILED" if failed else "FINISHED")


def log_study_summary(target: TrackingTarget, objective: tuple[str, str],
                      methods: Iterable[str]) -> dict[str, dict[str, Any]]:
    """Per method, on the parent run: its trials, how many reached the full budget, the
    best value there of the study's metric (a metric) and that run's id (a tag, as it
    changes when a resumed study finds a better trial). Returns them by method."""
    assert target.parent_run_id is not None
    metric, mode = objective
    runs = [r for r in child_runs(target.tracking_uri, target.experiment_id,
                                  target.parent_run_id)
            if r.data.tags.get(schema.TAG_RUN_KIND, schema.KIND_SEARCH) == schema.KIND_SEARCH]
    best = best_trial_runs(runs, metric, mode)
    now = int(time.time() * 1000)
    metrics, tags, summary = [], [], {}
    for method in methods:
        mine = [r for r in runs if r.data.tags.get(schema.TAG_METHOD) == method]
        completed = sum(r.data.tags.get(schema.TAG_STATUS) == schema.COMPLETED for r in mine)
        summary[method] = {"trials": len(mine), "completed": completed}
        metrics += [Metric(schema.method_key(method, schema.SUMMARY_TRIALS), len(mine), now, 0),
                    Metric(schema.method_key(method, schema.SUMMARY_COMPLETED), completed, now,
                           0)]
        if method in best:
            value = best[method].data.metrics[metric]
            summary[method] |= {"best": value, "best_run_id": best[method].info.run_id,
                                "best_run_name": best[method].info.run_name,
                                "params": dict(best[method].data.params)}
            metrics.append(Metric(schema.method_key(method, schema.SUMMARY_BEST_PREFIX + metric),
                                  value, now, 0))
            tags.append(RunTag(schema.method_key(method, schema.SUMMARY_BEST_RUN),
                               best[method].info.run_id))
    MlflowClient(target.tracking_uri).log_batch(target.parent_run_id, metrics=metrics,
                                                tags=tags)
    return summary


def log_references(target: TrackingTarget, method: str, scores: Mapping[str, float]) -> None:
    """A method's reference scores (random initialisation, chance) on the study's parent
    run, under ``<method>.<metric>``."""
    assert target.parent_run_id is not None
    now = int(time.time() * 1000)
    MlflowClient(target.tracking_uri).log_batch(target.parent_run_id, metrics=[
        Metric(schema.method_key(method, k), float(v), now, 0) for k, v in scores.items()
        if math.isfinite(v)])


def log_report(tracking_uri: str, run_ids: Iterable[str], files: Iterable[Path]) -> bool:
    """Attach a written report (its page and tables) to the studies it covers. A store
    that refuses (read-only, unreachable artifacts) leaves the written report as it is:
    False, with a warning."""
    client = MlflowClient(tracking_uri)
    files = list(files)
    try:
        for run_id in run_ids:
            for path in files:
                client.log_artifact(run_id, str(path), artifact_path=schema.REPORT_DIR)
    except (MlflowException, OSError) as exc:
        logger.warning("the report was not attached to the study's MLflow run: %s", exc)
        return False
    return True


def find_trial_run(target: TrackingTarget, trial_id: str) -> str | None:
    """The child run of ``trial_id`` under this study's parent run, if one was created."""
    client = MlflowClient(target.tracking_uri)
    runs = client.search_runs(
        [target.experiment_id],
        filter_string=(
            f"tags.{schema.TAG_TRIAL_ID} = '{trial_id}' and "
            f"tags.`{schema.TAG_PARENT_RUN}` = '{target.parent_run_id}'"
        ),
        max_results=1,
    )
    return runs[0].info.run_id if runs else None


def trial_failure_reason(target: TrackingTarget, trial_id: str) -> str | None:
    """The reason a trial's process recorded before it failed, if it could."""
    run_id = find_trial_run(target, trial_id)
    if run_id is None:
        return None
    tags = MlflowClient(target.tracking_uri).get_run(run_id).data.tags
    return tags.get(schema.TAG_FAILURE_REASON) or None


def close_orphaned_runs(target: TrackingTarget, method: str, kind: str) -> int:
    """Close the child runs of ``method`` and run kind ``kind`` (the Tuner's: search,
    confirm or sweep) still running, or still interrupted, after its Tuner finished.

    Tune closes every trial it knows and reopens the run of every trial it resumes, so
    such a run belongs to a trial that a driver started but never saved in its experiment
    state (it died, or a second Ctrl-C skipped the saving): no trial will ever finish it.
    """
    client = MlflowClient(target.tracking_uri)
    mine = (f"tags.`{schema.TAG_PARENT_RUN}` = '{target.parent_run_id}' and "
            f"tags.{schema.TAG_METHOD} = '{method}'")
    # Two queries: MLflow's filter has no OR.
    runs = [*client.search_runs([target.experiment_id],
                                filter_string=f"{mine} and attributes.status = 'RUNNING'"),
            *client.search_runs([target.experiment_id], filter_string=(
                f"{mine} and tags.{schema.TAG_STATUS} = '{schema.INTERRUPTED}'"))]
    # Another Tuner's runs under the same parent (a search's stopped confirmation runs)
    # are that Tuner's to continue. Runs of older versions may lack the kind: searches.
    runs = [r for r in runs if r.data.tags.get(schema.TAG_RUN_KIND, schema.KIND_SEARCH) == kind]
    for run in runs:
        client.log_batch(run.info.run_id, tags=[
            RunTag(schema.TAG_STATUS, schema.ORPHANED),
            RunTag(schema.TAG_FAILURE_REASON, "the driver died or was stopped before "
                                              "recording this trial; the resumed study "
                                              "continued without it"),
        ])
        client.set_terminated(run.info.run_id, "KILLED")
    return len(runs)


def close_trial_run(
    target: TrackingTarget, trial_id: str, budget: int | None, max_budget: int, error: str | None
) -> None:
    """Give a trial's run its final status once Tune is done with the trial; Tune's view
    is authoritative.

    A trial that Tune stopped early (ASHA) never returns from its function, so its run is
    closed here. A trial Tune saw complete is completed or stopped early by its budget,
    even if its process recorded a failure while being torn down (a multi-worker trial's
    trainer dies with the trial's placement group). A trial Tune saw fail keeps the reason
    its process recorded, or gets Tune's.
    """
    run_id = find_trial_run(target, trial_id)
    if run_id is None:
        logger.warning("trial %s ended before its MLflow run was created", trial_id)
        return
    client = MlflowClient(target.tracking_uri)
    run = client.get_run(run_id)
    if error is not None:
        if run.data.tags.get(schema.TAG_STATUS) == schema.FAILED:
            return
        client.log_batch(run_id, tags=[RunTag(schema.TAG_STATUS, schema.FAILED),
                                       RunTag(schema.TAG_FAILURE_REASON, error[:_MAX_REASON])])
        client.set_terminated(run_id, "FAILED")
        return
    status = schema.COMPLETED if budget is not None and budget >= max_budget \
        else schema.STOPPED_EARLY
    client.set_tag(run_id, schema.TAG_STATUS, status)
    if schema.TAG_FAILURE_REASON in run.data.tags:
        client.delete_tag(run_id, schema.TAG_FAILURE_REASON)
    client.set_terminated(run_id, "FINISHED")
