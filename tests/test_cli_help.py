"""A command line that explains itself: help at once, on every flag, with an example per
command that parses as printed; the version; the method catalogue."""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from study.cli import build_parser, main
from trainables.hyperparameters import declared_hyperparameters
from trainables.methods import METHODS

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "ray", "mlflow", "optuna", "pandas", "pydantic", "yaml")


def _commands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    (subparsers,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(subparsers.choices)


def test_help_answers_without_heavy_imports() -> None:
    """What made help slow was importing torch, MLflow and the rest before parsing; help
    (of the program and of a command) now loads none of them."""
    code = (
        "import sys\n"
        "from study.cli import main\n"
        "for args in (['--help'], ['search', '--help'], ['export', '--help']):\n"
        "    try:\n"
        "        main(args)\n"
        "    except SystemExit:\n"
        "        pass\n"
        f"print(sorted({{m.split('.')[0] for m in sys.modules}} & {set(HEAVY)!r}))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=ROOT, check=True)
    assert done.stdout.strip().splitlines()[-1] == "[]"


@pytest.mark.parametrize("name", sorted(_commands()))
def test_every_flag_has_help_and_the_example_parses(name: str) -> None:
    command = _commands()[name]
    for action in command._actions:
        assert action.help, f"{name} {action.option_strings or action.dest} has no help"
    assert command.epilog and command.epilog.startswith("example:")
    example = shlex.split(command.epilog.removeprefix("example:").strip())
    assert example[:2] == ["sslstudy", name]
    build_parser().parse_args(example[1:])


def test_version(capsys) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out.startswith("sslstudy ")


def test_the_description_names_every_command_and_no_markup(capsys) -> None:
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    assert "`" not in out
    for name in _commands():
        assert name in out


def test_methods_lists_the_catalogue(capsys) -> None:
    assert main(["methods"]) == 0
    out = capsys.readouterr().out
    for name, method in METHODS.items():
        assert f"\n{name}\n" in f"\n{out}"
        assert method.source in out
    blocks = {block.split("\n", 1)[0]: block for block in out.split("\n\n")}
    # Every hyperparameter a trial accepts, on a line of its own with its default: the
    # defaults are nowhere else a user can read them.
    for name in METHODS:
        rows = {line.split()[0]: line.split() for line in blocks[name].splitlines()[1:]}
        for param, declared in declared_hyperparameters(name).items():
            default = declared.default
            shown = (str(default).lower() if isinstance(default, bool)
                     else f"{default:g}" if isinstance(default, float) else str(default))
            assert rows[param][1] == shown, (name, param)
    # The domain and the default range beside it, as a config would write them.
    for name, param, default, searched in (
            ("simclr", "temperature", "0.2", "[0.05, 1] log"),
            ("simclr", "proj_dim", "128", "not searched"),
            ("moco", "momentum", "0.99", "[0.9, 0.999] log1m"),
            ("moco", "symmetric", "false", "not searched"),
            ("patch_triplet", "weight_decay", "1e-05", "not searched")):
        (line,) = (" ".join(line.split()) for line in blocks[name].splitlines()
                   if line.split()[0] == param)
        domain = declared_hyperparameters(name)[param].domain()
        assert line == f"{param} {default} {domain} {searched}"
