"""Tracking URIs: which store a URI names and where its files go."""

from __future__ import annotations

from pathlib import Path

SQLITE_PREFIX = "sqlite:///"
#: Where ``mlflow ui`` (and ``sslstudy tracking-server``) listen by default.
DEFAULT_UI = "http://127.0.0.1:5000"


def sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` URI, else None."""
    return Path(uri.removeprefix(SQLITE_PREFIX)) if uri.startswith(SQLITE_PREFIX) else None


def sqlite_without_store(uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` URI that holds no store yet: missing, or
    empty (``touch mlflow.db``), where opening it would make MLflow write its tables.
    None for a file that may hold one, and for other URIs."""
    path = sqlite_path(uri)
    if path is not None and (not path.is_file() or path.stat().st_size == 0):
        return path
    return None


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


def ui_base(tracking_uri: str) -> str | None:
    """The address of the UI that shows this store: the tracking server itself, else
    None (a database store needs a UI started on it, at ``DEFAULT_UI`` by default)."""
    return tracking_uri.rstrip("/") if is_server(tracking_uri) else None


def runs_view_url(base: str, experiment_id: str, run_id: str | None = None) -> str:
    """The MLflow UI's runs table of an experiment (or one run's page). The
    ``workflowType`` parameter puts MLflow 3's UI in its "Model training" mode: it opens
    every experiment in its GenAI (traces) mode otherwise, whatever the experiment's
    kind."""
    path = f"{base.rstrip('/')}/#/experiments/{experiment_id}/runs"
    if run_id:
        path += f"/{run_id}"
    return path + "?workflowType=machine_learning"
