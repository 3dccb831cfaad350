"""The ``sslstudy`` command line.

Every input problem (flags, config, data, paths) is reported as one line on stderr with
exit status 2, and is detected before anything is written: no MLflow run, no results
directory, no Optuna database. Nothing heavy is imported at module level: each command
imports its own module when it runs, so ``--help`` answers at once.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

from study.errors import StudyInterrupted
from study.logs import configure_logging

logger = logging.getLogger("sslstudy")

DESCRIPTION = """\
Hyperparameter studies of self-supervised learning methods: Ray Tune trials, Optuna's
TPE or QMC, ASHA early stopping, every trial recorded in MLflow, and a sensitivity report.

A study: search a config, analyze the experiment, open the report and the MLflow UI.
  sslstudy search configs/demo.yaml
  sslstudy analyze --experiment sslstudy-demo \\
      --tracking-uri sqlite:///demo-output/mlflow.db --out demo-output/report
Run sslstudy COMMAND --help for a command's flags and an example."""


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
    import yaml

    name, sep, value = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
    try:
        return name.strip(), yaml.safe_load(value)
    except yaml.YAMLError:
        raise argparse.ArgumentTypeError(f"cannot parse the value in {text!r}") from None


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return f"sslstudy {version('sslstudy')}"
    except PackageNotFoundError:
        return "sslstudy (not installed: run from a source tree)"


