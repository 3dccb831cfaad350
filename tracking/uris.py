"""Tracking URIs: which store a URI names and where its files go."""

from __future__ import annotations

from pathlib import Path

SQLITE_PREFIX = "sqlite:///"


def sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` URI, else None."""
    return Path(uri.removeprefix(SQLITE_PREFIX)) if uri.startswith(SQLITE_PREFIX) else None


def is_server(uri: str) -> bool:
    return uri.startswith(("http://", "https://"))


def resolve_tracking_uri(uri: str, cwd: Path | None = None) -> str:
    """Make a relative ``sqlite:///file.db`` absolute: Ray workers run in other
    directories and would otherwise each create their own empty database."""
    path = sqlite_path(uri)
    if path is not None and not path.is_absolute():
        return SQLITE_PREFIX + str(((cwd or Path.cwd()) / path).resolve())
    return uri


def artifact_location(tracking_uri: str) -> str | None:
    """Where a new experiment keeps artifacts: beside a local SQLite database (MLflow's
    default, ``./mlruns`` of the current directory, would scatter them into each Ray
    trial's working directory); a tracking server's own artifact store otherwise."""
    path = sqlite_path(tracking_uri)
    if path is not None:
        return (path.resolve().parent / "mlartifacts").as_uri()
    return None
