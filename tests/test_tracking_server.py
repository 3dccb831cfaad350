"""``sslstudy tracking-server`` stops as a whole: after Ctrl-C or SIGTERM none of the
processes ``mlflow server`` started (uvicorn, its job runner, huey consumers) is left,
and the port is free again. Here with a stand-in server, for both signals; the
multi-node test stops a real ``mlflow server`` with Ctrl-C and checks the same."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import pytest
from conftest import alive, descendants

#: A stand-in for ``mlflow server``: a process that starts two children which ignore
#: SIGTERM and SIGINT, as a server's workers may while they finish requests.
FAKE_SERVER = (
    "import signal, subprocess, sys, time\n"
    "child = 'import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
    "signal.signal(signal.SIGINT, signal.SIG_IGN); time.sleep(600)'\n"
    "procs = [subprocess.Popen([sys.executable, '-c', child]) for _ in range(2)]\n"
    "time.sleep(600)\n"
)


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_run_server_stops_its_whole_process_group(stop: int) -> None:
    runner = (
        "import sys\n"
        "from tracking import server\n"
        f"sys.exit(server.run_server([sys.executable, '-c', {FAKE_SERVER!r}], ))\n"
    )
    process = subprocess.Popen([sys.executable, "-c", runner.replace(", )", ")")])
    deadline = time.monotonic() + 30
    while len(below := descendants(process.pid)) < 3:
        assert time.monotonic() < deadline, "the fake server did not start its workers"
        time.sleep(0.1)
    process.send_signal(stop)
    assert process.wait(timeout=60) == 0
    assert not alive(below)
