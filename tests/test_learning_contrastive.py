"""The contrastive methods learn: short pretraining beats random init on kNN accuracy
(settings and measured gains in learning.py)."""

from __future__ import annotations

import pytest
from learning import CONTRASTIVE, PRETEXT, assert_pretraining_beats_random_init

from trainables.methods import METHODS

pytestmark = pytest.mark.slow


def test_every_registered_method_has_a_learning_check() -> None:
    assert set(CONTRASTIVE) | set(PRETEXT) == set(METHODS)
    assert not set(CONTRASTIVE) & set(PRETEXT)


@pytest.mark.parametrize("method", sorted(CONTRASTIVE))
def test_short_pretraining_beats_random_init(method: str) -> None:
    assert_pretraining_beats_random_init(method, CONTRASTIVE[method])
