"""Search spaces as data: one YAML file per method, validated and merged with a study's
overrides.

A parameter spec is a mapping with ``type`` (``float``, ``int`` or ``categorical``) and
either ``low``/``high`` (with an optional ``scale``: ``linear``, ``log`` or ``log1m``, and an
optional ``step``) or ``choices``. ``log1m`` searches ``1 - value`` on a log scale, the
natural scale of a momentum: 0.9, 0.99 and 0.999 are equally far apart. Optuna then sees a
parameter named ``one_minus_<name>``; :meth:`SearchSpace.decode` maps it back.

The hyperparameter declarations it validates against come as an argument. Nothing here
knows Optuna: ``search_spaces.distributions`` converts a space for a search.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from typing import Any, Literal

import yaml

from search_spaces.hyperparameters import AtLeast, Hyperparameter, is_finite

Scale = Literal["linear", "log", "log1m"]
_NUMERIC_KEYS = {"type", "low", "high", "scale", "step"}
_CATEGORICAL_KEYS = {"type", "choices"}
LOG1M_PREFIX = "one_minus_"


class SearchSpaceError(ValueError):
    """An invalid search-space entry; the message starts with the parameter's path."""


@dataclass(frozen=True)
class ParamSpec:
    type: Literal["float", "int", "categorical"]
    low: float | None = None
    high: float | None = None
    scale: Scale = "linear"
    step: float | None = None
    choices: tuple[Any, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        if self.type == "categorical":
            return {"type": "categorical", "choices": list(self.choices)}
        out: dict[str, Any] = {"type": self.type, "low": self.low, "high": self.high}
        out["scale"] = self.scale
        if self.step is not None:
            out["step"] = self.step
        return out


@dataclass(frozen=True)
class SearchSpace:
    """The searched parameters of one method and the values fixed for every trial."""

    method: str
    params: Mapping[str, ParamSpec]
    fixed: Mapping[str, Any] = field(default_factory=dict)

    def optuna_name(self, name: str) -> str:
        return LOG1M_PREFIX + name if self.params[name].scale == "log1m" else name

    def decode(self, suggested: Mapping[str, Any]) -> dict[str, Any]:
        """Map a sampler's suggestion back to hyperparameters under their plain names,
        plus the fixed values."""
        values = dict(self.fixed)
        for name, spec in self.params.items():
            key = self.optuna_name(name)
            if key not in suggested:
                raise KeyError(f"suggestion lacks {key!r}")
            value = suggested[key]
            values[name] = 1.0 - value if spec.scale == "log1m" else value
        return values

    def defaults(self, declared: Mapping[str, Hyperparameter]) -> dict[str, Any]:
        """Values for a single run without search: fixed values, else declared defaults."""
        return {name: self.fixed.get(name, hp.default) for name, hp in declared.items()}

    def bounds(self, name: str, default: Any) -> tuple[Any, Any]:
        """The smallest and largest value a trial of this space can give ``name``: its
        range, its choices, its fixed value, or ``default`` (the declared one) if the
        space leaves it alone."""
        spec = self.params.get(name)
        if spec is None:
            value = self.fixed.get(name, default)
            return value, value
        if spec.type == "categorical":
            return min(spec.choices), max(spec.choices)
        return spec.low, spec.high

    def candidates(self, name: str, default: Any) -> tuple[Any, ...]:
        """Every value a trial of this space can give ``name``: its choices, every integer
        of its int range, its fixed value, or ``default``. A float range has no such
        list (ValueError)."""
        spec = self.params.get(name)
        if spec is None:
            return (self.fixed.get(name, default),)
        if spec.type == "categorical":
            return spec.choices
        if spec.type == "float":
            raise ValueError(f"{name}: a float range has no finite list of values")
        return tuple(range(int(spec.low), int(spec.high) + 1, int(spec.step or 1)))

    def to_dict(self) -> dict[str, Any]:
        return {
            "params": {name: spec.to_dict() for name, spec in self.params.items()},
            "fixed": dict(self.fixed),
        }


#: Name of the categorical choice of method in a cross-method search.
METHOD_PARAM = "method"


@dataclass(frozen=True)
class CrossMethodSpace:
    """One search over several methods: the method is a categorical choice (``method``)
    and each method's parameters are conditional on it, under the names
    ``<method>.<parameter>`` (so TPE models each method's parameters from that method's
    trials alone; ``search_spaces.distributions.DefineByRun`` asks Optuna for them)."""

    spaces: Mapping[str, SearchSpace]

    def split(self, suggested: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
        """The chosen method and its own suggestion under the method space's names."""
        method = suggested[METHOD_PARAM]
        prefix = f"{method}."
        own = {k.removeprefix(prefix): v for k, v in suggested.items() if k.startswith(prefix)}
        return method, own


def default_space_data(method: str) -> dict[str, Any]:
    """The raw default space shipped as ``search_spaces/<method>.yaml``."""
    resource = resources.files(__package__) / f"{method}.yaml"
    if not resource.is_file():
        raise SearchSpaceError(f"{method}: no default search space shipped")
    return yaml.safe_load(resource.read_text()) or {}


def _parse_spec(path: str, raw: Mapping[str, Any], hp: Hyperparameter) -> ParamSpec:
    kind = raw.get("type")
    if kind not in ("float", "int", "categorical"):
        raise SearchSpaceError(f"{path}.type: got {kind!r}, allowed: float, int, categorical")
    allowed = _CATEGORICAL_KEYS if kind == "categorical" else _NUMERIC_KEYS
    unknown = sorted(set(raw) - allowed)
    if unknown:
        raise SearchSpaceError(
            f"{path}.{unknown[0]}: unknown key for a {kind} parameter; "
            f"allowed: {', '.join(sorted(allowed))}"
        )
    if kind == "categorical":
        choices = raw.get("choices")
        if not isinstance(choices, list) or not choices:
            raise SearchSpaceError(f"{path}.choices: must be a non-empty list")
        if len(set(map(repr, choices))) != len(choices):
            raise SearchSpaceError(f"{path}.choices: duplicate values in {choices}")
        return ParamSpec("categorical", choices=tuple(_check(path, hp, c) for c in choices))
    if hp.kind not in ("float", "int") or (kind == "float" and hp.kind == "int"):
        raise SearchSpaceError(f"{path}.type: {kind} does not fit a {hp.kind} hyperparameter")
    for key in ("low", "high"):
        value = raw.get(key)
        if not _is_number(value):
            raise SearchSpaceError(f"{path}.{key}: must be a finite number, got {value!r}")
        if kind == "int" and value != int(value):
            raise SearchSpaceError(f"{path}.{key}: must be an integer, got {value!r}")
    low, high = raw["low"], raw["high"]
    if low >= high:
        raise SearchSpaceError(f"{path}: low ({low}) must be below high ({high})")
    scale = raw.get("scale", "linear")
    if scale not in ("linear", "log", "log1m"):
        raise SearchSpaceError(f"{path}.scale: got {scale!r}, allowed: linear, log, log1m")
    if scale == "log" and low <= 0:
        raise SearchSpaceError(f"{path}: a log scale needs low > 0, got {low}")
    if scale == "log1m" and (kind != "float" or high >= 1):
        raise SearchSpaceError(f"{path}: scale log1m needs a float with high < 1, got {high}")
    step = raw.get("step")
    if step is not None:
        if not _is_number(step) or step <= 0:
            raise SearchSpaceError(f"{path}.step: must be a positive finite number, got "
                                   f"{step!r}")
        # Optuna's int distributions take an integer step: 0.5 would fail inside the Tuner,
        # after Ray started, and 1.5 would silently be searched with step 1.
        if kind == "int" and (step != int(step) or step < 1):
            raise SearchSpaceError(f"{path}.step: an int range needs an integer step >= 1, got "
                                   f"{step!r}")
        if scale != "linear":
            raise SearchSpaceError(f"{path}.step: only allowed with scale linear")
    _check(path, hp, low, "low")
    _check(path, hp, high, "high")
    return ParamSpec(kind, low=low, high=high, scale=scale, step=step)


def _is_number(value: Any) -> bool:
    """A finite int or float (YAML's ``.inf`` and ``.nan`` are floats; a bool is not a
    number here)."""
    return not isinstance(value, bool) and isinstance(value, int | float) and is_finite(value)


def _check(path: str, hp: Hyperparameter, value: Any, what: str = "value") -> Any:
    try:
        return hp.check(what, value)
    except ValueError as exc:
        raise SearchSpaceError(f"{path}: {exc}") from None


def build_space(
    method: str,
    declared: Mapping[str, Hyperparameter],
    overrides: Mapping[str, Any] | None = None,
    *,
    constraints: Sequence[AtLeast] = (),
    replace_defaults: bool = False,
    where: str = "",
) -> SearchSpace:
    """Merge a study's ``overrides`` over the method's default space and validate it.

    An override that is a mapping changes the default spec key by key (``{low: 0.05}``
    narrows, ``{type: categorical, choices: [...]}`` replaces); a plain value fixes the
    parameter for every trial. With ``replace_defaults`` the overrides are the whole space.
    A space whose bounds admit values that break one of the method's ``constraints`` is
    refused, so that a search never proposes a trial that would fail on its values.
    ``where`` prefixes error paths (e.g. ``methods.simclr.space``).
    """
    prefix = where or f"{method}.space"
    defaults = {} if replace_defaults else default_space_data(method)
    overrides = dict(overrides or {})
    params: dict[str, ParamSpec] = {}
    fixed: dict[str, Any] = {}
    for name in [*defaults, *(n for n in overrides if n not in defaults)]:
        path = f"{prefix}.{name}"
        if name not in declared:
            raise SearchSpaceError(
                f"{path}: unknown parameter for {method}; allowed: {', '.join(sorted(declared))}"
            )
        raw = overrides.get(name, defaults.get(name))
        if isinstance(raw, Mapping):
            base = defaults.get(name) if isinstance(defaults.get(name), Mapping) else {}
            merged = {**base, **raw} if name in overrides and "type" not in raw else dict(raw)
            params[name] = _parse_spec(path, merged, declared[name])
        elif isinstance(raw, list):
            raise SearchSpaceError(
                f"{path}: a list is ambiguous; write {{type: categorical, choices: [...]}}"
            )
        else:
            fixed[name] = _check(path, declared[name], raw)
    space = SearchSpace(method, params, fixed)
    for constraint in constraints:
        name_low = space.bounds(constraint.name, declared[constraint.name].default)[0]
        other_high = space.bounds(constraint.other, declared[constraint.other].default)[1]
        try:
            constraint.check_bounds(name_low, other_high)
        except ValueError as exc:
            raise SearchSpaceError(f"{prefix}: {exc}") from None
    return space

