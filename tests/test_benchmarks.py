"""The arithmetic behind benchmark figures (the benchmarks themselves are scripts)."""

from __future__ import annotations

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