def _command(
    commands: argparse._SubParsersAction, name: str, summary: str, example: str,
    handler: Callable[[argparse.Namespace], int],
) -> argparse.ArgumentParser:
    """A subcommand whose help ends with an example that works as printed."""
    command = commands.add_parser(
        name, help=summary, description=summary[0].upper() + summary[1:] + ".",
        epilog=f"example:\n  {example}", formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    command.set_defaults(handler=handler)
    return command


def _tracking_flags(command: argparse.ArgumentParser, default: str | None) -> None:
    where = f" (default {default})" if default else " (default: the config's tracking section)"
    command.add_argument(
        "--tracking-uri", default=default, metavar="URI",
        help=f"MLflow tracking store: sqlite:///FILE.db or http://HOST:PORT{where}",
    )


def _study_tracking_flags(command: argparse.ArgumentParser) -> None:
    """Where a command that runs a config logs: the config's tracking section unless
    overridden."""
    _tracking_flags(command, None)
    command.add_argument("--experiment", metavar="NAME",
                         help="MLflow experiment (default: tracking.experiment, else the "
                         "study name)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="sslstudy", description=DESCRIPTION,
                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=_version())
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser,
                                     metavar="COMMAND")
    config_help = "the study's YAML config (see the README's config reference)"

    search = _command(commands, "search", "run a hyperparameter study of a config's methods",
                      "sslstudy search configs/demo.yaml --num-samples 4 --name demo-quick",
                      _cmd_search)
    search.add_argument("config", type=Path, metavar="CONFIG", help=config_help)
    search.add_argument("--num-samples", type=_positive_int, metavar="N",
                        help="trials per method (default: search.num_samples)")
    _study_tracking_flags(search)
    search.add_argument("--storage-path", metavar="DIR",
                        help="directory for Ray results and the Optuna database (default: "
                        "storage_path)")
    search.add_argument("--address", metavar="ADDRESS",
                        help="Ray cluster to join: auto or HOST:PORT (default: a local Ray)")
    search.add_argument("--max-concurrent", type=_positive_int, metavar="N",
                        help="trials at once (default: as many as the resources allow)")
    search.add_argument("--name", help="study name (default: the config's name)")
    search.add_argument(
        "--resume", action="store_true",
        help="continue the study that was interrupted (Ctrl-C) or whose driver died: keep "
        "finished trials, continue unfinished ones from their last checkpoint",
    )

    train = _command(commands, "train", "train one configuration of one method, without a "
                     "search (no Ray, no Optuna), and log it with its model",
                     "sslstudy train configs/demo.yaml --method simclr --epochs 2 "
                     "--param temperature=0.2", _cmd_train)
    train.add_argument("config", type=Path, metavar="CONFIG", help=config_help)
    train.add_argument("--method", help="which of the config's methods (needed if several)")
    train.add_argument(
        "--param", type=_param, action="append", default=[], metavar="NAME=VALUE",
        help="fix a hyperparameter for this run, e.g. lr=0.001 (repeatable; others take the "
        "config's fixed values, else the method's defaults)",
    )
    train.add_argument("--epochs", type=_positive_int, metavar="N",
                       help="training budget (default: train.epochs)")
    _study_tracking_flags(train)

    confirm = _command(
        commands, "confirm", "re-run a study's best and some random configurations with "
        "fresh seeds, at the full budget", "sslstudy confirm demo-output/ray_results/demo "
        "--top 2 --seeds 3", _cmd_confirm,
    )
    confirm.add_argument("study", type=Path, metavar="STUDY",
                         help="the study's directory (<storage_path>/<name>) or its config")
    confirm.add_argument("--top", type=_count, default=3, metavar="K",
                         help="best configurations of each method to re-run (default 3; 0: "
                         "only the random ones)")
    confirm.add_argument("--seeds", type=_positive_int, default=3, metavar="S",
                         help="fresh seeds per configuration (default 3)")
    confirm.add_argument("--random", type=_count, default=2, metavar="R",
                         help="configurations chosen at random per method, for an unbiased "
                         "noise estimate (default 2)")
    confirm.add_argument("--address", metavar="ADDRESS",
                         help="Ray cluster to join: auto or HOST:PORT (default: a local Ray)")
    confirm.add_argument("--max-concurrent", type=_positive_int, metavar="N",
                         help="runs at once (default: the study's search.max_concurrent, "
                         "else as many as the resources allow)")
    confirm.add_argument("--resume", action="store_true",
                         help="continue confirmation runs that were interrupted (Ctrl-C) "
                         "or whose driver died (same flags)")

    sweep = _command(
        commands, "sweep", "vary one or two hyperparameters around a configuration, several "
        "seeds each (a paper-style sensitivity table)",
        "sslstudy sweep configs/paper/demo-simclr-temperature.yaml", _cmd_sweep,
    )
    sweep.add_argument("config", type=Path, metavar="CONFIG", help=config_help)
    sweep.add_argument("--method", help="the method to sweep (or the config's sweep.method)")
    sweep.add_argument("--param", metavar="NAME",
                       help="hyperparameter to vary, e.g. temperature")
    sweep.add_argument("--values", type=_values, metavar="V1,V2,...",
                       help="its values, e.g. 0.05,0.1,0.2,0.5")
    sweep.add_argument("--param2", metavar="NAME", help="a second hyperparameter (a two-way "
                       "grid)")
    sweep.add_argument("--values2", type=_values, metavar="V1,V2,...",
                       help="the second hyperparameter's values")
    sweep.add_argument("--around", metavar="BASE",
                       help="base configuration: best (of the config's study), defaults "
                       "(the default), or a YAML file of values")
    sweep.add_argument("--seeds", type=_positive_int, metavar="S",
                       help="seeds per cell (default 3)")
    _study_tracking_flags(sweep)
    sweep.add_argument("--storage-path", metavar="DIR",
                       help="directory for the sweep's Ray results (default: the config's "
                       "storage_path)")
    sweep.add_argument("--address", metavar="ADDRESS",
                       help="Ray cluster to join: auto or HOST:PORT (default: a local Ray)")
    sweep.add_argument("--max-concurrent", type=_positive_int, metavar="N",
                       help="runs at once (default: the config's search.max_concurrent, "
                       "else as many as the resources allow)")
    sweep.add_argument("--resume", action="store_true",
                       help="continue a sweep that was interrupted (Ctrl-C) or whose "
                       "driver died (same flags)")

    analyze = _command(
        commands, "analyze", "write the sensitivity report of an MLflow experiment",
        "sslstudy analyze --experiment sslstudy-demo --tracking-uri "
        "sqlite:///demo-output/mlflow.db --out demo-output/report", _cmd_analyze,
    )
    analyze.add_argument("--experiment", required=True, metavar="NAME",
                         help="the MLflow experiment to analyse")
    _tracking_flags(analyze, "sqlite:///mlflow.db")
    analyze.add_argument(
        "--metric", help="default: the metric the study optimised (search.metric), else "
        "val_knn_acc, else knn_acc"
    )
    analyze.add_argument("--mode", choices=("max", "min"),
                         help="default: the study's search.mode, else max")
    analyze.add_argument(
        "--budget", default="auto",
        help="epochs at which each method's trials are compared: auto (the default: the "
        "largest budget with enough trials for importance, 2 per searched parameter and "
        "at least 6), common (reached by every trial), full, or a number",
    )
    analyze.add_argument("--out", type=Path, required=True, metavar="DIR",
                         help="directory for report.html, the tables and plots/")

    export = _command(
        commands, "export", "register a study's best encoder in the MLflow Model Registry, "
        "or write the study for DeepCAVE",
        "sslstudy export --experiment sslstudy-demo --tracking-uri "
        "sqlite:///demo-output/mlflow.db --method simclr --register demo-simclr", _cmd_export,
    )
    export.add_argument("--experiment", required=True, metavar="NAME",
                        help="the study's MLflow experiment")
    _tracking_flags(export, "sqlite:///mlflow.db")
    export.add_argument("--method", help="the method whose best run is exported (model: "
                        "required; deepcave: default every method)")
    export.add_argument("--format", choices=("model", "deepcave"), default="model",
                        help="model (the default): the best run's encoder, at the full "
                        "budget on the study's metric; deepcave: a DeepCAVE run per method")
    export.add_argument("--register", metavar="NAME",
                        help="register the best encoder under this Model Registry name")
    export.add_argument("--out", type=Path, metavar="DIR",
                        help="deepcave: a new or empty directory for the runs")

    _command(commands, "methods", "list the method catalogue: name, source, and every "
             "hyperparameter with its default, allowed values and default search range",
             "sslstudy methods", _cmd_methods)

    server = _command(
        commands, "tracking-server", "serve an MLflow tracking store and its UI (for "
        "trials on other nodes, and for reading a study)",
        "sslstudy tracking-server --backend-store-uri sqlite:///demo-output/mlflow.db "
        "--port 5000", _cmd_tracking_server,
    )
    server.add_argument("--backend-store-uri", default="sqlite:///mlflow.db", metavar="URI",
                        help="where runs are stored (default sqlite:///mlflow.db)")
    server.add_argument("--artifacts-destination", default="./mlartifacts", metavar="DIR",
                        help="where the server keeps uploaded artifacts (default "
                        "./mlartifacts)")
    server.add_argument("--host", default="127.0.0.1",
                        help="interface to bind (default loopback; 0.0.0.0 for all)")
    server.add_argument("--port", type=_port, default=5000,
                        help="TCP port, 1 to 65535 (default 5000)")
    server.add_argument(
        "--allowed-hosts", default="", metavar="HOSTS",
        help="comma-separated Host headers to accept, e.g. the name workers use",
    )
    return parser


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "search.num_samples": getattr(args, "num_samples", None),
        "search.max_concurrent": getattr(args, "max_concurrent", None),
        "tracking.tracking_uri": args.tracking_uri,
        "tracking.experiment": args.experiment,
        "storage_path": getattr(args, "storage_path", None),
        "name": getattr(args, "name", None),
        "train.epochs": getattr(args, "epochs", None),
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

    if args.top == args.random == 0:
        raise UsageError("--top: --top and --random cannot both be 0 (nothing to confirm)")
    plan = ConfirmConfig(top=args.top, seeds=args.seeds, random=args.random)
    return run_confirm(args.study, plan, args.address, args.max_concurrent, args.resume)


