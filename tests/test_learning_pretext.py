"""The pretext methods learn: short pretraining beats random init on the linear probe
(RotNet: kNN from its third block; settings and measured gains in learning.py)."""

from __future__ import annotations

import pytest
from learning import PRETEXT, assert_pretraining_beats_random_init

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("method", sorted(PRETEXT))
def test_short_pretraining_beats_random_init(method: str) -> None:
    assert_pretraining_beats_random_init(method, PRETEXT[method])
