"""``sslstudy methods``: the method catalogue as a user needs it to write a config: each
method's name, what it is, the source it follows, and every hyperparameter it accepts
with its default, the values it allows and its range in the default search space (what a
study searches unless ``methods.<name>.space`` says otherwise). Defaults and domains are
read from the declarations the trials resolve against, so the listing cannot drift from
what a run uses."""

from __future__ import annotations

import sys
from typing import Any

from search_spaces import Hyperparameter, ParamSpec, SearchSpace, build_space
from trainables.hyperparameters import TRAINING_HYPERPARAMETERS, declared_hyperparameters
from trainables.methods import METHODS

HEADER = ("hyperparameter", "default", "allowed", "default search space")


def _spec(spec: ParamSpec) -> str:
    if spec.type == "categorical":
        return "{" + ", ".join(str(c) for c in spec.choices) + "}"
    step = f" step {spec.step:g}" if spec.step is not None else ""
    scale = "" if spec.scale == "linear" else f" {spec.scale}"
    return f"[{spec.low:g}, {spec.high:g}]{scale}{step}"


def _value(value: Any) -> str:
    """A value as a config writes it (YAML's true/false, numbers in short form)."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _allowed(hp: Hyperparameter) -> str:
    """The domain, with choices written as the search-space column writes them (and as a
    config would: no quotes), so that the two columns read alike."""
    if hp.kind == "choice":
        return "{" + ", ".join(_value(c) for c in hp.choices) + "}"
    return hp.domain()


def _summary(method: type[Any]) -> str:
    """The first line of the method's module docstring: its one-sentence description."""
    doc = sys.modules[method.__module__].__doc__ or ""
    return doc.strip().splitlines()[0] if doc.strip() else method.name


def _rows(declared: dict[str, Hyperparameter], space: SearchSpace) -> list[tuple[str, ...]]:
    """Searched parameters first, in the space's order (the order a study logs them),
    then fixed ones, then the rest: the method's own before the loop's."""
    own = [p for p in declared if p not in TRAINING_HYPERPARAMETERS]
    order = [*space.params, *space.fixed,
             *(p for p in [*own, *TRAINING_HYPERPARAMETERS]
               if p not in space.params and p not in space.fixed)]
    rows = []
    for name in order:
        hp = declared[name]
        if name in space.params:
            searched = _spec(space.params[name])
        elif name in space.fixed:
            searched = f"fixed to {_value(space.fixed[name])}"
        else:
            searched = "not searched"
        rows.append((name, _value(hp.default), _allowed(hp), searched))
    return rows


def _table(rows: list[tuple[str, ...]], indent: str = "  ") -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    return [indent + "".join(f"{cell:<{w}}  " for cell, w in zip(row[:-1], widths, strict=True))
            + row[-1] for row in rows]


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
        lines.extend(_table([HEADER, *_rows(declared, space)]))
        lines.append("")
    lines.append("Every trial takes the default of a hyperparameter its space neither "
                 "searches nor fixes.")
    lines.append("Change a space under methods.<name>.space in a config (see the README's "
                 "search spaces); sslstudy train --param NAME=VALUE sets one value.")
    return lines


def print_catalogue() -> int:
    # The catalogue is the command's output, not a log message: it goes to stdout.
    sys.stdout.write("\n".join(catalogue_lines()) + "\n")
    return 0
