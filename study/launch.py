"""What ``search``, ``confirm`` and ``sweep`` share: the checks every run of trials needs
before anything starts, the study directory's state for ``--resume``, and the launch
itself (Ray, the study directory, the parent run, the dataset in the object store)."""

from __future__ import annotations

import json
import logging
import shlex
import sys
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from study import checks, paths
from study.cluster import (
    check_fits,
    check_shared_storage,
    cluster_nodes,
    default_max_concurrent,
    local_machine,
    ray_session,
)
from study.config import ConfigError, StudyConfig, config_as_dict, setting_default
from study.errors import StudyInterrupted
from study.settings import STUDY_STATE
from tracking.runs import (
    TrackingTarget,
    close_interrupted,
    end_study_run,
    reopen_study_run,
)
from trainables.data import ImageDataset

logger = logging.getLogger("sslstudy")

#: Settings that may change between a study's start and its resumption.
_RESUMABLE_CHANGES = frozenset({"search.max_concurrent"})


def analyze_command(experiment: str, tracking_uri: str, out: Path) -> str:
    """The ``sslstudy analyze`` command of a finished run of trials, as a line that works
    when pasted: the ``sslstudy`` beside this interpreter (a virtual environment's ``bin``
    need not be on PATH) and absolute paths."""
    executable = Path(sys.executable).parent / "sslstudy"
    return shlex.join([str(executable) if executable.exists() else "sslstudy", "analyze",
                       "--experiment", experiment, "--tracking-uri", tracking_uri,
                       "--out", str(out)])


def check_tracking(config: StudyConfig, address: str | None) -> str:
    """The tracking URI, made absolute, once the store and the Ray address are usable (the
    address first: it reads nothing and writes nothing)."""
    checks.check_address(address)
    tracking_uri = checks.check_tracking_uri(config.tracking.tracking_uri)
    checks.check_experiment(tracking_uri, config.experiment)
    return tracking_uri


