"""Search spaces: shipped defaults, overrides, validation and Optuna conversion."""

from __future__ import annotations

import math
from pathlib import Path

import optuna.distributions as od
import pytest

from search_spaces import (
    AtLeast,
    Hyperparameter,
    SearchSpaceError,
    build_space,
    default_space_data,
)
from search_spaces.distributions import to_optuna
from study.checks import check_image_geometry
from study.config import load_config
from trainables.hyperparameters import declared_hyperparameters, resolve_trial
from trainables.methods import METHODS


@pytest.mark.parametrize("method", sorted(METHODS))
def test_default_spaces_cover_what_users_search(method: str) -> None:
    """Batch size, augmentation and learning rate everywhere; the temperature wherever the
    method has one (on a log scale), and always some of the method's own parameters."""
    space = build_space(method, declared_hyperparameters(method))
    for name in ("batch_size", "aug_strength", "lr"):
        assert name in space.params
    if "temperature" in METHODS[method].hyperparameters:
        assert space.params["temperature"].scale == "log"
    else:
        assert "temperature" not in space.params
    assert set(space.params) & set(METHODS[method].hyperparameters)
    assert space.params["batch_size"].type == "categorical"
    assert space.params["aug_strength"].scale == "linear"


def test_moco_momentum_is_searched_on_log_of_one_minus_m() -> None:
    space = build_space("moco", declared_hyperparameters("moco"))
    dist = to_optuna(space)["one_minus_momentum"]
    assert isinstance(dist, od.FloatDistribution) and dist.log
    assert dist.low == pytest.approx(0.001) and dist.high == pytest.approx(0.1)
    decoded = space.decode({**{k: 1 for k in to_optuna(space)}, "one_minus_momentum": 0.01})
    assert decoded["momentum"] == pytest.approx(0.99)
    assert "one_minus_momentum" not in decoded


def test_conversion_to_optuna_distributions() -> None:
    space = build_space("simclr", declared_hyperparameters("simclr"))
    dists = to_optuna(space)
    assert dists["temperature"] == od.FloatDistribution(0.05, 1.0, log=True)
    assert dists["batch_size"] == od.CategoricalDistribution([64, 128, 256])
    assert dists["aug_strength"] == od.FloatDistribution(0.1, 1.0)


def test_override_narrows_keeping_the_scale_and_fixes_values() -> None:
    space = build_space(
        "simclr", declared_hyperparameters("simclr"),
        {"temperature": {"low": 0.1, "high": 0.3}, "lr": 0.002, "proj_dim": {
            "type": "int", "low": 32, "high": 256, "scale": "log"}},
    )
    assert space.params["temperature"].scale == "log"
    assert (space.params["temperature"].low, space.params["temperature"].high) == (0.1, 0.3)
    assert "lr" not in space.params and space.fixed["lr"] == 0.002
    assert to_optuna(space)["proj_dim"] == od.IntDistribution(32, 256, log=True)
    decoded = space.decode({k: 1 for k in to_optuna(space)})
    assert decoded["lr"] == 0.002


def test_replace_space_drops_defaults() -> None:
    space = build_space("simclr", declared_hyperparameters("simclr"),
                        {"temperature": {"type": "float", "low": 0.1, "high": 0.5}},
                        replace_defaults=True)
    assert list(space.params) == ["temperature"]


def test_defaults_for_a_single_run() -> None:
    declared = declared_hyperparameters("moco")
    space = build_space("moco", declared, {"momentum": 0.9})
    values = space.defaults(declared)
    assert values["momentum"] == 0.9 and values["queue_size"] == 4096


