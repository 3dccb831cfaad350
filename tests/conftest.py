"""Shared fixtures and helpers: small generated datasets, methods built the way a trial
builds them, study configs, and a quiet torch."""

from __future__ import annotations

import contextlib
import io
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch
import yaml

from trainables.data import DataSpec, ImageDataset, load_dataset, with_validation
from trainables.hyperparameters import resolve_trial
from trainables.loop import train
from trainables.methods import build_method
from trainables.methods.base import SSLMethod

# The suite runs in two pytest-xdist workers on a 2-core machine: one torch thread each,
# so that a worker training a network does not oversubscribe the cores the other needs.
if os.environ.get("PYTEST_XDIST_WORKER"):
    torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _single_thread_torch():
    # CI has two cores; one thread per test process keeps timings predictable.
    torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _keep_signal_handlers():
    """A Tuner fitted in a test's main thread leaves Tune's Ctrl-C handler installed (it
    only sets an event of that finished fit): a later test in the same worker that
    interrupts itself with SIGINT would then go on instead of stopping."""
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGUSR1)}
    yield
    for sig, handler in handlers.items():
        signal.signal(sig, handler)


def write_study_config(tmp: Path, name: str, methods: dict, **sections: dict) -> Path:
    """A small study config in ``tmp``: 256 generated images, CPU, SQLite tracking in
    ``tmp/mlflow.db`` and Ray results in ``tmp/ray``; ``sections`` update its sections."""
    config: dict = {
        "name": name,
        "storage_path": str(tmp / "ray"),
        "data": {"dataset": "shapes", "num_train": 256, "num_test": 128},
        "train": {"epochs": 3, "device": "cpu"},
        "search": {"num_samples": 2, "grace_period": 3, "n_startup_trials": 1},
        "tracking": {"tracking_uri": f"sqlite:///{tmp / 'mlflow.db'}", "experiment": name},
        "methods": methods,
    }
    for key, value in sections.items():
        config[key] = {**config.get(key, {}), **value}
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture(scope="session")
def tiny_shapes() -> ImageDataset:
    return load_dataset(DataSpec("shapes", num_train=256, num_test=128, seed=0))


@pytest.fixture(scope="session")
def tiny_shapes_val(tiny_shapes: ImageDataset) -> ImageDataset:
    """``tiny_shapes`` with a validation part (a fifth of the train split), as a study
    loads it."""
    return with_validation(tiny_shapes, 0.2, seed=0)


def train_keeping_checkpoints(
    method: SSLMethod, dataset: ImageDataset, training, settings
) -> tuple[dict[int, dict], dict[int, dict]]:
    """Train ``method``; every epoch's checkpoint as a resumed trial reads it (saved and
    loaded back), and every epoch's metrics."""
    saved: dict[int, bytes] = {}
    results: dict[int, dict] = {}

    def keep(result) -> None:
        buffer = io.BytesIO()
        torch.save(result.state(), buffer)
        saved[result.epoch] = buffer.getvalue()
        results[result.epoch] = result.metrics

    train(method, dataset, training, settings, keep)
    states = {epoch: torch.load(io.BytesIO(data), weights_only=True)
              for epoch, data in saved.items()}
    return states, results


def make_method(name: str, dataset: ImageDataset, backbone: str = "small_cnn",
                **given) -> SSLMethod:
    """Method ``name`` as a trial builds it: ``given`` resolved over the declared
    defaults, the same seed for the initialisation every time."""
    torch.manual_seed(0)
    return build_method(name, backbone, dataset, resolve_trial(name, given).method)


#: Every process the test session starts inherits this variable, which is how the suite
#: finds the ones that outlive it (reparented orphans included).
SESSION_MARK = "SSLSTUDY_TEST_SESSION"
#: Helpers that live exactly as long as the interpreter that started them (the test process
#: itself), so not leaks: Python's multiprocessing helpers, and the pool of compile workers
#: torch.compile starts (seen on a 16-CPU GPU machine; torch shuts it down at exit).
_INTERPRETER_HELPERS = ("multiprocessing.resource_tracker", "multiprocessing.forkserver",
                        "torch/_inductor/compile_worker")


def _marked_processes(mark: str) -> dict[int, str]:
    """pid -> command line of every live process carrying this session's mark."""
    needle = f"{SESSION_MARK}={mark}".encode()
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if needle not in (entry / "environ").read_bytes().split(b"\0"):
                continue
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ")
        except OSError:
            continue
        text = command.decode(errors="replace")
        if not any(helper in text for helper in _INTERPRETER_HELPERS):
            found[int(entry.name)] = text[:160]
    return found


