"""The study's ledger, driven by event sequences: no cluster, no Prefect."""

from __future__ import annotations

from typing import Any

import pytest

from simstudy.design.expand import ParameterSet
from simstudy.design.identity import param_id, replicate_seed
from simstudy.design.plan import Batch, plan_batches
from simstudy.run.batch import BatchResult, summarize_batch
from simstudy.run.columns import records_to_bytes
from simstudy.run.events import RecordsReported, RunBegan
from simstudy.run.ledger import Ledger, Run
from simstudy.run.records import ReplicateRecord
from simstudy.spec.study import Study


def make_study(replicates: int = 4, sets: int = 2, **execution: Any) -> Study:
    return Study.model_validate(
        {
            "name": "ledger",
            "model": "tests.support.faulty:simulate",
            "parameters": {"list": [{"a": float(i)} for i in range(sets)]},
            "replicates": replicates,
            "seed": 3,
            "execution": {"batch_size": replicates, "max_resubmits": 2, **execution},
        }
    )


def parameter_sets(study: Study) -> list[ParameterSet]:
    rows = study.parameters.list or []
    return [ParameterSet(param_id=param_id(row), index=i, params=row) for i, row in enumerate(rows)]


def make_ledger(study: Study) -> Ledger:
    sets = parameter_sets(study)
    return Ledger(study, sets, plan_batches(study, sets))


def record(
    study: Study, pid: str, replicate: int, status: str = "ok", attempts: int = 1, y: float = 1.0
) -> ReplicateRecord:
    return ReplicateRecord(
        param_id=pid, replicate=replicate, seed=replicate_seed(study.seed, pid, replicate),
        status=status, attempts=attempts, duration_s=0.01, worker="w1",
        outputs={"y": y} if status == "ok" else {},
    )  # fmt: skip


def submit_next(ledger: Ledger, key: str) -> Run:
    (run,) = ledger.next_runs(1, 1)
    ledger.submitted(run, key, ledger.prior_attempts(run))
    return run


def result_of(study: Study, batch: Batch, execution: str, **kwargs: Any) -> BatchResult:
    records = [record(study, batch.param_id, r, **kwargs) for r in range(batch.start, batch.stop)]
    result = summarize_batch(batch, records)
    result.execution = execution
    return result


def streamed(key: str, execution: str, records: list[ReplicateRecord], **kw: Any) -> Any:
    return RecordsReported(key=key, execution=execution, records=records_to_bytes(records), **kw)


def test_a_run_s_result_finishes_its_batch_hands_it_on_and_makes_its_group_due() -> None:
    study = make_study(sets=1)
    ledger = make_ledger(study)
    run = submit_next(ledger, "k1")
    (index, batch) = run.pieces[0]
    ledger.run_finished("k1", [result_of(study, batch, "e1")])
    (finished,) = ledger.take_finished()
    assert [(i, b) for i, b, _ in finished] == [(index, batch)]
    assert ledger.take_due() == [0] and ledger.take_due() == []
    assert ledger.tracker.snapshot().replicates == {"ok": 4}


def test_a_duplicate_execution_counts_its_attempts_once_and_the_ok_record_wins() -> None:
    study = make_study(sets=1)
    ledger = make_ledger(study)
    run = submit_next(ledger, "k1")
    (_, batch) = run.pieces[0]
    pid = batch.param_id
    # The first execution's records streamed in (replicate 1 failed), then its worker
    # died before the result was fetched, and Dask ran the same task again.
    first = [record(study, pid, 0), record(study, pid, 1, status="failed", attempts=2)]
    ledger.records_reported(streamed("k1", "e1", first))
    ledger.records_reported(streamed("k1", "e1", first))  # the same event twice: no change
    second = result_of(study, batch, "e2")
    ledger.run_finished("k1", [second])
    (finished,) = ledger.take_finished()
    (_, _, result) = finished[0]
    by_replicate = {r.replicate: r for r in result.records}
    assert [r.status for r in result.records] == ["ok"] * 4
    assert by_replicate[0].attempts == 2  # both executions ran it once
    assert by_replicate[1].attempts == 3  # 2 failed attempts, then 1 ok
    assert ledger.tracker.snapshot().replicates == {"ok": 4}