@pytest.mark.parametrize(
    "overrides,message",
    [
        ({"temperature": {"low": 0.5, "high": 0.5}}, "temperature: low (0.5) must be below"),
        ({"temperature": {"low": 0.0, "high": 1.0}}, "log scale needs low > 0"),
        ({"temperature": {"low": -1.0, "high": 1.0, "scale": "linear"}}, "temperature: low"),
        ({"batch_size": {"choices": []}}, "batch_size.choices: must be a non-empty list"),
        ({"batch_size": {"choices": [64, 64]}}, "duplicate"),
        ({"batch_size": {"choices": [1, 64]}}, "batch_size"),
        ({"momentum": 0.9}, "momentum: unknown parameter for simclr"),
        ({"aug_strength": {"low": 0.5, "high": 1.5}}, "aug_strength"),
        ({"temperature": {"type": "normal"}}, "type: got 'normal'"),
        ({"temperature": {"low": "a", "high": 1.0}}, "low: must be a finite number"),
        ({"temperature": {"low": 0.1, "high": math.inf}},
         "temperature.high: must be a finite number, got inf"),
        ({"batch_size": {"type": "int", "low": 64, "high": math.inf}},
         "batch_size.high: must be a finite number, got inf"),
        ({"batch_size": {"type": "int", "low": -math.inf, "high": 256}},
         "batch_size.low: must be a finite number, got -inf"),
        ({"batch_size": {"type": "int", "low": 64, "high": 256, "step": 0.5}},
         "batch_size.step: an int range needs an integer step >= 1, got 0.5"),
        ({"batch_size": {"type": "int", "low": 64, "high": 256, "step": 1.5}},
         "batch_size.step: an int range needs an integer step >= 1, got 1.5"),
        ({"batch_size": {"type": "int", "low": 64, "high": 256, "step": math.inf}},
         "batch_size.step: must be a positive finite number, got inf"),
        ({"aug_strength": {"low": 0.1, "high": 0.9, "step": math.nan}},
         "aug_strength.step: must be a positive finite number, got nan"),
        ({"temperature": math.inf}, "temperature: value: got inf, allowed: a finite float in "
                                    "(0, inf)"),
        ({"batch_size": {"type": "categorical", "choices": [64, math.inf]}},
         "batch_size: value: got inf, allowed: a finite int in [2, inf)"),
        ({"temperature": {"scale": "sqrt"}}, "scale: got 'sqrt'"),
        ({"temperature": {"step": 0.1}}, "step: only allowed with scale linear"),
        ({"lr": [0.1, 0.2]}, "a list is ambiguous"),
        ({"temperature": 0.0}, "temperature"),
        ({"batch_size": {"type": "float", "low": 8, "high": 64}}, "does not fit a int"),
        ({"temperature": {"type": "float", "low": 0.1, "high": 1, "choices": [1]}},
         "unknown key"),
    ],
)
def test_invalid_spaces_name_the_parameter(overrides: dict, message: str) -> None:
    with pytest.raises(SearchSpaceError, match=r"^methods\.simclr\.space\.") as info:
        build_space("simclr", declared_hyperparameters("simclr"), overrides,
                    where="methods.simclr.space")
    assert message in str(info.value)


def test_an_int_range_keeps_its_whole_step() -> None:
    space = build_space("simclr", declared_hyperparameters("simclr"),
                        {"batch_size": {"type": "int", "low": 64, "high": 256, "step": 64}})
    assert to_optuna(space)["batch_size"] == od.IntDistribution(64, 256, step=64)


@pytest.mark.parametrize("hp,domain", [
    (Hyperparameter("float", 0.1, "", low=0.0, low_open=True), "a float in (0, inf)"),
    (Hyperparameter("int", 64, "", low=2), "an int in [2, inf)"),
    (Hyperparameter("float", 0.0, ""), "a float in (-inf, inf)"),
    (Hyperparameter("float", 0.5, "", low=0.0, high=1.0, high_open=True), "a float in [0, 1)"),
])
def test_an_open_end_is_not_written_as_if_infinity_were_allowed(hp: Hyperparameter,
                                                               domain: str) -> None:
    assert hp.domain() == domain


@pytest.mark.parametrize("kind,text", [("int", "inf"), ("int", "-inf"), ("int", "nan"),
                                       ("int", "1e400"), ("float", "inf"), ("float", "nan")])
def test_a_value_that_is_not_finite_is_refused(kind: str, text: str) -> None:
    """Read from text (a flag, a recorded param) or given as a number: refused as a value
    error naming the hyperparameter, never an OverflowError from an int conversion."""
    hp = Hyperparameter(kind, 1, "", low=0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=rf"^x: got .*, allowed: a finite {kind} in \[0, inf\)$"):
        hp.parse("x", text)
    with pytest.raises(ValueError, match=rf"^x: got .*, allowed: a finite {kind} in "):
        hp.check("x", float(text))
    with pytest.raises(ValueError, match=rf"^x: got .*, allowed: a finite {kind} in "):
        hp.check("x", 10**400)
    assert not hp.contains(float(text))


