"""The MLflow tracking server for clusters, and the check that it answers.

On a cluster, trials run on worker nodes and log over HTTP to one tracking server, which
stores runs in SQLite (or PostgreSQL) and proxies artifacts, so workers need no access to
the server's disk. It binds to loopback unless told otherwise.

``mlflow server`` is a tree of processes (uvicorn, a job runner, huey consumers); the
server runs in a process group of its own and is stopped as a group, so that Ctrl-C or
SIGTERM leaves nothing listening behind.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import signal
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

from tracking.errors import TrackingError
from tracking.uris import DEFAULT_UI, runs_view_url, ui_base

#: How long the server's processes get to exit after SIGTERM before they are killed.
STOP_TIMEOUT_S = 10.0


def _mlflow_executable() -> str:
    """MLflow's command beside this interpreter: a virtual environment's ``bin`` need not
    be on PATH."""
    return shutil.which("mlflow", path=str(Path(sys.executable).parent)) or "mlflow"


def open_instructions(tracking_uri: str, experiment_id: str, run_id: str | None = None
                      ) -> list[str]:
    """How to look at an experiment's runs (or one run) in the MLflow UI, as lines that
    each work when pasted: the URL of a tracking server; for a database store, the
    command that serves it, then the URL it will answer at."""
    base = ui_base(tracking_uri)
    if base is not None:
        return [f"open: {runs_view_url(base, experiment_id, run_id)}"]
    command = shlex.join([_mlflow_executable(), "ui", "--backend-store-uri", tracking_uri,
                          "--port", DEFAULT_UI.rsplit(":", 1)[1]])
    return [f"start the MLflow UI: {command}",
            f"then open: {runs_view_url(DEFAULT_UI, experiment_id, run_id)}"]


def server_command(
    backend_store_uri: str,
    artifacts_destination: str,
    host: str,
    port: int,
    allowed_hosts: Sequence[str],
) -> list[str]:
    command = [
        _mlflow_executable(), "server",
        "--backend-store-uri", backend_store_uri,
        "--artifacts-destination", artifacts_destination,
        "--serve-artifacts",
        "--host", host,
        "--port", str(port),
    ]
    if allowed_hosts:
        command += ["--allowed-hosts", ",".join(allowed_hosts)]
    return command


#: MLflow's switch for the job execution a server starts by default (a job runner and
#: seven huey consumers, for GenAI jobs and trace roll-ups), which experiment tracking
#: never uses: measured on 2 cores, 2.1 GiB and 31 s of CPU in the server's first 40 s
#: with it, 0.3 GiB and 5 s without.
JOB_EXECUTION = "MLFLOW_SERVER_ENABLE_JOB_EXECUTION"


#: Python's warning filter for the server's processes: each of its workers warned that
#: MLflow's server imports Starlette's deprecated WSGI middleware, four blocks at every
#: start, meant for MLflow's developers (matched by the message's start).
SERVER_WARNINGS = ("PYTHONWARNINGS", "ignore:starlette.middleware.wsgi is deprecated")


def start_server(command: list[str], **popen_options: object) -> subprocess.Popen:
    """Start the server in a new session (its own process group), without MLflow's job
    execution nor that warning unless the environment asks for them."""
    env = {JOB_EXECUTION: "false", SERVER_WARNINGS[0]: SERVER_WARNINGS[1], **os.environ}
    return subprocess.Popen(command, start_new_session=True, env=env, **popen_options)  # type: ignore[call-overload]


def _group_runs(group: int) -> bool:
    """Whether a process of process group ``group`` still runs. On Linux, from /proc, where
    a zombie (which holds no port or file) does not count: an orphaned worker's zombie
    may wait for a reaper that never comes in a container. Elsewhere, whether the group
    has a member at all."""
    proc = Path("/proc")
    if not proc.is_dir():
        try:
            os.killpg(group, 0)
        except ProcessLookupError:
            return False
        return True
    for stat in proc.glob("[0-9]*/stat"):
        try:
            state, _parent, member_of = stat.read_text().rsplit(")", 1)[1].split()[:3]
        except (OSError, ValueError):
            continue  # gone meanwhile
        if int(member_of) == group and state != "Z":
            return True
    return False


def stop_server(process: subprocess.Popen, timeout_s: float = STOP_TIMEOUT_S) -> None:
    """Stop the server's whole process group: SIGTERM, then SIGKILL after ``timeout_s``;
    returns once none of its processes runs (or ``timeout_s`` after the SIGKILL)."""
    try:
        os.killpg(process.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=timeout_s)
    # The group's other members (workers) may outlive the leader.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    # A killed process runs until the kernel schedules its exit, which on a loaded
    # machine can be after this returns; waited for, so that nothing is left running.
    deadline = time.monotonic() + timeout_s
    while _group_runs(process.pid) and time.monotonic() < deadline:
        time.sleep(0.05)


def run_server(command: list[str]) -> int:
    """Run the server in the foreground until it exits or this process is interrupted
    (SIGINT or SIGTERM); either way its process group is stopped before returning. The
    exit status is the server's, or 0 after an interruption."""
    process = start_server(command)
    interrupted = False

    def forward(signum: int, frame: FrameType | None) -> None:
        nonlocal interrupted
        interrupted = True
        raise KeyboardInterrupt

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        code = process.wait()
    except KeyboardInterrupt:
        code = 0
    finally:
        stop_server(process)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0 if interrupted else code


def check_tracking_server(uri: str, timeout_s: float = 5.0,
                          field: str = "tracking.tracking_uri") -> None:
    """Fail fast, before any trial starts or any read waits out MLflow's retries (about
    four minutes), when nothing answers at ``uri``; ``field`` is where the URI came from,
    for the message.

    Only an unreachable host or port is refused. Any HTTP answer (an authenticating
    proxy's 401 too) or a TLS handshake this probe cannot verify (a private CA that
    MLflow is configured to trust) means a server is there: MLflow's own calls, with its
    credentials and TLS settings, then say what is wrong. Credentials in the URI are
    left out of the probe and of the message."""
    parts = urllib.parse.urlsplit(uri)
    host = parts.hostname or ""
    host = f"[{host}]" if ":" in host else host
    bare = parts._replace(netloc=host + (f":{parts.port}" if parts.port else "")).geturl()
    try:
        with urllib.request.urlopen(bare.rstrip("/") + "/health", timeout=timeout_s):
            return
    except urllib.error.HTTPError:
        return
    except urllib.error.URLError as exc:
        if isinstance(exc.reason, ssl.SSLError):
            return
        problem = str(exc.reason)
    except (OSError, ValueError) as exc:
        problem = str(exc)
    raise TrackingError(
        f"{field}: no MLflow tracking server answers at {bare} ({problem}); "
        "start one with `sslstudy tracking-server`"
    )
