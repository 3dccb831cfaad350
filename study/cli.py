"""The ``sslstudy`` command line: ``search``, ``train`` and ``analyze``.

Every input problem (flags, config, data, paths) is reported as one line on stderr with
exit status 2, and is detected before anything is written: no MLflow run, no results
directory, no Optuna database.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

import yaml

logger = logging.getLogger("sslstudy")


class UsageError(ValueError):
    """Bad command-line usage; reported like a config error."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


def _at_least(minimum: int) -> Callable[[str], int]:
    """An argparse type: a whole number no smaller than ``minimum``."""
    what = "a positive integer" if minimum == 1 else f"a whole number >= {minimum}"

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        return value

    return parse


_positive_int = _at_least(1)
_count = _at_least(0)


def _port(text: str) -> int:
    value = _positive_int(text)
    if value > 65535:
        raise argparse.ArgumentTypeError(f"expected a port from 1 to 65535, got {text!r}")
    return value


def _values(text: str) -> list[str]:
    items = [item.strip() for item in text.split(",") if item.strip()]
    if not items:
        raise argparse.ArgumentTypeError(f"expected V1,V2,..., got {text!r}")
    return items


def _param(text: str) -> tuple[str, Any]:
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
    try:
        return name.strip(), yaml.safe_load(value)
    except yaml.YAMLError:
        raise argparse.ArgumentTypeError(f"cannot parse the value in {text!r}") from None


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="sslstudy", description=__doc__.splitlines()[0])
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    search = commands.add_parser("search", help="run a hyperparameter study")
    search.add_argument("config", type=Path)
    search.add_argument("--num-samples", type=_positive_int, help="trials per method")
    search.add_argument("--tracking-uri", help="MLflow tracking URI (default sqlite:///mlflow.db)")
    search.add_argument("--experiment", help="MLflow experiment (default: the study name)")
    search.add_argument("--storage-path", help="directory for Ray results and the Optuna db")
    search.add_argument("--address", help="Ray cluster address (auto or HOST:PORT)")
    search.add_argument("--max-concurrent", type=_positive_int, help="trials at once")
    search.add_argument("--name", help="study name (default: from the config)")
    search.add_argument(
        "--resume", action="store_true",
        help="continue the study whose driver died: keep finished trials, continue "
        "unfinished ones from their last checkpoint",
    )
    search.set_defaults(handler=_cmd_search)

    train = commands.add_parser("train", help="run one configuration without a search")
    train.add_argument("config", type=Path)
    train.add_argument("--method", help="which of the config's methods (needed if several)")
    train.add_argument(
        "--param", type=_param, action="append", default=[], metavar="NAME=VALUE",
        help="fix a hyperparameter for this run (repeatable)",
    )
    train.add_argument("--tracking-uri")
    train.add_argument("--experiment")
    train.set_defaults(handler=_cmd_train)

    confirm = commands.add_parser(
        "confirm", help="re-run a study's best and some random configurations with fresh "
        "seeds, at the full budget",
    )
    confirm.add_argument("study", type=Path, metavar="STUDY",
                         help="the study's directory (<storage_path>/<name>) or its config")
    confirm.add_argument("--top", type=_positive_int, default=3,
                         help="best configurations of each method to re-run (default 3)")
    confirm.add_argument("--seeds", type=_positive_int, default=3,
                         help="fresh seeds per configuration (default 3)")
    confirm.add_argument("--random", type=_count, default=2,
                         help="configurations chosen at random per method, for an unbiased "
                         "noise estimate (default 2)")
    confirm.add_argument("--address", help="Ray cluster address (auto or HOST:PORT)")
    confirm.add_argument("--max-concurrent", type=_positive_int, help="runs at once")
    confirm.add_argument("--resume", action="store_true",
                         help="continue confirmation runs whose driver died")
    confirm.set_defaults(handler=_cmd_confirm)

    sweep = commands.add_parser(
        "sweep", help="vary one or two hyperparameters around a configuration, several "
        "seeds each (a paper-style sensitivity table)",
    )
    sweep.add_argument("config", type=Path)
    sweep.add_argument("--method", help="the method to sweep (or the config's sweep.method)")
    sweep.add_argument("--param", help="hyperparameter to vary, e.g. temperature")
    sweep.add_argument("--values", type=_values, help="its values, e.g. 0.05,0.1,0.2,0.5")
    sweep.add_argument("--param2", help="a second hyperparameter (a two-way grid)")
    sweep.add_argument("--values2", type=_values, help="the second hyperparameter's values")
    sweep.add_argument("--around",
                       help="base configuration: best (of the config's study), defaults "
                       "(the default), or a YAML file of values")
    sweep.add_argument("--seeds", type=_positive_int, help="seeds per cell (default 3)")
    sweep.add_argument("--tracking-uri", help="MLflow tracking URI")
    sweep.add_argument("--experiment", help="MLflow experiment (default: the study name)")
    sweep.add_argument("--storage-path", help="directory for the sweep's Ray results")
    sweep.add_argument("--address", help="Ray cluster address (auto or HOST:PORT)")
    sweep.add_argument("--max-concurrent", type=_positive_int, help="runs at once")
    sweep.add_argument("--resume", action="store_true",
                       help="continue a sweep whose driver died (same flags)")
    sweep.set_defaults(handler=_cmd_sweep)

    analyze = commands.add_parser("analyze", help="write the sensitivity report of a study")
    analyze.add_argument("--experiment", required=True)
    analyze.add_argument("--tracking-uri", default="sqlite:///mlflow.db")
    analyze.add_argument(
        "--metric", help="default: the metric the study optimised (search.metric), else knn_acc"
    )
    analyze.add_argument("--mode", choices=("max", "min"),
                         help="default: the study's search.mode, else max")
    analyze.add_argument(
        "--budget", default="auto",
        help="epochs at which each method's trials are compared: auto (the default: the "
        "largest budget with enough trials for importance, 2 per searched parameter and "
        "at least 6), common (reached by every trial), full, or a number",
    )
    analyze.add_argument("--out", type=Path, required=True)
    analyze.set_defaults(handler=_cmd_analyze)

    server = commands.add_parser(
        "tracking-server", help="serve an MLflow tracking store for trials on other nodes"
    )
    server.add_argument("--backend-store-uri", default="sqlite:///mlflow.db")
    server.add_argument("--artifacts-destination", default="./mlartifacts")
    server.add_argument("--host", default="127.0.0.1",
                        help="interface to bind (default loopback; 0.0.0.0 for all)")
    server.add_argument("--port", type=_port, default=5000, help="TCP port (1 to 65535)")
    server.add_argument(
        "--allowed-hosts", default="",
        help="comma-separated Host headers to accept, e.g. the name workers use",
    )
    server.set_defaults(handler=_cmd_tracking_server)
    return parser


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "search.num_samples": getattr(args, "num_samples", None),
        "search.max_concurrent": getattr(args, "max_concurrent", None),
        "tracking.tracking_uri": args.tracking_uri,
        "tracking.experiment": args.experiment,
        "storage_path": getattr(args, "storage_path", None),
        "name": getattr(args, "name", None),
    }


