"""Checks and preparations of the places a command writes to, apart from ``checks`` so that
commands with nothing to train (``tracking-server``) use them without importing torch.

May import: the standard library, ``study.errors`` and ``tracking.uris``.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from study.errors import ConfigError
from tracking.uris import sqlite_path


def check_creatable_dir(field: str, path: Path) -> None:
    """``path`` exists as a writable directory or can be created: its nearest existing
    ancestor must let a directory be made in it (tried, then removed), which also catches
    file systems that refuse writes whatever the permission bits say (``/proc``, a
    read-only mount, running as root)."""
    ancestor = path
    while not ancestor.exists():
        if ancestor.parent == ancestor:
            break
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise ConfigError(f"{field}: {str(ancestor)!r} is not a directory")
    try:
        probe = tempfile.mkdtemp(prefix=".sslstudy-probe-", dir=ancestor)
    except OSError as exc:
        raise ConfigError(
            f"{field}: cannot create directories in {str(ancestor)!r} ({exc.strerror})"
        ) from None
    os.rmdir(probe)


def make_dirs(path: Path) -> list[Path]:
    """``mkdir -p path``; returns the directories this call created, deepest first: what
    to remove to leave the file system as it was when a later check refuses the command.
    Made one level at a time from the top, so that a directory another process creates
    meanwhile is never counted as this call's."""
    missing = []
    ancestor = path
    while not ancestor.exists() and ancestor.parent != ancestor:
        missing.append(ancestor)
        ancestor = ancestor.parent
    created = []
    for directory in reversed(missing):
        try:
            directory.mkdir()
        except FileExistsError:
            continue
        created.append(directory)
    path.mkdir(parents=True, exist_ok=True)
    return created[::-1]


def remove_if_empty(created: list[Path]) -> None:
    """Remove the directories ``make_dirs`` created, deepest first, as long as they are
    empty (what something else wrote in the meantime stays, and one already gone is
    passed over)."""
    for directory in created:
        if not directory.is_dir():
            continue
        if any(directory.iterdir()):
            return
        directory.rmdir()


def prepare_sqlite_dir(uri: str) -> None:
    """Create the SQLite file's directory (after every check has passed)."""
    database = sqlite_path(uri)
    if database is not None:
        database.parent.mkdir(parents=True, exist_ok=True)