def test_a_provisional_record_then_a_lost_worker_runs_it_again_uncharged() -> None:
    study = make_study(sets=1)
    ledger = make_ledger(study)
    run = submit_next(ledger, "k1")
    (index, batch) = run.pieces[0]
    pid = batch.param_id
    ledger.run_began(RunBegan(key="k1", execution="e1", param_id=pid, replicate=0))
    # Replicates 0 and 1 finished, their outputs to be written with the worker's part.
    ledger.records_reported(
        streamed("k1", "e1", [record(study, pid, 0), record(study, pid, 1)], provisional=True)
    )
    ledger.run_lost("k1", "KilledWorker: the worker died", worker_lost=True)
    assert ledger.take_finished() == []
    # Replicate 2 was running: it runs alone; 0, 1 (their outputs lost) and 3 run again.
    (suspect,) = ledger.suspects
    assert [(p.start, p.stop) for _, p in suspect.pieces] == [(2, 3)]
    (rerun,) = ledger.pending
    assert rerun.careful and [(p.start, p.stop) for _, p in rerun.pieces] == [(0, 2), (3, 4)]
    assert ledger.progress[index].lost_executions == {2: 1}
    assert ledger.progress[index].redone == {0: 1, 1: 1}
    # The reruns carry the attempts already spent: records count every execution.
    assert ledger.prior_attempts(rerun) == {(pid, 0): 1, (pid, 1): 1}
    assert ledger.tracker.snapshot().replicates == {}


def test_a_run_lost_before_it_began_is_charged_to_no_replicate() -> None:
    study = make_study(sets=1, max_resubmits=0)
    ledger = make_ledger(study)
    run = submit_next(ledger, "k1")
    (index, _) = run.pieces[0]
    ledger.run_lost("k1", "KilledWorker", worker_lost=True)
    progress = ledger.progress[index]
    assert progress.lost_executions == {} and progress.lost_before_start == 1
    (rerun,) = ledger.pending
    assert [(p.start, p.stop) for _, p in rerun.pieces] == [(0, 4)]
    assert ledger.take_finished() == []


def test_a_replicate_that_keeps_killing_its_worker_is_given_up_and_the_batch_finishes() -> None:
    study = make_study(sets=1, max_resubmits=1)
    ledger = make_ledger(study)
    run = submit_next(ledger, "k1")
    (index, batch) = run.pieces[0]
    pid = batch.param_id
    ledger.run_began(RunBegan(key="k1", execution="e1", param_id=pid, replicate=0))
    ledger.records_reported(streamed("k1", "e1", [record(study, pid, 0)]))
    ledger.run_lost("k1", "KilledWorker", worker_lost=True)  # replicate 1 charged
    (suspect,) = ledger.next_runs(1, 1)
    assert suspect.suspect and suspect.pieces[0][1].start == 1
    ledger.submitted(suspect, "k2", ledger.prior_attempts(suspect))
    ledger.run_began(RunBegan(key="k2", execution="e2", param_id=pid, replicate=1))
    ledger.run_lost("k2", "KilledWorker", worker_lost=True)  # again: given up
    rest = [r for r in ledger.pending]
    (rerun,) = rest
    ledger.pending.clear()
    ledger.submitted(rerun, "k3", {})
    ledger.run_finished("k3", [result_of(study, rerun.pieces[0][1], "e3")])
    (finished,) = ledger.take_finished()
    (_, _, result) = finished[0]
    statuses = {r.replicate: (r.status, r.attempts) for r in result.records}
    assert statuses[1] == ("failed", 2)
    assert "failed 2 times while this replicate ran" in str(result.records[1].error)
    assert [statuses[r][0] for r in (0, 2, 3)] == ["ok"] * 3
    assert ledger.progress[index].finished


def test_a_failed_aggregation_is_due_again_then_fails_its_sets_with_the_reason() -> None:
    study = make_study(sets=1, max_resubmits=1)
    ledger = make_ledger(study)
    run = submit_next(ledger, "k1")
    ledger.run_finished("k1", [result_of(study, run.pieces[0][1], "e1")])
    assert ledger.take_due() == [0]
    ledger.aggregation_started(0)
    ledger.aggregation_failed(0, "MemoryError: out of memory")
    assert ledger.take_due() == [0] and not ledger.all_done()
    ledger.aggregation_started(0)
    ledger.aggregation_failed(0, "MemoryError: out of memory")
    assert ledger.take_due() == [] and ledger.all_done()
    (state,) = ledger.set_states
    assert state.aggregate is not None and state.aggregate.status == "failed"
    assert state.aggregate.reasons == ["aggregation failed 2 times: MemoryError: out of memory"]
    assert state.aggregate.counts == {"ok": 4}


