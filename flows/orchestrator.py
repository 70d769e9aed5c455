"""Submit a study's tasks to Dask, follow them, and never wait silently.

The orchestrator keeps at most `execution.max_batches_in_flight` simulation runs
submitted ahead of completion. Finished replicates stream in from the workers as they
finish, so when a batch's task fails (a lost worker, an error outside the model) only its
replicates without a result run again, at most `execution.max_resubmits` times each. A
task run may hold several parameter sets; a group of consecutive sets is aggregated by
one task run once all their replicates have a record; the stall watch writes a report
when nothing finishes for `execution.stall_timeout_seconds`.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, cast
from uuid import UUID

import dask
import distributed
from prefect_dask import DaskTaskRunner
from prefect_dask.task_runners import PrefectDaskFuture

from flows.submission import submit_plain, submit_task
from flows.watchdog import ANSWER_SECONDS, StallWatch, collect_stall_report
from simstudy.aggregate import (
    ParameterSetAggregate,
    SetAggregation,
    SetOutcomes,
    StudySummary,
    failed_aggregate,
    reconcile_outputs,
    summarize_study,
    without_rows,
)
from simstudy.analysis.targets import Targets
from simstudy.batch import (
    BatchResult,
    batch_records,
    lost_replicate,
    statistics_only,
    summarize_batch,
)
from simstudy.columns import records_from_bytes
from simstudy.design import ParameterSet
from simstudy.engine import Driver, SetOutcome
from simstudy.parts import PartWriter, StoredReplicates
from simstudy.plan import Batch, aggregation_groups, plan_runs, run_label
from simstudy.records import ReplicateRecord
from simstudy.reruns import LostRun, contiguous_ranges, plan_rerun
from simstudy.spec import Study
from simstudy.stall import StallReport
from simstudy.tracking import StudyTracker, TrackerSnapshot
from tasks.aggregate import aggregate_parameter_sets_task, summarize_study_task
from tasks.simulate import configured_simulate_batch, simulate_batch

logger = logging.getLogger(__name__)

POLL_SECONDS = 0.25
STOP_REQUESTED = threading.Event()
"""Set by a front end (the CLI, on Ctrl-C) to stop the study at the next poll.

