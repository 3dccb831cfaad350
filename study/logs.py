"""How an sslstudy process logs: the command's own, and a study's fit run as a task on a
Ray Client cluster. Standard library only, so that every command can set it up before it
loads anything heavy."""

from __future__ import annotations

import logging
import os

#: Libraries whose messages below a warning would drown the study's own.
NOISY = ("alembic", "mlflow", "ray", "optuna", "filelock")


def configure_logging(level: int) -> None:
    """The process's own messages from ``level``, the libraries' from warnings."""
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(message)s",
                        datefmt="%H:%M:%S")
    for noisy in NOISY:
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # MLflow draws a progress bar for every artifact it downloads, even a 1 kB one.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
