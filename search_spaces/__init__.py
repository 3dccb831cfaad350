"""Hyperparameter declarations and search spaces, as data: the bottom layer.

- ``hyperparameters``: :class:`Hyperparameter` (type, default, domain),
  :func:`resolve_hyperparameters`, the one place given values are checked, and
  :class:`AtLeast`, a constraint between two of them.
- ``space``: a method's search space (``<method>.yaml`` shipped here, merged with a
  study's overrides and validated), decoding a sampler's suggestion, cross-method spaces.
- ``distributions``: the conversion to Optuna, imported only where a search needs it.

May import: the standard library, PyYAML, and (in ``distributions`` only) Optuna. Never
torch, Ray, MLflow or another package of the project.
"""

from search_spaces.hyperparameters import AtLeast, Hyperparameter, resolve_hyperparameters
from search_spaces.space import (
    LOG1M_PREFIX,
    METHOD_PARAM,
    CrossMethodSpace,
    ParamSpec,
    SearchSpace,
    SearchSpaceError,
    build_space,
    default_space_data,
)

__all__ = [
    "LOG1M_PREFIX",
    "METHOD_PARAM",
    "AtLeast",
    "CrossMethodSpace",
    "Hyperparameter",
    "ParamSpec",
    "SearchSpace",
    "SearchSpaceError",
    "build_space",
    "default_space_data",
    "resolve_hyperparameters",
]
