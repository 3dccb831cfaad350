"""Declarations of hyperparameters: their type, default and the domain they may take.

Plain Python, at the bottom of the layers: methods declare their hyperparameters with
:class:`Hyperparameter`, the search-space checks and the config validation reason about
them without building a network, and :func:`resolve_hyperparameters` turns given values
into checked ones once, at a trial's entry point. A method declares the relations its
values must keep with one another as :class:`AtLeast` constraints, checked on a trial's
values and on the bounds of a search space.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

Kind = Literal["float", "int", "bool", "choice"]


def is_finite(value: float) -> bool:
    """Whether a number is finite: not inf or nan, which pass comparisons with bounds
    (``inf > 0``) and then fail later, in an int conversion or inside Optuna; nor an
    integer too large to convert to a float."""
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


@dataclass(frozen=True)
class Hyperparameter:
    """One hyperparameter: default value and the domain that makes sense for it.

    ``low``/``high`` bound numeric values; ``low_open``/``high_open`` exclude the bound
    itself (a temperature must be strictly positive, a momentum strictly below 1).
    """

    kind: Kind
    default: Any
    help: str
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    choices: Sequence[Any] = field(default_factory=tuple)

    def domain(self, finite: bool = False) -> str:
        """Human-readable domain, used verbatim in error messages. A missing bound prints
        as an open infinite end, ``[0, inf)``: infinity itself is never a value.
        ``finite`` adds the word, for the message that refuses inf or nan."""
        if self.kind == "bool":
            return "true or false"
        if self.kind == "choice":
            return "one of " + ", ".join(repr(c) for c in self.choices)
        left = "(" if self.low_open or self.low is None else "["
        right = ")" if self.high_open or self.high is None else "]"
        low = "-inf" if self.low is None else f"{self.low:g}"
        high = "inf" if self.high is None else f"{self.high:g}"
        kind = f"finite {self.kind}" if finite else self.kind
        article = "an" if kind == "int" else "a"
        return f"{article} {kind} in {left}{low}, {high}{right}"

    def check(self, name: str, value: Any) -> Any:
        """Return ``value`` coerced to the declared kind, or raise ValueError naming ``name``."""
        if self.kind == "bool":
            if not isinstance(value, bool):
                raise ValueError(f"{name}: got {value!r}, allowed: {self.domain()}")
            return value
        if self.kind == "choice":
            if value not in self.choices:
                raise ValueError(f"{name}: got {value!r}, allowed: {self.domain()}")
            return value
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"{name}: got {value!r}, allowed: {self.domain()}")
        if not is_finite(value):
            raise ValueError(f"{name}: got {value!r}, allowed: {self.domain(finite=True)}")
        if self.kind == "int" and float(value) != int(value):
            raise ValueError(f"{name}: got {value!r}, allowed: {self.domain()}")
        if not self.contains(float(value)):
            raise ValueError(f"{name}: got {value!r}, allowed: {self.domain()}")
        return int(value) if self.kind == "int" else float(value)

    def parse(self, name: str, text: str) -> Any:
        """The value a run recorded as text (MLflow keeps params as strings, a CLI flag
        gives one), read as this hyperparameter's kind and checked."""
        if self.kind == "choice":
            for choice in self.choices:
                if str(choice) == text:
                    return choice
            raise ValueError(f"{name}: got {text!r}, allowed: {self.domain()}")
        if self.kind == "bool":
            if text.lower() not in ("true", "false"):
                raise ValueError(f"{name}: got {text!r}, allowed: {self.domain()}")
            return text.lower() == "true"
        try:
            number = float(text)
        except ValueError:
            raise ValueError(f"{name}: got {text!r}, allowed: {self.domain()}") from None
        return self.check(name, number)

    def contains(self, value: float) -> bool:
        if not is_finite(value):
            return False
        if self.low is not None and (value < self.low or (self.low_open and value == self.low)):
            return False
        return not (
            self.high is not None and (value > self.high or (self.high_open and value == self.high))
        )


@dataclass(frozen=True)
class AtLeast:
    """A constraint between two numeric hyperparameters: ``name >= factor * other``.

    Domains bound one hyperparameter at a time; this bounds a pair (relative patch
    location's ``gap`` must keep patches of neighbouring cells apart whatever their
    ``jitter``). ``factor`` is non-negative, so a search space admits a violation exactly
    when the smallest ``name`` it can propose is below ``factor`` times the largest
    ``other``. ``why`` says what a violation breaks, for the error message.
    """

    name: str
    factor: float
    other: str
    why: str

    def _rule(self) -> str:
        return f"{self.name} must be at least {self.factor:g} x {self.other} ({self.why})"

    def check(self, values: Mapping[str, Any]) -> None:
        """Raise ValueError naming both hyperparameters if ``values`` break the constraint."""
        value, other = values[self.name], values[self.other]
        if value < self.factor * other:
            raise ValueError(f"{self.name} and {self.other}: {self._rule()}; got "
                             f"{self.name}={value!r} with {self.other}={other!r}")

    def check_bounds(self, name_low: float, other_high: float) -> None:
        """Raise ValueError naming both hyperparameters if a search space in which
        ``name`` can be as low as ``name_low`` and ``other`` as high as ``other_high``
        admits a violating combination."""
        if name_low < self.factor * other_high:
            raise ValueError(f"{self.name} and {self.other}: {self._rule()}, but the space "
                             f"admits {self.name}={name_low!r} with {self.other}={other_high!r}")


def resolve_hyperparameters(
    declared: Mapping[str, Hyperparameter], given: Mapping[str, Any], *, owner: str
) -> dict[str, Any]:
    """Merge ``given`` values over the declared defaults, checking names and domains."""
    unknown = sorted(set(given) - set(declared))
    if unknown:
        raise ValueError(
            f"{unknown[0]}: unknown hyperparameter for {owner}; "
            f"allowed: {', '.join(sorted(declared))}"
        )
    return {
        name: hp.check(name, given[name]) if name in given else hp.default
        for name, hp in declared.items()
    }