def test_log1m_bounds_must_stay_below_one() -> None:
    with pytest.raises(SearchSpaceError, match="log1m"):
        build_space("moco", declared_hyperparameters("moco"),
                    {"momentum": {"low": 0.9, "high": 1.0}})


def test_shipped_yaml_is_plain_data() -> None:
    for method in METHODS:
        data = default_space_data(method)
        assert all(isinstance(v, dict) for v in data.values())
        assert all(not (isinstance(v, float) and math.isnan(v)) for v in data.values())


GAP = AtLeast("gap", 2, "jitter", "neighbouring patches must not overlap")


def test_at_least_checks_values_and_names_both_parameters() -> None:
    GAP.check({"gap": 2, "jitter": 1})
    GAP.check({"gap": 0, "jitter": 0})
    with pytest.raises(ValueError, match=r"^gap and jitter: gap must be at least 2 x jitter "
                                         r"\(neighbouring patches must not overlap\); "
                                         r"got gap=1 with jitter=1$"):
        GAP.check({"gap": 1, "jitter": 1})


@pytest.mark.parametrize(
    "given,message",
    [({"gap": 0, "jitter": 1}, "gap=0 with jitter=1"), ({"gap": 3, "jitter": 2}, "gap=3")],
)
def test_a_trial_of_overlapping_patches_is_refused(given: dict, message: str) -> None:
    with pytest.raises(ValueError, match=r"^gap and jitter: ") as info:
        resolve_trial("relative_patch", given)
    assert message in str(info.value)
    assert resolve_trial("relative_patch", {"gap": 2, "jitter": 1}).method["gap"] == 2


@pytest.mark.parametrize(
    "overrides,admits",
    [
        ({"gap": {"low": 0, "high": 3}}, "gap=0 with jitter=1"),
        ({"jitter": {"low": 0, "high": 2}}, "gap=2 with jitter=2"),
        ({"gap": 1, "jitter": {"type": "categorical", "choices": [0, 1]}}, "gap=1 with jitter=1"),
        ({"jitter": 3}, "gap=2 with jitter=3"),
    ],
)
def test_a_space_admitting_overlapping_patches_is_refused(overrides: dict, admits: str) -> None:
    with pytest.raises(SearchSpaceError, match=r"^methods\.relative_patch\.space: gap and "
                                               r"jitter: ") as info:
        build_space("relative_patch", declared_hyperparameters("relative_patch"), overrides,
                    constraints=METHODS["relative_patch"].constraints,
                    where="methods.relative_patch.space")
    assert f"the space admits {admits}" in str(info.value)


@pytest.mark.parametrize("method", sorted(METHODS))
def test_default_spaces_respect_their_methods_constraints(method: str) -> None:
    build_space(method, declared_hyperparameters(method),
                constraints=METHODS[method].constraints)


def test_a_parameter_left_out_of_the_space_is_checked_at_its_declared_default() -> None:
    declared = declared_hyperparameters("relative_patch")
    with pytest.raises(SearchSpaceError, match="admits gap=2 with jitter=2"):
        build_space("relative_patch", declared,
                    {"jitter": {"type": "int", "low": 0, "high": 2}}, replace_defaults=True,
                    constraints=METHODS["relative_patch"].constraints)


def test_a_space_that_keeps_the_constraint_everywhere_is_accepted() -> None:
    space = build_space("relative_patch", declared_hyperparameters("relative_patch"),
                        {"gap": {"low": 0, "high": 3}, "jitter": 0},
                        constraints=METHODS["relative_patch"].constraints)
    assert space.bounds("gap", None) == (0, 3) and space.bounds("jitter", None) == (0, 0)


CONFIGS = Path(__file__).resolve().parent.parent / "configs"


def test_default_spaces_fit_32_pixel_images(tiny_shapes) -> None:
    """Every combination a default space proposes works on 32-pixel images: CPC's patch
    grids leave room for every prediction step."""
    spaces = {method: build_space(method, declared_hyperparameters(method),
                                  constraints=METHODS[method].constraints)
              for method in METHODS}
    check_image_geometry(spaces, tiny_shapes)


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_configs_propose_only_valid_trials(path: Path, tiny_shapes) -> None:
    config = load_config(path)  # every space checked against its method's constraints
    if config.data.dataset == "shapes" and config.data.image_size is None:
        check_image_geometry(config.spaces(), tiny_shapes)