def test_a_cancel_during_a_rerun_drops_it_and_tells_the_driver_its_set_is_cancelled() -> None:
    study = make_study()
    ledger = Ledger(study, [], [], driver_batch_size=4)
    a, b = parameter_sets(study)
    ledger.add_sets([a, b], 4)
    first, second = ledger.next_runs(2, 2)
    ledger.submitted(first, "k1", {})
    ledger.submitted(second, "k2", {})
    ledger.run_lost("k1", "KilledWorker", worker_lost=True)  # set a: a rerun is queued
    assert ledger.pending
    ledger.cancel(a.param_id)
    assert not ledger.pending and not ledger.suspects
    assert ledger.take_outcomes()[0].reasons == ["cancelled"]
    ledger.run_finished("k2", [result_of(study, second.pieces[0][1], "e2")])
    assert ledger.take_due() == [1]
    assert a.param_id not in ledger.awaited and b.param_id in ledger.awaited


def test_a_driver_s_set_is_extended_with_the_next_seeds_and_reaggregated_over_all() -> None:
    study = make_study()
    ledger = Ledger(study, [], [], driver_batch_size=2)
    (a, _) = parameter_sets(study)
    ledger.add_sets([a], 2)
    run = ledger.next_runs(1, 1)[0]
    assert run.whole_sets == [a.param_id]  # the run may aggregate the set itself
    ledger.submitted(run, "k1", {})
    ledger.run_finished("k1", [result_of(study, run.pieces[0][1], "e1")])
    assert ledger.take_due() == [0]
    ledger.aggregation_started(0)
    aggregate = _aggregate(study, ledger, 0)
    ledger.aggregation_finished(0, [aggregate])
    assert [o.replicates for o in ledger.take_outcomes()] == [2]
    with pytest.raises(ValueError, match="cannot get 2 replicates"):
        ledger.extend(a.param_id, 2)
    ledger.extend(a.param_id, 4)
    (more,) = ledger.next_runs(1, 1)
    assert [(p.start, p.stop) for _, p in more.pieces] == [(2, 4)] and more.whole_sets == []
    ledger.submitted(more, "k2", {})
    ledger.run_finished("k2", [result_of(study, more.pieces[0][1], "e2")])
    assert ledger.take_due() == [0]
    # The aggregation gets every batch: the earlier statistics were kept while open.
    assert [(b.start, b.stop) for b in ledger.group_batches(0)[0]] == [(0, 2), (2, 4)]
    assert ledger.set_replicates(0) == 4


def test_a_closed_set_forgets_its_statistics_and_cannot_be_extended() -> None:
    study = make_study()
    ledger = Ledger(study, [], [], driver_batch_size=2)
    (a, _) = parameter_sets(study)
    ledger.add_sets([a], 2)
    run = ledger.next_runs(1, 1)[0]
    ledger.submitted(run, "k1", {})
    ledger.run_finished("k1", [result_of(study, run.pieces[0][1], "e1")])
    ledger.take_due()
    ledger.aggregation_started(0)
    ledger.aggregation_finished(0, [_aggregate(study, ledger, 0)])
    ledger.close(a.param_id)
    assert all(p.result is None for p in ledger.progress)
    with pytest.raises(ValueError):
        ledger.extend(a.param_id, 4)


def test_a_driver_s_waiting_sets_share_runs_when_there_are_more_than_slots() -> None:
    study = make_study(sets=6)
    ledger = Ledger(study, [], [], driver_batch_size=4)
    ledger.add_sets(parameter_sets(study), 4)
    runs = ledger.next_runs(6, 2)
    assert [len(run.pieces) for run in runs] == [3, 3]
    assert [len(run.whole_sets) for run in runs] == [3, 3]


def _aggregate(study: Study, ledger: Ledger, set_index: int) -> Any:
    from simstudy.stats.aggregate import aggregate_parameter_set

    return aggregate_parameter_set(
        ledger.sets[set_index], ledger.group_batches(set_index)[0],
        ledger.set_replicates(set_index), 0.5, [0.5],
    )  # fmt: skip


def test_a_driver_s_waiting_sets_fill_the_one_free_slot_with_a_fair_share() -> None:
    study = make_study(sets=20)
    ledger = Ledger(study, [], [], driver_batch_size=4)
    ledger.add_sets(parameter_sets(study), 4)
    (run,) = ledger.next_runs(1, 4)  # one run just finished: 20 sets wait, 4 runs at most
    assert len(run.pieces) == 5 and len(run.whole_sets) == 5
    assert [len(r.pieces) for r in ledger.next_runs(3, 4)] == [4, 4, 4]  # 15 left: shares of 4
    assert [len(r.pieces) for r in ledger.next_runs(3, 4)] == [1, 1, 1]  # 3 free slots: 1 each
