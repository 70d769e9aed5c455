"""Adaptive replicates: competitive trials double, resolved ones keep theirs."""

from __future__ import annotations

import pytest

from simstudy.calibrate.adaptive import Allocation, TrialScore, allocate, simulations_saved


def test_two_trials_closer_than_their_standard_errors_both_double() -> None:
    scores = [TrialScore(0, 405.0, 12.0, 4), TrialScore(1, 412.0, 31.0, 4)]
    allocations = allocate(scores, minimum=4, maximum=64)
    assert allocations[1] == Allocation(8, "competitive: 412+-31 overlaps best 405+-12")
    assert allocations[0].replicates == 8
    assert allocations[0].reason.startswith("best 405+-12, overlapped by 1")


def test_trials_far_apart_keep_their_replicates() -> None:
    scores = [TrialScore(0, 405.0, 12.0, 4), TrialScore(1, 900.0, 20.0, 4)]
    allocations = allocate(scores, minimum=4, maximum=64)
    assert allocations[1] == Allocation(4, "resolved: 900+-20 above best 405+-12")
    assert allocations[0] == Allocation(4, "best 405+-12, no other trial overlaps")


def test_the_overlap_rule_is_strict_at_the_edge() -> None:
    # 430 - 13 = 417 is not below 405 + 12 = 417: resolved.
    scores = [TrialScore(0, 405.0, 12.0, 4), TrialScore(1, 430.0, 13.0, 4)]
    assert allocate(scores, 4, 64)[1].replicates == 4
    scores = [TrialScore(0, 405.0, 12.0, 4), TrialScore(1, 430.0, 13.5, 4)]
    assert allocate(scores, 4, 64)[1].replicates == 8


def test_doubling_stops_at_max() -> None:
    scores = [TrialScore(0, 405.0, 12.0, 64), TrialScore(1, 410.0, 30.0, 48)]
    allocations = allocate(scores, minimum=3, maximum=64)
    assert allocations[0] == Allocation(64, "at max")
    assert allocations[1].replicates == 64  # capped, not 96


def test_failed_trials_keep_their_replicates() -> None:
    scores = [TrialScore(0, None, None, 4), TrialScore(1, 5.0, 1.0, 4)]
    allocations = allocate(scores, 4, 16)
    assert allocations[0] == Allocation(4, "failed")
    assert allocations[1].replicates == 4
    assert allocate([TrialScore(0, None, None, 4)], 4, 16) == {0: Allocation(4, "failed")}


def test_a_trial_without_standard_error_is_competitive_until_max() -> None:
    scores = [TrialScore(0, 1.0, 0.1, 1), TrialScore(1, 50.0, None, 1)]
    allocations = allocate(scores, minimum=1, maximum=4)
    assert allocations[1] == Allocation(2, "competitive: 50+-? overlaps best 1+-0.1")
    assert allocations[0].replicates == 2
    scores = [TrialScore(0, 1.0, 0.1, 4), TrialScore(1, 50.0, None, 4)]
    assert allocate(scores, minimum=1, maximum=4)[1] == Allocation(4, "at max")


def test_a_tie_makes_the_lower_number_the_best() -> None:
    scores = [TrialScore(3, 2.0, 0.0, 4), TrialScore(1, 2.0, 0.0, 4), TrialScore(2, 9.0, 0.0, 4)]
    allocations = allocate(scores, 4, 8)
    assert allocations[1].reason.startswith("best")
    assert allocations[3].reason.startswith("resolved")  # 2 - 0 is not below 2 + 0


def test_allocation_is_deterministic_and_saves_simulations() -> None:
    scores = [TrialScore(n, 100.0 + 10 * n, 8.0, 4) for n in range(6)]
    first = allocate(scores, 4, 32)
    assert first == allocate(list(reversed(scores)), 4, 32)
    assert [first[n].replicates for n in range(6)] == [8, 8, 4, 4, 4, 4]
    assert simulations_saved(first, 32) == 2 * 24 + 4 * 28


def test_min_above_max_is_refused() -> None:
    with pytest.raises(ValueError, match="min"):
        allocate([], 8, 4)
