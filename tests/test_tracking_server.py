"""``sslstudy tracking-server`` stops as a whole: after Ctrl-C or SIGTERM none of the
processes ``mlflow server`` started (uvicorn, its job runner, huey consumers) is left,
and the port is free again. Here with a stand-in server, for both signals; the
multi-node test stops a real ``mlflow server`` with Ctrl-C and checks the same. Before
starting, the command checks its stores (here with no server started)."""

from __future__ import annotations

import http.server
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from conftest import alive, descendants

from study.cli import main
from tracking import server
from tracking.errors import TrackingError

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


@pytest.mark.parametrize("given,expected", [(None, "false"), ("true", "true")])
def test_mlflow_job_execution_is_off_unless_the_environment_turns_it_on(
    monkeypatch, given: str | None, expected: str
) -> None:
    if given is None:
        monkeypatch.delenv(server.JOB_EXECUTION, raising=False)
    else:
        monkeypatch.setenv(server.JOB_EXECUTION, given)
    process = server.start_server(
        [sys.executable, "-c", f"import os; print(os.environ[{server.JOB_EXECUTION!r}])"],
        stdout=subprocess.PIPE, text=True)
    out, _ = process.communicate(timeout=30)
    assert out.strip() == expected


def test_a_group_of_zombies_runs_nothing() -> None:
    """What ``stop_server`` waits for: a running member keeps a group running; a zombie
    (killed, not yet reaped) does not, though it is still the group's member."""
    leader = subprocess.Popen(["sleep", "30"], start_new_session=True)
    try:
        assert server._group_runs(leader.pid)
        leader.kill()
        deadline = time.monotonic() + 10
        while alive({leader.pid}):  # a zombie counts as gone
            assert time.monotonic() < deadline, "the killed leader did not become a zombie"
            time.sleep(0.01)
        assert not server._group_runs(leader.pid)
    finally:
        leader.kill()
        leader.wait()
    assert not server._group_runs(leader.pid)


@pytest.fixture
def no_server(tmp_path: Path, monkeypatch) -> list[list[str]]:
    """The commands ``sslstudy tracking-server`` would run, with none started; the
    current directory is an empty one."""
    monkeypatch.chdir(tmp_path)
    started: list[list[str]] = []
    monkeypatch.setattr(server, "run_server", lambda command: started.append(command) or 0)
    return started


@pytest.mark.parametrize("args,message", [
    (["--backend-store-uri", "sqlite:////proc/sslstudy/mlflow.db"],
     "--backend-store-uri: cannot create directories in '/proc'"),
    (["--backend-store-uri", "sqlite:///."], "--backend-store-uri: '.' is not a file"),
    (["--backend-store-uri", "mlruns"], "--backend-store-uri: unsupported 'mlruns'"),
    (["--backend-store-uri", "http://127.0.0.1:5000"],
     "--backend-store-uri: unsupported 'http://127.0.0.1:5000'"),
    (["--artifacts-destination", "/proc/sslstudy"],
     "--artifacts-destination: cannot create directories in '/proc'"),
    (["--artifacts-destination", "file:///proc/sslstudy"],
     "--artifacts-destination: cannot create directories in '/proc'"),
])
def test_bad_stores_are_one_line_exit_2_and_start_nothing(
    args: list[str], message: str, no_server: list[list[str]], tmp_path: Path, capsys
) -> None:
    code = main(["tracking-server", *args])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and err.startswith(f"sslstudy: error: {message}"), err
    assert no_server == [] and list(tmp_path.iterdir()) == []


def test_the_database_directory_is_made_before_the_server_starts(
    no_server: list[list[str]], tmp_path: Path
) -> None:
    database = tmp_path / "new" / "mlflow.db"
    assert main(["tracking-server", "--backend-store-uri", f"sqlite:///{database}",
                 "--artifacts-destination", "s3://bucket/artifacts"]) == 0
    (command,) = no_server
    assert command[command.index("--backend-store-uri") + 1] == f"sqlite:///{database}"
    assert command[command.index("--artifacts-destination") + 1] == "s3://bucket/artifacts"
    assert database.parent.is_dir() and not database.exists()


def test_the_server_starts_without_its_libraries_deprecation_warning(monkeypatch) -> None:
    """Each of the server's workers warned at start that MLflow imports Starlette's
    deprecated WSGI middleware; the warning is still there (without the filter), and the
    filter keeps it off the server's output."""
    monkeypatch.delenv(server.SERVER_WARNINGS[0], raising=False)
    importing = [sys.executable, "-c", "import mlflow.server.fastapi_app"]
    plain = subprocess.run(importing, capture_output=True, text=True, timeout=120)
    assert "starlette.middleware.wsgi is deprecated" in plain.stderr
    process = server.start_server(importing, stderr=subprocess.PIPE, text=True)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 0 and "deprecated" not in err, err


def test_a_server_that_answers_at_all_is_there_and_credentials_stay_out_of_the_message(
) -> None:
    """An authenticating proxy's 401 is a server that answers (MLflow's own calls carry
    the credentials); a URI's credentials are neither sent to the probe nor shown."""
    class Refusing(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_error(401)

        def log_message(self, *args) -> None:
            pass

    with http.server.ThreadingHTTPServer(("127.0.0.1", 0), Refusing) as proxy:
        threading.Thread(target=proxy.serve_forever, daemon=True).start()
        try:
            server.check_tracking_server(
                f"http://user:secret@127.0.0.1:{proxy.server_address[1]}", field="--x")
        finally:
            proxy.shutdown()
    with pytest.raises(TrackingError) as refused:
        server.check_tracking_server("http://user:secret@127.0.0.1:9", field="--x")
    assert "secret" not in str(refused.value)
    assert str(refused.value).startswith(
        "--x: no MLflow tracking server answers at http://127.0.0.1:9 (")
