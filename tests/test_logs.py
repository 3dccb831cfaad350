"""What a command prints: its own lines, and the libraries' warnings, without the notices
the libraries print on every run (each checked against the library's own message, so
that a rewording shows here rather than on the user's screen)."""

from __future__ import annotations

import importlib
import inspect
import logging
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import optuna
import pytest
from ray._private.authentication import authentication_token_setup

from study.logs import DROPPED_NOTICES, DroppedNotice, configure_logging, quiet_optuna


class _Kept(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@pytest.fixture
def ray_auth_messages():
    logger = logging.getLogger(authentication_token_setup.__name__)
    kept, filters = _Kept(), list(logger.filters)
    logger.addHandler(kept)
    yield kept.messages
    logger.removeHandler(kept)
    logger.filters[:] = filters


def test_ray_keeping_its_token_default_is_not_announced_but_auth_off_is(
        ray_auth_messages: list[str]) -> None:
    configure_logging(logging.INFO)
    configure_logging(logging.INFO)  # a study's task configures its process again
    assert len(logging.getLogger(authentication_token_setup.__name__).filters) == 1
    authentication_token_setup._warn_token_auth_enabled()
    authentication_token_setup._warn_token_auth_disabled()
    assert len(ray_auth_messages) == 1
    assert ray_auth_messages[0].startswith("Token authentication is disabled")


def test_a_new_mlflow_store_opens_without_a_word(tmp_path: Path) -> None:
    # A process of its own: MLflow sets its loggers up once, when it is first imported.
    code = ("import logging, sys\n"
            "from study.logs import configure_logging\n"
            "configure_logging(logging.INFO)\n"
            "from mlflow.tracking import MlflowClient\n"
            "MlflowClient('sqlite:///' + sys.argv[1]).search_experiments()\n")
    done = subprocess.run([sys.executable, "-c", code, str(tmp_path / "new.db")],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""


def test_a_new_optuna_study_is_not_announced(tmp_path: Path) -> None:
    logger, kept, before = logging.getLogger("optuna"), _Kept(), optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(logging.INFO)  # as Optuna sets itself when imported
    logger.addHandler(kept)
    try:
        quiet_optuna()
        optuna.create_study(study_name="quiet", storage=f"sqlite:///{tmp_path / 'o.db'}")
    finally:
        logger.removeHandler(kept)
        optuna.logging.set_verbosity(before)
    assert kept.messages == []


@pytest.mark.parametrize("notice", DROPPED_NOTICES, ids=lambda n: n.logger)
def test_every_dropped_notice_names_a_logger_and_message_of_the_installed_ray(
        notice: DroppedNotice) -> None:
    """A logger is its module's name: the module must exist and still say the notice
    (its start: Ray splits long messages across source lines), or the filter hides
    nothing and the notice is back on the user's screen."""
    source = inspect.getsource(importlib.import_module(notice.logger))
    assert notice.start[:30] in source


@pytest.mark.parametrize("retried", [False, True])
def test_a_failed_confirmation_or_sweep_run_is_one_line(tmp_path: Path, caplog,
                                                        retried: bool) -> None:
    """Tune's traceback of a failed trial is off in every fit: a fixed run (confirm,
    sweep) says it failed in one line too (before: nothing), read from the trial's own
    error file."""
    from study.grid import FixedProgress

    error_file = tmp_path / "error.txt"
    error_file.write_text("Failure # 1\nTraceback ...\nValueError: boom\n")
    trial = SimpleNamespace(
        config={"run": {"label": "simclr confirm 1a2b (best) seed 1/2"}},
        error_file=str(error_file), path="/study/confirm/trial",
        run_metadata=SimpleNamespace(error_filename="error.txt", num_failures=1))
    progress = FixedProgress("val_knn_acc", 3)
    caplog.set_level(logging.WARNING)
    (progress.on_trial_recover if retried else progress.on_trial_error)(
        iteration=1, trials=[trial], trial=trial)
    (line,) = [r.getMessage() for r in caplog.records]
    retry = "; retrying from its last checkpoint (failure 1)" if retried else ""
    assert line == (f"simclr confirm 1a2b (best) seed 1/2 failed: ValueError: boom{retry} "
                    "(traceback: /study/confirm/trial/error.txt)")


def test_every_ray_session_gets_its_own_worker_setup_and_ray_client_none() -> None:
    """Ray fills in the runtime environment it is given: a second session of the process
    given the filled one was refused ("Conflicting worker_process_setup_hook"). Ray Client
    sends it as JSON, which a function is not (a TypeError at connection)."""
    from study.cluster import _worker_setup
    from trainables.logs import quiet_ray_logs

    first, second = _worker_setup(None), _worker_setup("10.0.0.1:6379")
    assert first == second == {"worker_process_setup_hook": quiet_ray_logs}
    assert first is not second
    assert _worker_setup("ray://10.0.0.1:10001") is None
