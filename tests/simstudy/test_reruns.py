"""Which replicates of a lost batch run again, and which one is charged."""

from __future__ import annotations

from simstudy.reruns import LostRun, contiguous_ranges, plan_rerun, running_replicate


def test_first_run_charges_the_first_replicate_without_a_record() -> None:
    plan = plan_rerun(LostRun(missing=[2, 3, 4], started=None), {}, 0, max_resubmits=2)
    assert plan.running == 2 and not plan.batch_failed_before_start
    # The charged replicate runs alone, the others together after it.
    assert plan.pieces == [(2, 3), (3, 5)] and plan.give_up == []


def test_a_careful_rerun_knows_which_replicate_was_running() -> None:
    lost = LostRun(missing=[3, 4, 5], started=[2, 3, 4])
    assert running_replicate(lost) == 4
    plan = plan_rerun(lost, {}, 0, max_resubmits=2)
    assert plan.running == 4
    assert plan.pieces == [(4, 5), (3, 4), (5, 6)]


def test_the_replicate_is_given_up_after_max_resubmits_losses() -> None:
    lost = LostRun(missing=[2, 3], started=[2])
    plan = plan_rerun(lost, {2: 2}, 0, max_resubmits=2)
    assert plan.running == 2 and plan.give_up == [2] and plan.pieces == [(3, 4)]
    assert plan_rerun(lost, {2: 1}, 0, max_resubmits=2).give_up == []
    assert plan_rerun(lost, {}, 0, max_resubmits=0).give_up == [2]


def test_a_run_lost_before_any_replicate_started_is_charged_to_the_batch() -> None:
    lost = LostRun(missing=[0, 1, 2], started=[])
    plan = plan_rerun(lost, {}, 0, max_resubmits=2)
    assert plan.running is None and plan.batch_failed_before_start
    assert plan.pieces == [(0, 3)] and plan.give_up == []
    # Bounded: past max_resubmits such failures, what is left is given up, not rerun.
    exhausted = plan_rerun(lost, {}, 2, max_resubmits=2)
    assert exhausted.give_up == [0, 1, 2] and exhausted.pieces == []


def test_a_run_whose_replicates_all_reported_reruns_nothing() -> None:
    plan = plan_rerun(LostRun(missing=[], started=None), {}, 0, max_resubmits=2)
    assert plan.running is None and plan.pieces == [] and plan.give_up == []


def test_contiguous_ranges() -> None:
    assert contiguous_ranges([]) == []
    assert contiguous_ranges([1, 2, 3, 7, 9, 10]) == [(1, 4), (7, 8), (9, 11)]