def _flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(data, dict):
        return {prefix: data}
    out: dict[str, Any] = {}
    for key, value in data.items():
        out.update(_flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    return out


def _changed_field(started: dict[str, Any], now: dict[str, Any]) -> str | None:
    """The first setting that differs between two resolved configs, ignoring those that
    may change on resume. A setting added to the schema since the study started is not
    in its saved config; the older version ran as the setting's default does (the rule
    for every new setting), so that default is no change."""
    before, after = _flatten(started), _flatten(now)
    for key in sorted(set(before) | set(after)):
        if key in _RESUMABLE_CHANGES:
            continue
        if key not in before:
            known, default = setting_default(key)
            if known and after.get(key) == default:
                continue
        if before.get(key) != after.get(key):
            return key
    return None


def read_state(root: Path, flag: str = "--resume") -> dict[str, Any]:
    state_file = root / STUDY_STATE
    if not state_file.is_file():
        raise ConfigError(f"{flag}: no study at {str(root)!r} (no {STUDY_STATE})")
    return json.loads(state_file.read_text())


def resume_state(config: StudyConfig, root: Path, resume: bool,
                 rename: str = "choose another --name, ") -> dict[str, Any] | None:
    """The saved state of the study to resume, or None for a new one (whose directory
    must not already hold one); ``rename`` is how the command's user names another."""
    paths.check_creatable_dir("storage_path", root)
    if resume:
        state = read_state(root)
        changed = _changed_field(state["config"], config_as_dict(config))
        if changed:
            raise ConfigError(
                f"--resume: {changed} differs from the config the study at {str(root)!r} "
                "started with; resume with the same config and flags"
            )
        return state
    if root.exists() and any(root.iterdir()):
        raise ConfigError(
            f"storage_path: {str(root)!r} already holds a study named {root.name!r}; "
            f"{rename}remove that directory, or pass --resume"
        )
    return None


@dataclass(frozen=True)
class Launch:
    """A running launch: where runs go, the dataset in Ray's object store, and how many
    trials run at once."""

    target: TrackingTarget
    data: Any
    max_concurrent: int


@contextmanager
def launch(
    config: StudyConfig,
    root: Path,
    state: dict[str, Any] | None,
    address: str | None,
    dataset: ImageDataset,
    tracking_uri: str,
    start_parent: Callable[[], TrackingTarget],
) -> Iterator[Launch]:
    """Start (or join) Ray, create the study directory, open the parent run with
    ``start_parent`` (or reopen the resumed one) and put the dataset in the object store
    once for every trial and worker. Call it after every other check has passed.

    A new study that starts its own Ray opens its parent run while Ray starts. Ray's
    start takes 6-8 s on a 2-core machine, its processes using about half of the CPUs
    while the driver waits; opening the parent run is the driver's own CPU work (the
    MLflow store's first opening runs its schema migrations, and the search scores its
    untrained encoders there), which Ray's start then hides. Only a local start allows
    it: nothing after it can fail on the input (its resources are checked before, and
    one node shares its storage), whereas a cluster joined with ``--address`` is checked
    first, so that nothing is written if it does not fit. Ray itself starts in the main
    thread (started from another, the driver could not reach it afterwards)."""
    import ray

    from trainables.trainable import DatasetHandle

    starts_local_ray = address is None and not ray.is_initialized()
    if starts_local_ray:
        check_fits(config.resources, local_machine(), fixed=True)

    def open_parent() -> TrackingTarget:
        paths.prepare_sqlite_dir(tracking_uri)
        return start_parent()

    with ExitStack() as stack:
        early: Future[TrackingTarget] | None = None
        if starts_local_ray and state is None:
            pool = ThreadPoolExecutor(1, "open-parent-run")
            early = pool.submit(open_parent)
            pool.shutdown(wait=False)  # the opening goes on; its result is waited for
        try:
            stack.enter_context(ray_session(address))
            if not starts_local_ray:
                # A cluster started by someone else (tests, or --address) may not grow.
                check_fits(config.resources, cluster_nodes(), fixed=address is None)
            created = paths.make_dirs(root)
            try:
                check_shared_storage(root)
            except ConfigError:
                paths.remove_if_empty(created)
                raise
            max_concurrent = config.search.max_concurrent or default_max_concurrent(
                config.resources, ray.cluster_resources()
            )
            opened = early.result() if early is not None else None
        except BaseException as exc:
            if early is not None:
                _close_when_opened(early, exc)
            raise
        before = None
        if state is None:
            target = opened if opened is not None else open_parent()
            # The config's relative paths are relative to where the study was started,
            # which commands run later from elsewhere (confirm) need to know.
            state = {"config": config_as_dict(config), "tracking_uri": tracking_uri,
                     "experiment_id": target.experiment_id,
                     "parent_run_id": target.parent_run_id,
                     "working_directory": str(Path.cwd())}
            (root / STUDY_STATE).write_text(json.dumps(state, indent=2))
        else:
            target = TrackingTarget(state["tracking_uri"], state["experiment_id"],
                                    state["parent_run_id"])
            before = reopen_study_run(target)
        try:
            yield Launch(target, DatasetHandle.put(dataset), max_concurrent)
        except (StudyInterrupted, KeyboardInterrupt) as stopped:
            # A KeyboardInterrupt here is a second Ctrl-C (the first one Tune takes), or one
            # outside the fit: the trials continue from their last checkpoints all the same.
            note = str(stopped) if isinstance(stopped, StudyInterrupted) else (
                "interrupted: run the same command with --resume to continue")
            try:
                open_runs = close_interrupted(target, note, finished_before=before == "FINISHED")
            except Exception:
                logger.exception("could not mark the runs as interrupted; --resume reopens "
                                 "them all the same")
            else:
                logger.info("closed the parent run and %d trial run(s) as interrupted",
                            open_runs)
            raise


def close_unstarted(target: TrackingTarget, error: BaseException) -> None:
    """Close the parent run of a study that never started as failed, with ``error`` in its
    summary: no run stays RUNNING for a study that never ran (none can be resumed: its
    state is written only once the parent run is open and Ray runs). Stopped with Ctrl-C
    instead, it is KILLED, as a stopped study is, and says that a new start is the way
    on."""
    if isinstance(error, KeyboardInterrupt):
        close_interrupted(target, "interrupted before the study started, with nothing to "
                          "resume: run the same command again, without --resume",
                          finished_before=False)
        return
    end_study_run(target, {"error": f"the study did not start: {error!r}"}, failed=True)


def _close_when_opened(opening: Future[TrackingTarget], error: BaseException) -> None:
    """Ray's start (or what follows it) failed while the parent run was opening: close
    that run once it is open. An opening that failed itself closed its own run."""
    if not opening.done():
        logger.info("closing the study's parent run once it has opened")
    try:
        target = opening.result()
    except Exception as opening_error:
        if opening_error is not error:  # else it is the error being raised
            logger.exception("opening the parent run failed too, while Ray was starting")
        return
    close_unstarted(target, error)