@pytest.fixture(scope="session", autouse=True)
def _no_process_outlives_the_suite() -> Iterator[None]:
    """Fail the session when a server, cluster or worker a test started is still running
    30 s after the last test (then kill it, so nothing is left behind)."""
    if not Path("/proc/self/environ").exists():
        yield
        return
    mark = uuid.uuid4().hex
    os.environ[SESSION_MARK] = mark
    yield
    deadline = time.monotonic() + 30
    while (left := _marked_processes(mark)) and time.monotonic() < deadline:
        time.sleep(0.5)
    for pid in left:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    assert not left, f"processes started by the tests outlived them: {left}"


def _experiment_written(database: Path, experiment: str) -> bool:
    """Whether a study has created ``experiment`` in ``database``, read without MLflow.
    Polled while a study's driver starts, an MLflow client would create the store itself
    and run MLflow's schema migrations beside the driver's: one of the two fails."""
    if not database.is_file():
        return False
    with contextlib.closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True)) as db:
        tables = {name for (name,) in db.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table'")}
        # A study creates its experiment once the store's tables are complete.
        if "experiments" not in tables:
            return False
        return db.execute("SELECT 1 FROM experiments WHERE name = ?",
                          (experiment,)).fetchone() is not None


def child_runs(tmp: Path, experiment: str) -> list:
    """The trial (child) runs of ``experiment`` in ``tmp/mlflow.db``; none before the
    experiment exists."""
    from mlflow.tracking import MlflowClient

    if not _experiment_written(tmp / "mlflow.db", experiment):
        return []
    client = MlflowClient(f"sqlite:///{tmp / 'mlflow.db'}")
    found = client.get_experiment_by_name(experiment)
    if found is None:
        return []
    return [r for r in client.search_runs([found.experiment_id])
            if "mlflow.parentRunId" in r.data.tags]


def metric_steps(tmp: Path, run_id: str, metric: str) -> list[int]:
    """The steps at which ``metric`` was logged to run ``run_id`` in ``tmp/mlflow.db``,
    repeats included (an epoch trained again after a retry is logged again)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{tmp / 'mlflow.db'}")
    return [m.step for m in client.get_metric_history(run_id, metric)]


def wait_for(predicate: Callable[[], bool], timeout_s: float, what: str) -> None:
    """Poll ``predicate`` every half second until it holds; fail naming ``what``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


def trial_process_ids(ray_starter: int) -> list[int]:
    """The processes that run Tune trials (a data-parallel trial's coordinator among
    them; not Ray Train's controller or workers) of the Ray that process ``ray_starter``
    started: its raylet and workers are its descendants. Another test worker's Ray on the
    same machine runs trials of its own, which must not be touched."""
    ours = descendants(ray_starter)
    listing = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True,
                             check=True).stdout
    found = []
    for line in listing.splitlines()[1:]:
        pid, _, title = line.strip().partition(" ")
        if int(pid) in ours and ("ray::ImplicitFunc" in title or "method_trial" in title):
            found.append(int(pid))
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def descendants(pid: int) -> set[int]:
    """Every live process below ``pid`` (children, grandchildren...)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            parents[int(entry.name)] = int(fields[1])
    found, frontier = set(), {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier}
        found |= frontier
    return found


def alive(pids: set[int]) -> set[int]:
    """The pids that still run (zombies count as gone)."""
    live = set()
    for pid in pids:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z":
            live.add(pid)
    return live


def _healthy(uri: str) -> bool:
    try:
        with urllib.request.urlopen(uri + "/health", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


@contextlib.contextmanager
def tracking_server(tmp: Path) -> Iterator[tuple[str, subprocess.Popen]]:
    """``sslstudy tracking-server`` on a free loopback port, as a user starts it; stopped
    with SIGTERM at the end (and its whole session killed if it does not stop)."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "study.cli", "tracking-server", "--port", str(port),
         "--backend-store-uri", f"sqlite:///{tmp / 'server.db'}",
         "--artifacts-destination", str(tmp / "artifacts")],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    uri = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    try:
        while not _healthy(uri):
            if time.monotonic() > deadline or process.poll() is not None:
                raise AssertionError("the tracking server did not start")
            time.sleep(0.5)
        yield uri, process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
