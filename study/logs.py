"""How an sslstudy process logs: the command's own, and a study's fit run as a task on a
Ray Client cluster. Standard library only, so that every command can set it up before it
loads anything heavy."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

#: Libraries whose messages below a warning would drown the study's own.
NOISY = ("alembic", "mlflow", "ray", "optuna", "filelock")


@dataclass(frozen=True)
class DroppedNotice:
    """A library's warning that a command would print on every run although it asks
    nothing of the user, or tells what the command says better itself. Matched by the
    logger and the start of the message, so that the library's other warnings, and this
    one reworded by a later version, still show."""

    logger: str
    start: str

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(self.start)


DROPPED_NOTICES = (
    # A new local Ray authenticates its clients with a token, its default, and says so at
    # every start. Naming the mode (RAY_AUTH_MODE=token) would keep it quiet, but Ray
    # reads the mode once per process, before a study could set it.
    DroppedNotice("ray._private.authentication.authentication_token_setup",
                  "Token authentication is enabled for this Ray cluster."),
    # After Ctrl-C Tune tells how to restore its Tuner in Python; the command's own last
    # line says how to continue the study (--resume).
    DroppedNotice("ray.tune.tune",
                  "Experiment has been interrupted, but the most recent state was saved."),
)


def configure_logging(level: int) -> None:
    """The process's own messages from ``level``, the libraries' from warnings."""
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(message)s",
                        datefmt="%H:%M:%S")
    for noisy in NOISY:
        logging.getLogger(noisy).setLevel(logging.WARNING)
    for notice in DROPPED_NOTICES:
        logging.getLogger(notice.logger).addFilter(notice)  # once: equal filters are one
    # MLflow draws a progress bar for every artifact it downloads, even a 1 kB one.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    # MLflow gives its loggers a level and a format of their own when it is imported
    # (after this runs), INFO unless told: a new SQLite store then announces its tables.
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")


def quiet_optuna() -> None:
    """Optuna's messages from warnings too. Optuna sets its logger to INFO, with a handler
    and a format of its own, when it is first imported, which :func:`configure_logging`
    runs before (importing Optuna there would slow every command by a few tenths of a
    second): a new study's storage otherwise announces each study it creates."""
    import optuna

    optuna.logging.set_verbosity(logging.WARNING)
