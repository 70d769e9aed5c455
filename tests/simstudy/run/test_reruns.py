"""Which replicates of a lost batch run again, and which one is charged."""

from __future__ import annotations

from simstudy.run.reruns import (
    UNSTARTED_LOSSES,
    LostRun,
    contiguous_ranges,
    plan_rerun,
    running_replicate,
)


def lost(missing: list[int], started: list[int], careful: bool = False, worker_lost: bool = True):
    return LostRun(missing=missing, started=started, careful=careful, worker_lost=worker_lost)


def test_a_first_run_charges_the_first_replicate_without_a_record() -> None:
    # A first run reports only its beginning; its records leave in order.
    plan = plan_rerun(lost([2, 3, 4], started=[0]), {}, 0, max_resubmits=2)
    assert plan.running == 2 and not plan.batch_failed_before_start
    # The charged replicate runs alone, the others together.
    assert plan.isolated == (2, 3) and plan.pieces == [(3, 5)] and plan.give_up == []


def test_a_careful_rerun_knows_which_replicate_was_running() -> None:
    run = lost([3, 4, 5], started=[2, 3, 4], careful=True)
    assert running_replicate(run) == 4
    plan = plan_rerun(run, {}, 0, max_resubmits=2)
    assert plan.running == 4 and plan.isolated == (4, 5)
    assert plan.pieces == [(3, 4), (5, 6)]


def test_the_replicate_is_given_up_after_max_resubmits_losses() -> None:
    run = lost([2, 3], started=[2], careful=True)
    plan = plan_rerun(run, {2: 2}, 0, max_resubmits=2)
    assert plan.running == 2 and plan.give_up == [2] and plan.isolated is None
    assert plan.pieces == [(3, 4)]
    assert plan_rerun(run, {2: 1}, 0, max_resubmits=2).give_up == []
    assert plan_rerun(run, {}, 0, max_resubmits=0).give_up == [2]


def test_a_run_its_worker_took_down_before_it_began_is_charged_to_nobody() -> None:
    # Dask fails every task assigned to a worker that dies, started or not.
    for run in (lost([0, 1, 2], started=[]), lost([0, 1, 2], started=[], careful=True)):
        plan = plan_rerun(run, {}, 0, max_resubmits=0)
        assert plan.running is None and plan.lost_before_start
        assert plan.pieces == [(0, 3)] and plan.give_up == [] and plan.isolated is None
    # Bounded all the same.
    exhausted = plan_rerun(lost([0, 1], started=[]), {}, 0, 2, UNSTARTED_LOSSES)
    assert exhausted.give_up == [0, 1] and exhausted.pieces == []


def test_a_task_that_raised_before_its_first_replicate_is_charged_to_the_batch() -> None:
    run = lost([0, 1, 2], started=[], worker_lost=False)
    plan = plan_rerun(run, {}, 0, max_resubmits=2)
    assert plan.running is None and plan.batch_failed_before_start
    assert plan.pieces == [(0, 3)] and plan.give_up == []
    # Bounded: past max_resubmits such failures, what is left is given up, not rerun.
    exhausted = plan_rerun(run, {}, 2, max_resubmits=2)
    assert exhausted.give_up == [0, 1, 2] and exhausted.pieces == []


def test_a_careful_run_lost_between_replicates_charges_nobody() -> None:
    # Replicate 3 finished and was reported; 4 had not begun.
    plan = plan_rerun(lost([4, 5], started=[3], careful=True), {}, 0, max_resubmits=2)
    assert plan.running is None and plan.pieces == [(4, 6)]


def test_a_run_whose_replicates_all_reported_reruns_nothing() -> None:
    plan = plan_rerun(lost([], started=[0]), {}, 0, max_resubmits=2)
    assert plan.running is None and plan.pieces == [] and plan.give_up == []


def test_contiguous_ranges() -> None:
    assert contiguous_ranges([]) == []
    assert contiguous_ranges([1, 2, 3, 7, 9, 10]) == [(1, 4), (7, 8), (9, 11)]
