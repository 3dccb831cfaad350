"""The MLflow tracking server for clusters, and the check that it answers.

On a cluster, trials run on worker nodes and log over HTTP to one tracking server, which
stores runs in SQLite (or PostgreSQL) and proxies artifacts, so workers need no access to
the server's disk. It binds to loopback unless told otherwise.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path

from study.config import ConfigError


def server_command(
    backend_store_uri: str,
    artifacts_destination: str,
    host: str,
    port: int,
    allowed_hosts: Sequence[str],
) -> list[str]:
    mlflow = shutil.which("mlflow", path=str(Path(sys.executable).parent)) or "mlflow"
    command = [
        mlflow, "server",
        "--backend-store-uri", backend_store_uri,
        "--artifacts-destination", artifacts_destination,
        "--serve-artifacts",
        "--host", host,
        "--port", str(port),
    ]
    if allowed_hosts:
        command += ["--allowed-hosts", ",".join(allowed_hosts)]
    return command


def run_server(command: list[str]) -> int:
    """Run the server in the foreground until it exits or is interrupted."""
    return subprocess.run(command, check=False).returncode


def check_tracking_server(uri: str, timeout_s: float = 5.0) -> None:
    """Fail fast, before any trial starts, when no MLflow server answers at ``uri``."""
    health = uri.rstrip("/") + "/health"
    try:
        with urllib.request.urlopen(health, timeout=timeout_s) as response:
            if response.status == 200:
                return
            problem = f"HTTP {response.status}"
    except urllib.error.HTTPError as exc:
        problem = f"HTTP {exc.code}"
    except (urllib.error.URLError, OSError, ValueError) as exc:
        problem = str(getattr(exc, "reason", exc))
    raise ConfigError(
        f"tracking.tracking_uri: no MLflow tracking server answers at {uri} ({problem}); "
        "start one with `sslstudy tracking-server`"
    )