A KeyboardInterrupt raised at an arbitrary point can be caught and logged by library
code (seen: inside Prefect's context serialisation), and the study would then wait on
forever; the orchestrator's loop checks this event too, at a point where stopping is
safe.
"""
RESULT_SECONDS = 60.0
"""Deadline to fetch a finished task's result (Dask already said it is done): a large one
takes a moment; a worker that holds it and cannot answer makes it a failed run."""
SUMMARY_SECONDS = 60.0
"""Deadline of the study summary task; past it the flow summarises by itself."""
EVENT_TOPIC_LENGTH = 8
"""Events of a study's progress topic the scheduler keeps: subscribers get every one as
it is published, and a kept copy of every record would grow with the study."""


@dataclass
class StudyOutcome:
    """Everything a finished (or abandoned) study run produced.

    Finished batches went to their `on_batch` listener (the part files) as they finished;
    `unfinished` holds the replicates that finished in batches that did not (a stalled study).
    """

    aggregates: list[ParameterSetAggregate]
    summary: StudySummary
    stall_report: StallReport | None = None
    abandoned: bool = False
    unfinished: list[tuple[int, Batch, BatchResult]] = field(default_factory=list)


@dataclass
class BatchRun:
    """One submitted task run: (parts of) one or more planned batches, in order."""

    pieces: list[tuple[int, Batch]]  # (planned batch, the replicates this run covers)
    careful: bool  # reports each start and record at once (a rerun)
    suspect: bool = False  # the lone rerun of a replicate charged with a lost run
    future: PrefectDaskFuture[Any] | None = None
    started: list[tuple[str, int]] = field(default_factory=list)  # (param_id, replicate)

    @property
    def key(self) -> str:
        """Return the Dask key of the run."""
        assert self.future is not None
        return str(self.future.wrapped_future.key)

    @property
    def label(self) -> str:
        """Return the task run's name."""
        return run_label([piece for _, piece in self.pieces])

    @property
    def size(self) -> int:
        """Return the replicates the run covers."""
        return sum(piece.size for _, piece in self.pieces)


@dataclass
class BatchProgress:
    """What is known of one planned batch: finished replicates and lost executions."""

    batch: Batch
    records: dict[int, ReplicateRecord] = field(default_factory=dict)
    lost_executions: dict[int, int] = field(default_factory=dict)  # replicate -> count
    executions: dict[int, set[str]] = field(default_factory=dict)  # replicate -> ids seen
    failed_before_start: int = 0  # runs whose task raised before any replicate started
    lost_before_start: int = 0  # runs whose worker died before they began
    merged: bool = False  # a replicate's records of two executions were merged
    provisional: set[int] = field(default_factory=set)  # ok records whose outputs may be lost
    redone: dict[int, int] = field(default_factory=dict)  # replicate -> attempts run again
    finished: bool = False  # every replicate has its final record
    result: BatchResult | None = None  # kept (without outputs) until its set is aggregated

    def other_executions(self, execution: str | None) -> bool:
        """Return whether records of another execution than `execution` were seen."""
        return any(ids - {execution} for ids in self.executions.values())

    def missing(self, piece: Batch) -> list[int]:
        """Return the replicates of `piece` without a record."""
        return [r for r in range(piece.start, piece.stop) if r not in self.records]


@dataclass
class SetProgress:
    """One parameter set: its planned batches and its aggregate."""

    parameter_set: ParameterSet
    batch_indices: list[int]
    group: int = 0  # its aggregation group
    aggregate: ParameterSetAggregate | None = None
    open: bool = False  # a driver may extend it: its batch statistics stay after aggregation
    replicates: int = 0  # replicates planned so far (a driver's sets; 0: the study's)


@dataclass
class GroupProgress:
    """Consecutive parameter sets aggregated by one task run."""

    set_indices: range
    run: PrefectDaskFuture[Any] | None = None
    attempts: int = 0
    done: bool = False

    def name(self, sets: list[ParameterSet]) -> str:
        """Return the task run name of the group's aggregation."""
        first, last = self.set_indices[0], self.set_indices[-1]
        if first == last:
            return aggregation_name(sets[first])
        digits = max(4, len(str(last)))
        return f"agg-s{first:0{digits}d}-{last:0{digits}d}"


@dataclass
class StudyOrchestrator:
    """Run one study on a started DaskTaskRunner."""

    runner: DaskTaskRunner
    client: distributed.Client
    study: Study
    sets: list[ParameterSet]
    batches: list[Batch]
    log_dir: str
    worker_threads: int
    progress_topic: str
    on_progress: Callable[[TrackerSnapshot], None]
    on_stall: Callable[[StallReport], None]
    on_batches: Callable[[list[tuple[int, Batch, BatchResult]]], None] | None = None
    """Called with batches that finished together, contiguous in the plan (a part file)."""
    on_aggregate: Callable[[list[ParameterSetAggregate]], None] | None = None
    """Called with the aggregates of each aggregation group (consecutive sets)."""
    reused: dict[int, BatchResult] = field(default_factory=dict)
    worker_parts: PartWriter | None = None
    """Set when workers write the part files: first runs get a part to write, and the
    flow receives records without outputs."""
    targets: Targets | None = None
    """Observed data, read once by the flow: every aggregation gets the same small object."""
    driver: Driver | None = None
    """Adds work while the run goes on (a calibration); None: the given sets are all."""
    stored: StoredReplicates | None = None
    """Finished replicates of earlier runs that a driver's sets reuse (the part cache)."""
    driver_batch_size: int = 1
    """Replicates per batch of a driver's sets: extensions keep earlier batches reusable."""
    tracker: StudyTracker = field(init=False)

    def __post_init__(self) -> None:
        self.tracker = StudyTracker(self.batches, [ps.param_id for ps in self.sets])
        self._progress = [BatchProgress(batch) for batch in self.batches]
        self._sets = [SetProgress(ps, []) for ps in self.sets]
        self._set_index = {ps.param_id: i for i, ps in enumerate(self.sets)}
        for i, batch in enumerate(self.batches):
            self._sets[self._set_index[batch.param_id]].batch_indices.append(i)
        self._groups = [GroupProgress(sets) for sets in aggregation_groups(len(self.sets))]
        for group_index, group in enumerate(self._groups):
            for set_index in group.set_indices:
                self._sets[set_index].group = group_index
        self._pending: deque[BatchRun] = deque()
        # Lone reruns of charged replicates go one at a time: two of them sharing a worker
        # that one kills would both be charged.
        self._suspects: deque[BatchRun] = deque()
        self._early_starts: dict[str, list[tuple[str, int]]] = {}  # starts before the run's key
        self._running: dict[str, BatchRun] = {}  # Dask key -> run
        self._aggregating: dict[str, int] = {}  # Dask key -> group index
        self._abandoned: dict[UUID, str] = {}  # task runs that failed or never finished
        self._priors: dict[str, dict[tuple[str, int], int]] = {}  # Dask key -> prior attempts
        self._task_done = threading.Event()
        self._lock = threading.Lock()  # records arrive on the client's event-loop thread
        reused = self.reused.copy()
        self.reused.clear()  # each is dropped once its set is aggregated
        for indices in plan_runs(self.batches):
            pieces = [(i, self.batches[i]) for i in indices if i not in reused]
            if pieces:
                self._pending.append(BatchRun(pieces, careful=False))
        self._just_finished: list[tuple[int, Batch, BatchResult]] = []
        self._outcomes: list[SetOutcome] = []  # for the driver, at the loop's next turn
        self._not_written: set[int] = set()  # reused batches of a driver's sets: in parts already
        self._awaited: set[str] = set()  # a driver's sets whose outcome has not come yet
        for index, result in sorted(reused.items()):
            self._finish_batch(index, result, reused=True)
        self._hand_on_finished()
        self.tracker.reused = sum(result.stop - result.start for result in reused.values())
        largest = max([run.size for run in self._pending] + [self.driver_batch_size])
        self._simulate = configured_simulate_batch(self.study, largest)
        self._limit = self.study.execution.batches_in_flight(self.worker_threads)
        if self.driver is not None:
            # A run being run and one queued per thread: a driver's sets then share runs
            # (`_merged`) instead of each queueing one of its own.
            self._limit = 2 * max(1, self.worker_threads)
        # The loop waits for a result only as long as the stall watch allows: a result
        # held by a worker that was stopped just after its run had blocked it for 60 s
        # with a 10 s stall timeout. A run whose records all streamed in then finishes
        # from them; the others run again.
        self._result_seconds = min(RESULT_SECONDS, self.study.execution.stall_timeout())
        self._max_resubmits = self.study.execution.max_resubmits

    def run(self) -> StudyOutcome:
        """Submit, follow and collect every task; return the outcome."""
        self._bound_event_log()
        self.client.subscribe_topic(self.progress_topic, self._on_event)
        try:
            for group_index in range(len(self._groups)):
                self._aggregate_if_complete(group_index)
            return self._loop()
        finally:
            with contextlib.suppress(Exception):
                self.client.unsubscribe_topic(self.progress_topic)
            self._edit_event_log(forget_topic)

    def _bound_event_log(self) -> None:
        self._edit_event_log(bound_topic, length=EVENT_TOPIC_LENGTH)

    def _edit_event_log(self, edit: Callable[..., None], **kwargs: Any) -> None:
        try:
            self.client.run_on_scheduler(
                edit, topic=self.progress_topic, callback_timeout=ANSWER_SECONDS, **kwargs
            )
        except Exception as exc:  # only memory is at stake
            logger.debug("could not edit the scheduler's event log: %s", exc)

    def _on_event(self, event: tuple[float, dict[str, Any]]) -> None:
        _, message = event
        with self._lock:
            if "started" in message:
                key = str(message.get("key"))
                started = (str(message.get("param_id")), int(message["started"]))
                run = self._running.get(key)
                if run is not None:
                    run.started.append(started)
                else:  # a run may begin before its submission call has returned
                    self._early_starts.setdefault(key, []).append(started)
            # A record is a result wherever it comes from, even a run already lost.
            records = message.get("records")
            provisional = bool(message.get("provisional"))
            execution = message.get("execution")
            for record in records_from_bytes(records, arrays=True) if records else ():
                progress = self._progress_of(record.param_id, record.replicate)
                if progress is not None and not progress.finished:
                    self._accept(progress, record, execution, message.get("key"), provisional)

    def _accept(
        self,
        progress: BatchProgress,
        record: ReplicateRecord,
        execution: str | None,
        key: Any,
        provisional: bool = False,
    ) -> None:
        """Keep a replicate's record; a second execution of it adds its attempts (lock held).

        A `provisional` record (ok, its outputs in a part its worker has not written yet)
        never replaces one whose outputs are known, and is replaced by any such one.
        """
        replicate = record.replicate
        provisional = provisional and record.status == "ok"
        seen = progress.executions.setdefault(replicate, set())
        existing = progress.records.get(replicate)
        was_provisional = replicate in progress.provisional
        attempts: int | None = None
        if existing is None or execution is None:
            new_wins = True
        elif execution in seen:
            # The same execution again (its result after its streamed record): the result
            # wins (a batch's own checks may fail a replicate), the executions counted stay.
            new_wins = was_provisional or not provisional
            attempts = max(existing.attempts, record.attempts)
        else:
            # Dask ran its task again (its result was lost with a worker before the flow
            # fetched it): both executions count; a record with its outputs wins over a
            # provisional one, an ok one over a failed one.
            prior = self._priors.get(str(key), {}).get((record.param_id, replicate), 0)
            if provisional != was_provisional:
                new_wins = was_provisional
            else:
                new_wins = existing.status != "ok" and record.status == "ok"
            attempts = existing.attempts + record.attempts - prior
            progress.merged = True
        kept = record if new_wins else cast(ReplicateRecord, existing)
        if attempts is not None:
            kept = kept.model_copy(update={"attempts": attempts})
        progress.records[replicate] = kept
        if provisional if new_wins else was_provisional:
            progress.provisional.add(replicate)
        else:
            progress.provisional.discard(replicate)
        if execution is not None:
            seen.add(execution)
        self.tracker.replicate_finished(record.param_id, replicate, record.status)

    def _progress_of(self, param_id: str, replicate: int) -> BatchProgress | None:
        set_index = self._set_index.get(param_id)
        if set_index is None:
            return None
        for index in self._sets[set_index].batch_indices:
            if self.batches[index].start <= replicate < self.batches[index].stop:
                return self._progress[index]
        return None

    # The engine protocol (simstudy/engine.py): the driver calls these from the loop's thread.

    def add_sets(self, sets: Sequence[ParameterSet], replicates: int) -> None:
        """Run `replicates` replicates of each new set; its outcome goes to the driver."""
        for parameter_set in sets:
            if parameter_set.param_id in self._set_index:
                raise ValueError(
                    f"parameter set {parameter_set.param_id[:12]} was added already: extend it"
                )
            set_index = len(self.sets)
            self.sets.append(parameter_set)
            self._set_index[parameter_set.param_id] = set_index
            self._sets.append(SetProgress(parameter_set, [], group=len(self._groups), open=True))
            self._groups.append(GroupProgress(range(set_index, set_index + 1)))
            self.tracker.add_set(parameter_set.param_id)
            self._plan_set(set_index, 0, replicates)

    def extend(self, param_id: str, replicates: int) -> None:
        """Give a set `replicates` replicates in all; its new outcome covers every one."""
        state = self._sets[self._set_index[param_id]]
        group = self._groups[state.group]
        if not state.open or not group.done or replicates <= state.replicates:
            raise ValueError(
                f"parameter set {param_id[:12]} cannot get {replicates} replicates: it has "
                f"{state.replicates}, and only a set with an outcome and not closed is extended"
            )
        group.done = False
        state.aggregate = None
        self.tracker.aggregate_reopened(param_id)
        self._plan_set(self._set_index[param_id], state.replicates, replicates)

    def close(self, param_id: str) -> None:
        """Forget a set's batch statistics once aggregated: it gets no more replicates."""
        state = self._sets[self._set_index[param_id]]
        state.open = False
        if self._groups[state.group].done:
            for index in state.batch_indices:
                self._progress[index].result = None

    def capacity(self) -> int:
        """Return the worker threads the study started with."""
        return max(1, self.worker_threads)

    def in_flight(self) -> int:
        """Return the driver's sets whose outcome has not come yet."""
        return len(self._awaited)

    def _plan_set(self, set_index: int, start: int, stop: int) -> None:
        """Queue replicates [start, stop) of a driver's set, reusing what the cache holds."""
        state = self._sets[set_index]
        parameter_set = state.parameter_set
        for begin in range(start, stop, self.driver_batch_size):
            batch = Batch(
                param_id=parameter_set.param_id,
                params=parameter_set.params,
                start=begin,
                stop=min(begin + self.driver_batch_size, stop),
                set_index=set_index,
            )
            index = len(self.batches)
            self.batches.append(batch)
            self._progress.append(BatchProgress(batch))
            state.batch_indices.append(index)
            self.tracker.add_batch(batch)
            reused = self.stored.reusable_batch(batch) if self.stored is not None else None
            if reused is None:
                self._pending.append(BatchRun([(index, batch)], careful=False))
                continue
            self._not_written.add(index)  # its replicates are in the cache's parts already
            self.tracker.reused += batch.size
            self._finish_batch(index, reused, reused=True)
        state.replicates = stop
        self._awaited.add(parameter_set.param_id)
        self._hand_on_finished()
        self._aggregate_if_complete(state.group)

    def _done(self) -> bool:
        """Return whether every group is aggregated and the driver wants nothing more."""
        if not all(group.done for group in self._groups):
            return False
        if self.driver is None or self.driver.finished():
            return True
        # Idle, and the driver has not finished: it must add work now, or it never will.
        self.driver.on_outcomes(self, [])
        if all(group.done for group in self._groups) and not self.driver.finished():
            raise RuntimeError(
                f"{type(self.driver).__name__} neither finished nor added work while the "
                "engine was idle"
            )
        return self.driver.finished() and all(group.done for group in self._groups)

    def _hand_outcomes(self) -> bool:
        """Give the driver the outcomes that came since its last turn; return whether any."""
        if self.driver is None or not self._outcomes:
            return False
        outcomes, self._outcomes = self._outcomes, []
        self.driver.on_outcomes(self, outcomes)
        return True

    def _loop(self) -> StudyOutcome:
        execution = self.study.execution
        watch = StallWatch(execution.stall_timeout(), execution.on_stall)
        last_snapshot: TrackerSnapshot | None = None
        if self.driver is not None:
            self.driver.start(self)
        while not self._done():
            if STOP_REQUESTED.is_set():
                raise KeyboardInterrupt
            self._submit_runs()
            finished = self._collect_finished()
            if self._hand_outcomes():
                continue  # the driver's new work is submitted at once
            snapshot = self.tracker.snapshot()
            if snapshot != last_snapshot:
                notify(self.on_progress, snapshot)
                last_snapshot = snapshot
            action = watch.check(snapshot)
            if action != "none":
                report = self._stall_report(watch.stall_timeout)
                watch.add(report)
                notify(self.on_stall, report)
                if action == "fail":
                    self._cancel_unfinished()
                    return self._outcome(stall_report=report, abandoned=True)
            if not finished:
                self._task_done.wait(POLL_SECONDS)
                self._task_done.clear()
        return self._outcome(stall_report=watch.last_report)

    def _collect_finished(self) -> bool:
        """Handle every finished run and aggregation; return whether there were any."""
        with self._lock:
            runs = [
                r for r in self._running.values() if r.future and r.future.wrapped_future.done()
            ]
            for run in runs:
                del self._running[run.key]
        aggregations = [
            (key, index)
            for key, index in self._aggregating.items()
            if cast(PrefectDaskFuture[Any], self._groups[index].run).wrapped_future.done()
        ]
        for run in runs:
            self._handle_run(run)
        for key, index in aggregations:
            del self._aggregating[key]
            self._handle_aggregation(index)
        return bool(runs or aggregations)

    def _submit_runs(self) -> None:
        room = self._limit - len(self._running)
        runs: list[BatchRun] = []
        if room > 0 and self._suspects and not any(r.suspect for r in self._running.values()):
            runs.append(self._suspects.popleft())
        while len(runs) < room and self._pending:
            runs.append(self._pending.popleft())
        if self.driver is not None:
            runs = self._merged(runs)
        if not runs:
            return
        priors = [self._prior_attempts(run) for run in runs]
        try:
            futures = [
                self._submit_simulation(
                    {
                        "study": self.study,
                        "batches": [piece for _, piece in run.pieces],
                        "label": run.label,
                        "log_dir": self.log_dir,
                        "progress_topic": self.progress_topic,
                        "prior_attempts": [
                            {r: n for (pid, r), n in prior.items() if pid == piece.param_id}
                            for _, piece in run.pieces
                        ],
                        "careful": run.careful,
                        "part": None
                        if self.worker_parts is None or run.careful
                        else self.worker_parts.target(run.pieces[0][0]),
                        "aggregation": self._aggregation(run),
                    },
                )
                for run, prior in zip(runs, priors, strict=True)
            ]
        except Exception as exc:  # e.g. the API refused a task run: try again next poll
            logger.warning("submitting %d runs failed, trying again: %s", len(runs), exc)
            for run in reversed(runs):
                (self._suspects if run.suspect else self._pending).appendleft(run)
            return
        with self._lock:
            for run, future, prior in zip(runs, futures, priors, strict=True):
                run.future = cast(PrefectDaskFuture[Any], future)
                self._running[run.key] = run
                self._priors[run.key] = prior
                run.started.extend(self._early_starts.pop(run.key, ()))
                self._watch(run.future)

    def _submit_simulation(self, parameters: dict[str, Any]) -> PrefectDaskFuture[Any]:
        """Submit one simulation run: a Prefect task run, or a plain Dask task for a driver.

        A driver's run is a few trials of milliseconds each: measured on a calibration of
        256 trials x 4 SEIR replicates, the Prefect API server, the workers' task engine
        and the flow spent ~3 times the simulations' CPU on a task run per run. Records,
        parts, reruns, timeouts and the stall watch are the engine's own either way; the
        flow run's artifacts show the search.
        """
        if self.driver is None:
            return submit_task(self.runner, self._simulate, parameters)
        return cast(
            PrefectDaskFuture[Any], submit_plain(self.client, simulate_batch.fn, parameters)
        )

    def _merged(self, runs: list[BatchRun]) -> list[BatchRun]:
        """Fold a driver's first runs into as many runs as there is room for, the rest queued.

        A calibration's trial is a few replicates of milliseconds: as a task run each, the
        flow's Prefect overhead, not the simulations, set the pace. Reruns stay alone.
        """
        plain = [run for run in runs if not run.careful]
        if len(plain) <= 1:
            return runs
        slots = max(1, min(len(plain), self._limit - len(self._running) - (len(runs) - len(plain))))
        size = -(-len(plain) // slots)
        merged = [
            BatchRun([piece for run in plain[i : i + size] for piece in run.pieces], careful=False)
            for i in range(0, len(plain), size)
        ]
        return [run for run in runs if run.careful] + merged

    def _aggregation(self, run: BatchRun) -> SetAggregation | None:
        """Return what a driver's run needs to aggregate the sets it runs whole, if any."""
        if self.driver is None or run.careful:
            return None
        whole = [
            self._sets[self._set_index[piece.param_id]]
            for _, piece in run.pieces
            if piece.start == 0
            and piece.stop == self._sets[self._set_index[piece.param_id]].replicates
        ]
        if not whole:
            return None
        execution = self.study.execution
        return SetAggregation(
            sets={s.parameter_set.param_id: s.parameter_set for s in whole},
            replicates={s.parameter_set.param_id: s.replicates for s in whole},
            min_success_fraction=execution.min_success_fraction,
            quantiles=self.study.aggregate.quantiles,
            targets=self.targets,
        )

    def _prior_attempts(self, run: BatchRun) -> dict[tuple[str, int], int]:
        """Return (param_id, replicate) -> executions lost earlier, for the run's replicates."""
        priors: dict[tuple[str, int], int] = {}
        for index, piece in run.pieces:
            progress = self._progress[index]
            for lost in (progress.lost_executions, progress.redone):
                for r, n in lost.items():
                    if piece.start <= r < piece.stop:
                        priors[(piece.param_id, r)] = priors.get((piece.param_id, r), 0) + n
        return priors

    def _watch(self, future: PrefectDaskFuture[Any]) -> None:
        # Wakes the loop at once, so a finished set's aggregation or a rerun is not delayed.
        future.wrapped_future.add_done_callback(lambda _: self._task_done.set())

    def _handle_run(self, run: BatchRun) -> None:
        try:
            self._take_run(run)
        finally:
            with self._lock:  # its future is released now: Dask cannot run it again
                self._priors.pop(run.key, None)

    def _take_run(self, run: BatchRun) -> None:
        assert run.future is not None
        if all(self._progress[index].finished for index, _ in run.pieces):
            return  # finished by other runs meanwhile
        results: list[BatchResult] | None = None
        try:
            results = run.future.result(timeout=self._result_seconds)
        except KeyboardInterrupt:
            raise
        except TimeoutError:
            self._abandon(run.future, run.label)
            self._rerun_unfinished(run, ResultNotFetched(self._result_seconds))
        except BaseException as exc:  # a lost worker, an error outside the model
            self._abandon(run.future, run.label)
            self._rerun_unfinished(run, exc)
        else:
            assert results is not None
            if results and results[0].part is not None and not self._whole_run(run, results):
                # The flow needs the outputs of some of its batches: its part is not kept.
                results = cast(PartWriter, self.worker_parts).read_back(results)
            with self._lock:
                for (index, piece), result in zip(run.pieces, results, strict=True):
                    progress = self._progress[index]
                    if progress.finished:
                        continue
                    # The usual case, a whole batch run once, is written from the result's
                    # columns as they came; otherwise records are assembled one by one.
                    whole = self._taken_whole(index, piece, result)
                    for record in result.records if whole else batch_records(result):
                        self._accept(progress, record, result.execution, run.key)
        for position, (index, piece) in enumerate(run.pieces):
            progress = self._progress[index]
            complete = len(progress.records) == progress.batch.size and not progress.provisional
            if complete and not progress.finished:
                whole = results is not None and piece == progress.batch and not progress.merged
                self._finish_batch(index, results[position] if whole and results else None)
        self._hand_on_finished()

    def _whole_run(self, run: BatchRun, results: list[BatchResult]) -> bool:
        """Return whether every batch of the run is taken whole from its result."""
        with self._lock:
            return all(
                not self._progress[index].finished and self._taken_whole(index, piece, result)
                for (index, piece), result in zip(run.pieces, results, strict=True)
            )

    def _taken_whole(self, index: int, piece: Batch, result: BatchResult) -> bool:
        """Return whether a batch is taken as its result has it (lock held): the run covered
        all of it, and no other execution of its replicates was seen."""
        progress = self._progress[index]
        return piece == progress.batch and not progress.other_executions(result.execution)

    def _hand_on_finished(self) -> None:
        """Pass the batches just finished to `on_batches`, in runs contiguous in the plan."""
        finished, self._just_finished = sorted(self._just_finished, key=lambda f: f[0]), []
        if self._not_written:
            finished = [item for item in finished if item[0] not in self._not_written]
            self._not_written.clear()
        groups: list[list[tuple[int, Batch, BatchResult]]] = []
        for item in finished:
            if groups and groups[-1][-1][0] + 1 == item[0]:
                groups[-1].append(item)
            else:
                groups.append([item])
        for group in groups:
            if self.on_batches is not None:
                notify(self.on_batches, group)

    def _rerun_unfinished(self, run: BatchRun, exc: BaseException) -> None:
        """Queue the replicates of a failed run that have no record, charging the one running.

        Runs go through their batches in order: the first batch with replicates missing was
        running; the later ones never started and run again uncharged.
        """
        reason = describe_failure(exc)
        reruns: list[tuple[int, int, int]] = []  # (batch, start, stop)
        charged = False
        for index, piece in run.pieces:
            progress = self._progress[index]
            with self._lock:
                missing = progress.missing(piece)
                started = [r for pid, r in run.started if pid == piece.param_id or not run.careful]
            if not missing:
                continue
            if charged:
                reruns.extend((index, a, b) for a, b in contiguous_ranges(missing))
                continue
            charged = True
            lost = LostRun(missing, started, run.careful, worker_lost(exc))
            reruns.extend((index, a, b) for a, b in self._plan_rerun(index, lost, reason))
        reruns = self._with_provisional(run, reruns)
        if reruns:  # reruns go ahead of first runs
            pieces = [(i, self._piece(i, a, b)) for i, a, b in reruns]
            self._pending.appendleft(BatchRun(pieces, careful=True))

    def _with_provisional(
        self, run: BatchRun, reruns: list[tuple[int, int, int]]
    ) -> list[tuple[int, int, int]]:
        """Add the lost run's provisional replicates to its reruns (uncharged): they finished,
        but their outputs were to be written with the run's part, which is lost."""
        if self.worker_parts is None:
            return reruns
        again: dict[int, set[int]] = {}
        for index, start, stop in reruns:
            again.setdefault(index, set()).update(range(start, stop))
        with self._lock:
            for index, piece in run.pieces:
                progress = self._progress[index]
                for replicate in sorted(progress.provisional):
                    if piece.start <= replicate < piece.stop:
                        progress.provisional.discard(replicate)
                        attempts = progress.records.pop(replicate).attempts
                        # They did run: the rerun's record counts these attempts too.
                        progress.redone[replicate] = attempts
                        self.tracker.replicate_unfinished(piece.param_id, replicate)
                        again.setdefault(index, set()).add(replicate)
        return [
            (index, start, stop)
            for index, replicates in sorted(again.items())
            for start, stop in contiguous_ranges(sorted(replicates))
        ]

    def _plan_rerun(self, index: int, lost: LostRun, reason: str) -> list[tuple[int, int]]:
        """Charge one batch's lost run; give up or isolate its replicates; return the rest."""
        progress = self._progress[index]
        plan = plan_rerun(
            lost,
            progress.lost_executions,
            progress.failed_before_start,
            self._max_resubmits,
            progress.lost_before_start,
        )
        if plan.batch_failed_before_start:
            progress.failed_before_start += 1
        if plan.lost_before_start:
            progress.lost_before_start += 1
        if plan.running is not None:
            progress.lost_executions[plan.running] = (
                progress.lost_executions.get(plan.running, 0) + 1
            )
        for replicate in plan.give_up:
            if replicate == plan.running:
                error = (
                    f"its batch task failed {progress.lost_executions[replicate]} times while "
                    f"this replicate ran: {reason}"
                )
            else:
                times = max(progress.failed_before_start, progress.lost_before_start)
                error = (
                    f"not run: its batch task failed {times} times before its first "
                    f"replicate started: {reason}"
                )
            self._give_up(index, replicate, error)
        if plan.isolated is not None:
            piece = self._piece(index, *plan.isolated)
            self._suspects.append(BatchRun([(index, piece)], careful=True, suspect=True))
        return plan.pieces

    def _piece(self, index: int, start: int, stop: int) -> Batch:
        return self.batches[index].model_copy(update={"start": start, "stop": stop})

    def _give_up(self, index: int, replicate: int, error: str) -> None:
        progress = self._progress[index]
        record = lost_replicate(
            self.study,
            progress.batch.param_id,
            replicate,
            attempts=progress.lost_executions.get(replicate, 0),
            error=error,
        )
        with self._lock:
            progress.records[replicate] = record
            self.tracker.replicate_finished(record.param_id, replicate, record.status)

    def _finish_batch(self, index: int, result: BatchResult | None, reused: bool = False) -> None:
        """Hand a planned batch's records on once all are in; aggregate its group if complete."""
        progress = self._progress[index]
        batch = progress.batch
        if result is None:
            records = [progress.records[r] for r in range(batch.start, batch.stop)]
            result = summarize_batch(batch, records)
        progress.finished = True
        progress.records.clear()  # the result holds them now
        progress.executions.clear()
        if reused:
            for record in result.records:
                self.tracker.replicate_finished(record.param_id, record.replicate, record.status)
        self._just_finished.append((index, batch, result))
        self.tracker.batch_finished(batch)
        # Only what an aggregation needs stays: the outputs are in the part file now.
        progress.result = statistics_only(result)
        if not reused:
            state = self._sets[self._set_index[batch.param_id]]
            if result.aggregate is not None and state.batch_indices == [index]:
                # Its run aggregated it: the set's one batch, taken whole from that run.
                self._aggregated(state.group, [result.aggregate])
            else:
                self._aggregate_if_complete(state.group)

    def _aggregate_if_complete(self, group_index: int) -> None:
        group = self._groups[group_index]
        if group.done or group.run is not None:
            return
        indices = [i for s in group.set_indices for i in self._sets[s].batch_indices]
        if all(self._progress[i].finished for i in indices):
            self._submit_aggregation(group_index)

    def _submit_aggregation(self, group_index: int) -> None:
        group = self._groups[group_index]
        name = group.name(self.sets)
        execution = self.study.execution
        batches = [
            [cast(BatchResult, self._progress[i].result) for i in self._sets[s].batch_indices]
            for s in group.set_indices
        ]
        # Resources are Dask annotations; prefect-dask passes them on to Client.submit. The
        # inputs are values: a group is aggregated once its batches are finished, so no
        # worker thread waits for them, and no finished batch is recomputed when a worker dies.
        resources = execution.aggregation_resources
        with dask.annotate(resources=resources) if resources else contextlib.nullcontext():
            future = submit_task(
                self.runner,
                aggregate_parameter_sets_task.with_options(task_run_name=name),
                {
                    "parameter_sets": [self.sets[s] for s in group.set_indices],
                    "batches": batches,
                    "replicates": [
                        self._sets[s].replicates or self.study.replicates for s in group.set_indices
                    ],  # fmt: skip
                    "min_success_fraction": execution.min_success_fraction,
                    "quantiles": self.study.aggregate.quantiles,
                    "targets": self.targets,
                },
            )
        group.run = cast(PrefectDaskFuture[Any], future)
        group.attempts += 1
        self._aggregating[str(group.run.wrapped_future.key)] = group_index
        self._watch(group.run)

    def _handle_aggregation(self, group_index: int) -> None:
        group = self._groups[group_index]
        future = group.run
        assert future is not None
        try:
            aggregates: list[ParameterSetAggregate] = future.result(timeout=self._result_seconds)
        except KeyboardInterrupt:
            raise
        except BaseException as exc:
            self._abandoned[future.task_run_id] = group.name(self.sets)
            group.run = None
            if group.attempts <= self._max_resubmits:
                self._aggregate_if_complete(group_index)
                return
            reason = f"aggregation failed {group.attempts} times: {describe_failure(exc)}"
            aggregates = [
                failed_aggregate(self.sets[s], self._set_batches(s), reason)
                for s in group.set_indices
            ]
        # Released, the scheduler forgets the task and its arguments (the batches'
        # statistics: ~3 MB a set of 1,000 replicates of a 365-point series).
        group.run = None
        self._aggregated(group_index, aggregates)

    def _aggregated(self, group_index: int, aggregates: list[ParameterSetAggregate]) -> None:
        """Take a group's aggregates: its sets are done; a driver hears of its own."""
        group = self._groups[group_index]
        group.done = True
        for set_index, aggregate in zip(group.set_indices, aggregates, strict=True):
            state = self._sets[set_index]
            state.aggregate = aggregate
            if not state.open:
                for index in state.batch_indices:
                    self._progress[index].result = None  # aggregated: nothing left to keep
            self.tracker.aggregate_finished(aggregate.param_id, aggregate.status)
            if self.driver is not None and aggregate.param_id in self._awaited:
                self._awaited.discard(aggregate.param_id)
                self._outcomes.append(set_outcome(aggregate))
                # Its rows are in no result file of a driver's run: only the outcome stays,
                # so 10,000 trials of a 365-point series do not pile up in the flow.
                state.aggregate = without_rows(aggregate)
        if self.on_aggregate is not None:
            notify(self.on_aggregate, aggregates)

    def _set_batches(self, set_index: int) -> list[BatchResult]:
        return [
            cast(BatchResult, self._progress[i].result) for i in self._sets[set_index].batch_indices
        ]

    def abandoned_task_runs(self) -> dict[UUID, str]:
        """Return task runs (id -> name) still unfinished or lost when the study stopped."""
        unfinished = {
            run.future.task_run_id: run.label
            for run in self._running.values()
            if run.future is not None
        }
        for group in self._groups:
            if group.run is not None and not group.done:
                unfinished[group.run.task_run_id] = group.name(self.sets)
        unfinished.pop(None, None)  # type: ignore[call-overload]  # a driver's plain runs
        return {**self._abandoned, **unfinished}

    def _abandon(self, future: PrefectDaskFuture[Any], name: str) -> None:
        """Remember a task run the study gave up on (a plain Dask run has none)."""
        if future.task_run_id is not None:
            self._abandoned[future.task_run_id] = name

    def _stall_report(self, stall_timeout: float) -> StallReport:
        unfinished = {
            key: (run.label, str(cast(PrefectDaskFuture[Any], run.future).task_run_id))
            for key, run in self._running.items()
        }
        for key, index in self._aggregating.items():
            future = cast(PrefectDaskFuture[Any], self._groups[index].run)
            unfinished[key] = (self._groups[index].name(self.sets), str(future.task_run_id))
        return collect_stall_report(
            self.client, self.study.name, self.tracker, unfinished, stall_timeout
        )

    def _cancel_unfinished(self) -> None:
        futures = [run.future.wrapped_future for run in self._running.values() if run.future]
        futures += [
            cast(PrefectDaskFuture[Any], self._groups[i].run).wrapped_future
            for i in self._aggregating.values()
        ]
        try:
            # Client.cancel has no deadline of its own; this is the same call, with one.
            self.client.sync(
                self.client._cancel, futures, force=True, callback_timeout=ANSWER_SECONDS
            )
        except Exception as exc:  # the cluster is torn down next anyway
            logger.warning("could not cancel the unfinished tasks: %s", describe_failure(exc))

    def _summarize(self, aggregates: list[ParameterSetAggregate]) -> StudySummary:
        """Run the study summary task; past its deadline (or if it fails), summarise here."""
        outcomes = SetOutcomes.of(aggregates)
        future = submit_task(self.runner, summarize_study_task, {"aggregates": outcomes})
        try:
            return cast(StudySummary, future.result(timeout=SUMMARY_SECONDS))
        except KeyboardInterrupt:
            raise
        except BaseException as exc:
            self._abandoned[future.task_run_id] = "summarize-study"
            logger.warning("the summary task failed (%s); summarised in the flow instead", exc)
            return summarize_study(aggregates)

    def _outcome(self, stall_report: StallReport | None, abandoned: bool = False) -> StudyOutcome:
        # Sets whose outputs differ from the study's fail here, before any file is written.
        aggregates = reconcile_outputs([s.aggregate for s in self._sets if s.aggregate is not None])
        if not abandoned:
            # A driver's sets were told one by one: no study summary task over thousands.
            summary = summarize_study(aggregates) if self.driver else self._summarize(aggregates)
            return StudyOutcome(aggregates, summary, stall_report)
        with self._lock:  # replicates of unfinished batches that did finish are kept too
            for p in self._progress:
                for replicate in p.provisional:  # their outputs never reached a part
                    self.tracker.replicate_unfinished(p.batch.param_id, replicate)
            kept = [
                (i, p.batch, [p.records[r] for r in sorted(p.records) if r not in p.provisional])
                for i, p in enumerate(self._progress)
                if not p.finished
            ]
            unfinished = [
                (i, batch, summarize_batch(piece, records))
                for i, batch, records in kept
                if records
                for piece in [
                    batch.model_copy(
                        update={"start": records[0].replicate, "stop": records[-1].replicate + 1}
                    )
                ]
            ]
        summary = summarize_study(aggregates)
        missing = self.tracker.missing_aggregations()
        summary.status = "failed"
        summary.n_parameter_sets = len(self.sets)
        summary.failed_sets.update({pid: ["abandoned: the study stalled"] for pid in missing})
        # Counts of every replicate that finished, aggregated or not; the rest are missing.
        summary.replicate_counts = self.tracker.snapshot().replicates
        return StudyOutcome(aggregates, summary, stall_report, abandoned, unfinished)


def _topics(dask_scheduler: Any) -> dict[str, Any] | None:
    return getattr(getattr(dask_scheduler, "_broker", None), "_topics", None)


def bound_topic(dask_scheduler: Any, topic: str, length: int) -> None:
    """Keep the last `length` events of a topic on the scheduler (run there)."""
    topics = _topics(dask_scheduler)
    if topics is not None:
        topics[topic].events = deque(maxlen=length)


def forget_topic(dask_scheduler: Any, topic: str) -> None:
    """Drop a finished study's topic and its last events from the scheduler (run there).

    A long-lived scheduler kept every study's topic, with its last events: ~1.8 MB a
    study of 365-point series.
    """
    topics = _topics(dask_scheduler)
    if topics is not None:
        topics.pop(topic, None)


def set_outcome(aggregate: ParameterSetAggregate) -> SetOutcome:
    """Return what a driver learns of an aggregated set."""
    return SetOutcome(
        param_id=aggregate.param_id,
        status=aggregate.status,
        replicates=sum(aggregate.counts.values()),
        loss=aggregate.loss,
        loss_se=aggregate.loss_se,
        loss_bias=aggregate.loss_bias,
        reasons=list(aggregate.reasons),
    )


def aggregation_name(parameter_set: ParameterSet) -> str:
    """Return the task run name of a parameter set's aggregation, e.g. agg-3f2a9c01b7de."""
    return f"agg-{parameter_set.param_id[:12]}"


def notify(callback: Callable[..., None], *args: Any) -> None:
    """Call a listener; its failure (an API or a store that refused a write) is logged only.

    Progress, stall reports and part files are worth having, but a study that cannot
    publish one of them must still finish and write its results.
    """
    try:
        callback(*args)
    except Exception:
        logger.warning(
            "%s failed; the study goes on", getattr(callback, "__name__", callback), exc_info=True
        )


class ResultNotFetched(RuntimeError):
    """A finished run whose result its worker did not hand over in time."""

    def __init__(self, seconds: float):
        super().__init__(
            f"its result could not be fetched within {seconds:g} s (its worker does not "
            "answer, or the result is very large)"
        )


def worker_lost(exc: BaseException) -> bool:
    """Return whether a task failed because of its worker, not by an error raised in it."""
    lost = distributed.KilledWorker | distributed.comm.CommClosedError | ResultNotFetched
    return isinstance(exc, lost)


def describe_failure(exc: BaseException) -> str:
    """Return the real cause of a task's failure: the innermost error, by type and message."""
    cause: BaseException = exc
    while cause.__cause__ is not None and cause.__cause__ is not cause:
        cause = cause.__cause__
    text = str(cause).strip().splitlines()
    return f"{type(cause).__name__}: {text[0] if text else ''}".rstrip(": ")