def _cmd_sweep(args: argparse.Namespace) -> int:
    from study.sweep import run_sweep

    flags = {key: getattr(args, key) for key in
             ("method", "param", "values", "param2", "values2", "around", "seeds")}
    return run_sweep(args.config, _overrides(args), flags, args.address, args.resume)


def _cmd_analyze(args: argparse.Namespace) -> int:
    from analysis.report import run_analysis
    from study.paths import check_creatable_dir

    check_creatable_dir("--out", args.out)
    return run_analysis(
        tracking_uri=args.tracking_uri,
        experiment=args.experiment,
        metric=args.metric,
        mode=args.mode,
        budget=args.budget,
        out=args.out,
    )


def _cmd_export(args: argparse.Namespace) -> int:
    from study.export import run_export

    return run_export(args.tracking_uri, args.experiment, args.method, args.format,
                      args.register, args.out)


def _cmd_methods(args: argparse.Namespace) -> int:
    from study.catalogue import print_catalogue

    return print_catalogue()


def _cmd_tracking_server(args: argparse.Namespace) -> int:
    from study.paths import prepare_sqlite_dir
    from tracking.server import run_server, server_command

    _check_server_stores(args.backend_store_uri, args.artifacts_destination)
    prepare_sqlite_dir(args.backend_store_uri)
    command = server_command(
        args.backend_store_uri,
        args.artifacts_destination,
        args.host,
        args.port,
        [h.strip() for h in args.allowed_hosts.split(",") if h.strip()],
    )
    logger.info("starting: %s", " ".join(command))
    return run_server(command)