def _cmd_search(args: argparse.Namespace) -> int:
    from study.search import run_search

    return run_search(args.config, _overrides(args), address=args.address, resume=args.resume)


def _cmd_train(args: argparse.Namespace) -> int:
    from study.train import run_train

    return run_train(args.config, _overrides(args), method=args.method, params=dict(args.param))


def _cmd_confirm(args: argparse.Namespace) -> int:
    from study.config import ConfirmConfig
    from study.confirm import run_confirm

    plan = ConfirmConfig(top=args.top, seeds=args.seeds, random=args.random)
    return run_confirm(args.study, plan, args.address, args.max_concurrent, args.resume)


def _cmd_sweep(args: argparse.Namespace) -> int:
    from study.sweep import run_sweep

    flags = {key: getattr(args, key) for key in
             ("method", "param", "values", "param2", "values2", "around", "seeds")}
    return run_sweep(args.config, _overrides(args), flags, args.address, args.resume)


def _cmd_analyze(args: argparse.Namespace) -> int:
    from analysis.report import run_analysis

    return run_analysis(
        tracking_uri=args.tracking_uri,
        experiment=args.experiment,
        metric=args.metric,
        mode=args.mode,
        budget=args.budget,
        out=args.out,
    )


def _cmd_tracking_server(args: argparse.Namespace) -> int:
    from tracking.server import run_server, server_command

    command = server_command(
        args.backend_store_uri,
        args.artifacts_destination,
        args.host,
        args.port,
        [h.strip() for h in args.allowed_hosts.split(",") if h.strip()],
    )
    logger.info("starting: %s", " ".join(command))
    return run_server(command)


def _configure_logging(quiet: bool) -> None:
    logging.basicConfig(
        level=logging.WARNING if quiet else logging.INFO,
        format="%(asctime)s %(levelname)s %(message)s",
        datefmt="%H:%M:%S",
    )
    for noisy in ("alembic", "mlflow", "ray", "optuna", "filelock"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # MLflow draws a progress bar for every artifact it downloads, even a 1 kB one.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


def main(argv: Sequence[str] | None = None) -> int:
    from analysis.errors import AnalysisInputError
    from study.config import ConfigError
    from tracking.errors import TrackingError

    try:
        args = build_parser().parse_args(argv)
        _configure_logging(args.quiet)
        return args.handler(args)
    except (UsageError, ConfigError, AnalysisInputError, TrackingError) as exc:
        print(f"sslstudy: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("sslstudy: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
