"""``sslstudy methods``: the method catalogue as a user needs it to write a config: each
method's name, what it is, the source it follows, and its default search space (what a
study searches unless ``methods.<name>.space`` says otherwise)."""

from __future__ import annotations

import sys
from typing import Any

from search_spaces import ParamSpec, build_space
from trainables.hyperparameters import declared_hyperparameters
from trainables.methods import METHODS


def _spec(spec: ParamSpec) -> str:
    if spec.type == "categorical":
        return "{" + ", ".join(str(c) for c in spec.choices) + "}"
    step = f" step {spec.step:g}" if spec.step is not None else ""
    scale = "" if spec.scale == "linear" else f" {spec.scale}"
    return f"[{spec.low:g}, {spec.high:g}]{scale}{step}"


def _summary(method: type[Any]) -> str:
    """The first line of the method's module docstring: its one-sentence description."""
    doc = sys.modules[method.__module__].__doc__ or ""
    return doc.strip().splitlines()[0] if doc.strip() else method.name


def catalogue_lines() -> list[str]:
    lines = []
    for name, method in METHODS.items():
        declared = declared_hyperparameters(name)
        space = build_space(name, declared)
        lines.append(name)
        lines.append(f"  {_summary(method)}")
        lines.append(f"  source: {method.source}")
        if method.backbone:
            lines.append(f"  backbone: always {method.backbone}")
        searched = ", ".join(f"{p} {_spec(s)}" for p, s in space.params.items())
        lines.append(f"  searched by default: {searched or 'nothing'}")
        if space.fixed:
            fixed = ", ".join(f"{p}={v}" for p, v in space.fixed.items())
            lines.append(f"  fixed by default: {fixed}")
        lines.append("")
    lines.append("Change a space under methods.<name>.space in a config (see the README's "
                 "search spaces); every hyperparameter's default is in the README's method "
                 "catalogue.")
    return lines


def print_catalogue() -> int:
    # The catalogue is the command's output, not a log message: it goes to stdout.
    sys.stdout.write("\n".join(catalogue_lines()) + "\n")
    return 0