#: The database schemes ``mlflow server`` keeps runs in, besides SQLite.
_SERVER_DATABASES = ("postgresql", "mysql", "mssql")


def _check_server_stores(backend_store_uri: str, artifacts_destination: str) -> None:
    """The server's stores are usable before it starts: ``mlflow server`` would otherwise
    fail with its own traceback. A SQLite file's directory and a local artifacts
    directory must be creatable; a remote artifact store (s3://, gs://...) is the
    server's to reach."""
    from urllib.parse import urlparse

    from study.errors import ConfigError
    from study.paths import check_creatable_dir
    from tracking.uris import sqlite_path

    database = sqlite_path(backend_store_uri)
    if database is not None:
        if database.exists() and not database.is_file():
            raise ConfigError(f"--backend-store-uri: {str(database)!r} is not a file")
        check_creatable_dir("--backend-store-uri", database.parent)
    elif not backend_store_uri.startswith(_SERVER_DATABASES):
        raise ConfigError(
            f"--backend-store-uri: unsupported {backend_store_uri!r}; use sqlite:///FILE.db "
            "or a postgresql://, mysql:// or mssql:// database (the file store is deprecated)"
        )
    parsed = urlparse(artifacts_destination)
    if parsed.scheme in ("", "file"):
        local = parsed.path if parsed.scheme else artifacts_destination
        check_creatable_dir("--artifacts-destination", Path(local))


def _input_errors() -> tuple[type[Exception], ...]:
    """The exceptions that mean bad input: light modules, imported only once a command
    runs."""
    from analysis.errors import AnalysisInputError
    from study.errors import ConfigError
    from tracking.errors import TrackingError

    return UsageError, ConfigError, AnalysisInputError, TrackingError


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        configure_logging(logging.WARNING if args.quiet else logging.INFO)
        return args.handler(args)
    except KeyboardInterrupt:
        print("sslstudy: interrupted", file=sys.stderr)
        return 130
    except StudyInterrupted as exc:
        print(f"sslstudy: {exc}", file=sys.stderr)
        return 130
    except Exception as exc:
        if not isinstance(exc, _input_errors()):
            raise
        print(f"sslstudy: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
