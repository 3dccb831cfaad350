"""MLflow wiring: one parent run per study, one child run per trial.

Everything goes through an explicit ``MlflowClient`` rather than ``mlflow.start_run``'s
process-global active run, so several trials in one process, or a trial and the driver,
cannot write into each other's runs. A trial's run id travels with its checkpoints so
that a resumed trial continues its run instead of forking a new one.
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient

logger = logging.getLogger(__name__)

#: Child-run statuses written to the ``status`` tag.
COMPLETED, STOPPED_EARLY, FAILED, RUNNING = "completed", "stopped_early", "failed", "running"
#: A run whose trial the driver never recorded before dying; the resumed study has no
#: such trial.
ORPHANED = "orphaned"
STUDY_ROLE_TAG = "sslstudy.role"
STUDY_METRIC_TAG = "sslstudy.metric"
STUDY_MODE_TAG = "sslstudy.mode"


def resolve_tracking_uri(uri: str, cwd: Path | None = None) -> str:
    """Make a relative ``sqlite:///file.db`` absolute: Ray workers run in other
    directories and would otherwise each create their own empty database."""
    prefix = "sqlite:///"
    if uri.startswith(prefix) and not uri.startswith(prefix + "/"):
        path = (cwd or Path.cwd()) / uri[len(prefix) :]
        return prefix + str(path.resolve())
    return uri


@dataclass(frozen=True)
class TrackingTarget:
    """Where trial runs go; plain data so that it can be shipped to Ray workers."""

    tracking_uri: str
    experiment_id: str
    parent_run_id: str | None = None


def _chunks(items: list, size: int = 900):
    for i in range(0, len(items), size):
        yield items[i : i + size]


class TrialRun:
    """The MLflow run of one trial (or of one ``sslstudy train`` invocation)."""

    def __init__(
        self,
        target: TrackingTarget,
        *,
        run_name: str,
        tags: Mapping[str, str],
        params: Mapping[str, Any],
        run_id: str | None = None,
    ) -> None:
        self.client = MlflowClient(target.tracking_uri)
        if run_id is not None:
            # A retried or resumed trial continues its run; an earlier attempt may have
            # marked it failed.
            self.run_id = run_id
            self.client.update_run(run_id, status="RUNNING")
            self.client.set_tag(run_id, "status", RUNNING)
            return
        all_tags = dict(tags)
        if target.parent_run_id:
            all_tags["mlflow.parentRunId"] = target.parent_run_id
        all_tags["status"] = RUNNING
        run = self.client.create_run(target.experiment_id, run_name=run_name, tags=all_tags)
        self.run_id = run.info.run_id
        param_list = [Param(k, str(v)) for k, v in params.items()]
        for chunk in _chunks(param_list, 100):
            self.client.log_batch(self.run_id, params=chunk)

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        now = int(time.time() * 1000)
        batch = [Metric(k, float(v), now, step) for k, v in metrics.items()]
        self.client.log_batch(self.run_id, metrics=batch, tags=[RunTag("budget", str(step))])

    def log_result(
        self, metrics: Mapping[str, float], step: int, artifacts: Mapping[str, bytes]
    ) -> None:
        """Metrics at ``step`` and any files (relative path to content) of that step."""
        self.log_metrics(metrics, step)
        for relative, content in artifacts.items():
            path = PurePosixPath(relative)
            with tempfile.TemporaryDirectory() as directory:
                local = Path(directory) / path.name
                local.write_bytes(content)
                parent = str(path.parent)
                self.client.log_artifact(self.run_id, str(local),
                                         artifact_path=None if parent == "." else parent)

    def finish(self, status: str, reason: str | None = None) -> None:
        tags = [RunTag("status", status)]
        if reason:
            tags.append(RunTag("failure_reason", reason[:5000]))
        self.client.log_batch(self.run_id, tags=tags)
        self.client.set_terminated(self.run_id, "FAILED" if status == FAILED else "FINISHED")


def artifact_location(tracking_uri: str) -> str | None:
    """Where a new experiment keeps artifacts: beside a local SQLite database (MLflow's
    default, ``./mlruns`` of the current directory, would scatter them into each Ray
    trial's working directory); a tracking server's own artifact store otherwise."""
    if tracking_uri.startswith("sqlite:///"):
        database = Path(tracking_uri.removeprefix("sqlite:///")).resolve()
        return (database.parent / "mlartifacts").as_uri()
    return None


def get_or_create_experiment(client: MlflowClient, tracking_uri: str, name: str) -> str:
    existing = client.get_experiment_by_name(name)
    if existing is not None:
        return existing.experiment_id
    return client.create_experiment(name, artifact_location=artifact_location(tracking_uri))


def start_study_run(
    tracking_uri: str,
    experiment: str,
    study_name: str,
    resolved_config: Mapping[str, Any],
    search_spaces: Mapping[str, Mapping[str, Any]],
) -> TrackingTarget:
    """Create (or reuse) the experiment and open the study's parent run, with the resolved
    config and the search spaces as artifacts; the analysis reads the spaces back to know
    each parameter's scale."""
    client = MlflowClient(tracking_uri)
    experiment_id = get_or_create_experiment(client, tracking_uri, experiment)
    search = resolved_config.get("search", {})
    run = client.create_run(experiment_id, run_name=study_name, tags={
        STUDY_ROLE_TAG: "study", "study": study_name,
        # What the study optimised: the analysis reports on it unless told otherwise.
        STUDY_METRIC_TAG: str(search.get("metric", "")),
        STUDY_MODE_TAG: str(search.get("mode", "")),
    })
    run_id = run.info.run_id
    client.log_dict(run_id, dict(resolved_config), "resolved_config.yaml")
    client.log_text(run_id, json.dumps(search_spaces, indent=2, default=str), "search_spaces.json")
    return TrackingTarget(tracking_uri, experiment_id, run_id)


def close_orphaned_runs(target: TrackingTarget, method: str) -> int:
    """Close the child runs of ``method`` still running after its Tuner finished.

    Tune closes every trial it knows, so such a run belongs to a trial that a dead driver
    started but never saved in its experiment state: no trial will ever finish it.
    """
    client = MlflowClient(target.tracking_uri)
    runs = client.search_runs(
        [target.experiment_id],
        filter_string=(
            f"tags.`mlflow.parentRunId` = '{target.parent_run_id}' and tags.method = '{method}'"
            " and attributes.status = 'RUNNING'"
        ),
    )
    for run in runs:
        client.log_batch(run.info.run_id, tags=[
            RunTag("status", ORPHANED),
            RunTag("failure_reason", "the driver died before recording this trial; the "
                                     "resumed study continued without it"),
        ])
        client.set_terminated(run.info.run_id, "KILLED")
    return len(runs)


def reopen_study_run(target: TrackingTarget) -> None:
    """A resumed study continues its parent run."""
    assert target.parent_run_id is not None
    MlflowClient(target.tracking_uri).update_run(target.parent_run_id, status="RUNNING")


def end_study_run(target: TrackingTarget, summary: Mapping[str, Any], failed: bool) -> None:
    client = MlflowClient(target.tracking_uri)
    assert target.parent_run_id is not None
    client.log_dict(target.parent_run_id, dict(summary), "summary.json")
    client.set_terminated(target.parent_run_id, "FAILED" if failed else "FINISHED")


def find_trial_run(target: TrackingTarget, trial_id: str) -> str | None:
    """The child run of ``trial_id`` under this study's parent run, if one was created."""
    client = MlflowClient(target.tracking_uri)
    runs = client.search_runs(
        [target.experiment_id],
        filter_string=(
            f"tags.trial_id = '{trial_id}' and tags.`mlflow.parentRunId` = '{target.parent_run_id}'"
        ),
        max_results=1,
    )
    return runs[0].info.run_id if runs else None


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
        if run.data.tags.get("status") == FAILED:
            return
        client.log_batch(
            run_id, tags=[RunTag("status", FAILED), RunTag("failure_reason", error[:5000])]
        )
        client.set_terminated(run_id, "FAILED")
        return
    status = COMPLETED if budget is not None and budget >= max_budget else STOPPED_EARLY
    client.set_tag(run_id, "status", status)
    if "failure_reason" in run.data.tags:
        client.delete_tag(run_id, "failure_reason")
    client.set_terminated(run_id, "FINISHED")
