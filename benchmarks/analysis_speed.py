"""How long ``sslstudy analyze`` takes, beside the time to read the runs alone.

Builds planted experiments in a temporary SQLite MLflow store (logged through MLflow's
client, as trials log them; building takes longer than analysing):

- ``small``: 200 trials of one method with 6 parameters, stopped ASHA-style at 1, 2, 4
  and 8 epochs (importance is estimated at every budget with enough trials);
- ``large``: 1,000 trials of one method with 6 parameters and 3 metrics of 20 steps each.

For each it logs the time to read the experiment (runs and metric histories, in bulk),
the time of the whole analysis (reading included: tables, importance with its bootstrap
and permutation null at every budget, figures, report), and with ``--per-run`` the time
to read the histories one request per run and metric, as before bulk reading. With
``--server`` it also serves the store through a local ``mlflow server`` (in its own
process group, stopped afterwards) and times the same over HTTP.

    python benchmarks/analysis_speed.py [--only small|large] [--server] [--per-run]

Timings depend on the machine and on what else runs on it; compare numbers from one run.
"""

from __future__ import annotations

import argparse
import logging
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from planted import Trial, create_experiment, uniform_design, write_study  # noqa: E402

from analysis.report import run_analysis  # noqa: E402
from analysis.runs import load_experiment, open_experiment  # noqa: E402
from tracking.server import server_command, start_server, stop_server  # noqa: E402

logger = logging.getLogger("benchmark")
SPACE = {
    "lr": ("log", (1e-4, 1e-1)), "weight_decay": ("log", (1e-6, 1e-2)),
    "temperature": ("log", (0.05, 1.0)), "batch_size": ("categorical", [64, 128, 256, 512]),
    "aug_strength": ("linear", (0.0, 1.0)), "momentum": ("linear", (0.9, 0.999)),
}
RUNGS = (1, 2, 4, 8)


def _score(row: dict, fraction: float) -> float:
    """A planted response: lr with an optimum at 3e-3, temperature at 0.2, a little
    augmentation, nothing else; rising with the fraction of the budget trained."""
    lr = -((np.log10(row["lr"]) + 2.5) ** 2) * 0.05
    temperature = -((np.log10(row["temperature"]) + 0.7) ** 2) * 0.1
    return 0.3 + (0.4 + lr + temperature + 0.05 * row["aug_strength"]) * fraction ** 0.5


def _trials(trials: int, steps: int, asha: bool, rng: np.random.Generator) -> list[Trial]:
    design = uniform_design(rng, trials, SPACE)
    out = []
    for i, row in enumerate(design.to_dict("records")):
        budget = RUNGS[min(len(RUNGS) - 1, int(np.log2(1 + i % 8)))] if asha else steps
        full = RUNGS[-1] if asha else steps
        metrics = {
            "knn_acc": {s: _score(row, s / full) + rng.normal(0, 0.01)
                        for s in range(1, budget + 1)},
            "loss": {s: 5.0 - 2.0 * s / full + rng.normal(0, 0.05) for s in range(1, budget + 1)},
            "images_per_sec": {s: 800.0 + rng.normal(0, 20) for s in range(1, budget + 1)},
        }
        status = "completed" if budget == full else "stopped_early"
        out.append(Trial("simclr", row, metrics, status, max_budget=full))
    return out


def build(directory: Path, name: str, trials: int, steps: int, asha: bool) -> str:
    uri = f"sqlite:///{directory / f'{name}.db'}"
    client, experiment_id = create_experiment(uri, name)
    spaces = {"simclr": {"params": {
        p: ({"type": "categorical", "choices": d} if s == "categorical" else
            {"type": "float", "low": d[0], "high": d[1], "scale": s})
        for p, (s, d) in SPACE.items()}}}
    started = time.perf_counter()
    write_study(client, experiment_id, _trials(trials, steps, asha, np.random.default_rng(0)),
                spaces, ("knn_acc", "max"))
    logger.info("%s: built %d trials in %.1f s", name, trials, time.perf_counter() - started)
    return uri


def _timed(action: Callable[[], object]) -> float:
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def measure(uri: str, name: str, out: Path, per_run: bool, where: str) -> None:
    def read() -> None:
        client, found = open_experiment(uri, name)
        load_experiment(client, found, "knn_acc", "max")

    read_s = _timed(read)
    analysis_s = _timed(lambda: run_analysis(uri, name, None, None, "auto", out))
    logger.info("%s over %s: read %.1f s, analysis %.1f s (reading included)", name, where,
                read_s, analysis_s)
    if per_run:
        client, found = open_experiment(uri, name)
        runs = client.search_runs([found.experiment_id], max_results=5000)

        def run_by_run() -> None:
            for run in runs:
                for key in run.data.metrics:
                    client.get_metric_history(run.info.run_id, key)

        logger.info("%s over %s: histories one request per run and metric: %.1f s", name,
                    where, _timed(run_by_run))


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _wait_for(url: str, timeout_s: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2):
                return
        except (urllib.error.URLError, OSError):
            time.sleep(0.5)
    raise RuntimeError(f"no MLflow server answered at {url}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=("small", "large"))
    parser.add_argument("--server", action="store_true", help="also time over HTTP")
    parser.add_argument("--per-run", action="store_true",
                        help="also time reading histories one request per run and metric")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    # MLflow draws a progress bar for every artifact it downloads, even a 1 kB one.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    for noisy in ("alembic", "mlflow", "sslstudy", "matplotlib"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    cases = {"small": (200, 8, True), "large": (1000, 20, False)}
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        for name, (trials, steps, asha) in cases.items():
            if args.only and name != args.only:
                continue
            uri = build(directory, name, trials, steps, asha)
            measure(uri, name, directory / f"{name}-report", args.per_run, "SQLite")
            if not args.server:
                continue
            port = _free_port()
            server = start_server(server_command(
                uri, str(directory / "artifacts"), "127.0.0.1", port, []),
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            try:
                url = f"http://127.0.0.1:{port}"
                _wait_for(url)
                measure(url, name, directory / f"{name}-http-report", args.per_run, "HTTP")
            finally:
                stop_server(server)


if __name__ == "__main__":
    main()
