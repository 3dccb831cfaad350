"""The arithmetic behind benchmark figures (the benchmarks themselves are scripts)."""

from __future__ import annotations

import math

import pytest

from benchmarks.study_overhead import back_to_back


@pytest.mark.parametrize(("durations", "slots", "wall"), [
    ([3, 1, 1, 1], 2, 3),  # the long trial first: the short ones fill the other slot
    ([1, 1, 1, 3], 2, 4),  # the long trial last: it runs alone from 1 to 4 (the tail)
    ([2, 2, 2, 2], 2, 4),
    ([5], 4, 5),  # more slots than trials
    ([1, 2, 3], 1, 6),  # one slot: the sum
])
def test_back_to_back_starts_each_trial_when_a_slot_frees(durations, slots, wall) -> None:
    assert back_to_back(durations, slots) == wall


def test_the_planted_learning_rate_effect_spans_its_size_and_is_found_when_large() -> None:
    """sampler-power's planted world: the response runs from 0 at the learning rate's
    worst end to ``effect`` at its peak; an effect of 20 noise std over 24 QMC trials is
    found, and a search without effect flags nothing here."""
    from benchmarks.sampler_power import PEAK, SPACE, one_search, planted_response

    low, high = SPACE["lr"][1], SPACE["lr"][2]
    peak = 10 ** (math.log10(low) + PEAK * (math.log10(high) - math.log10(low)))
    assert planted_response(low, 3.0) == pytest.approx(0.0)
    assert planted_response(peak, 3.0) == pytest.approx(3.0)
    assert 0 < planted_response(high, 3.0) < 3.0
    found, false_alarm, regret = one_search("qmc", 24, 20.0, seed=0)
    assert found and not false_alarm and 0 <= regret < 20.0
    assert one_search("qmc", 24, 0.0, seed=0)[:2] == (False, False)
