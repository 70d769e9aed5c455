"""The engine: submit a study's runs to Dask, collect them, and never wait silently.

What a running study knows lives in `simstudy.run.ledger.Ledger`, changed only by events;
this module is its I/O loop. It keeps at most `execution.max_batches_in_flight`
simulation runs submitted ahead of completion, turns what Dask says into the ledger's
events (records streamed from the workers, a run's results, a lost run, an aggregation's
result), submits what the ledger hands out (runs, reruns, due aggregations), passes
finished batches on (the part files) and each set's outcome to a driver, and writes a
stall report when nothing finishes for `execution.stall_timeout_seconds`. A driver
(`simstudy/run/engine.py`) may add work while the loop runs: a calibration's trials.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
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
from flows.watchdog import (
    AGGREGATION_MEMORY_ADVICE,
    ANSWER_SECONDS,
    RUN_MEMORY_ADVICE,
    StallWatch,
    collect_stall_report,
    computing_tasks,
    memory_reason,
    memory_restarts,
)
from simstudy.analysis.targets import Targets
from simstudy.design.expand import ParameterSet
from simstudy.design.plan import Batch
from simstudy.errors import StorageError
from simstudy.output.parts import PartWriter, StoredReplicates
from simstudy.run.batch import BatchResult
from simstudy.run.deadlines import Deadlines
from simstudy.run.engine import Driver
from simstudy.run.events import RecordsReported, RunBegan, RunEvent, parse_event
from simstudy.run.ledger import Ledger, Run
from simstudy.run.stall import StallReport
from simstudy.run.tracking import StudyTracker, TrackerSnapshot
from simstudy.spec.study import Study
from simstudy.stats.aggregate import (
    ParameterSetAggregate,
    SetAggregation,
    SetOutcomes,
    StudySummary,
    reconcile_outputs,
    summarize_study,
)
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
AGGREGATION_PROGRESS_STALLS = 10
"""A running aggregation counts as progress while its worker computes, for at most this
many stall timeouts: an aggregation of long series may take longer than any simulation,
and is slow, not stalled; one that computes for ever still gets its stall report."""
EVENT_TOPIC_LENGTH = 8
"""Events of a study's progress topic the scheduler keeps: subscribers get every one as
it is published, and a kept copy of every record would grow with the study."""


@dataclass
class StudyOutcome:
    """Everything a finished (or abandoned) study run produced.

    Finished batches went to their `on_batches` listener (the part files) as they finished;
    `unfinished` holds the replicates that finished in batches that did not (a stalled study).
    """

    aggregates: list[ParameterSetAggregate]
    summary: StudySummary
    stall_report: StallReport | None = None
    abandoned: bool = False
    unfinished: list[tuple[int, Batch, BatchResult]] = field(default_factory=list)


@dataclass
class StudyOrchestrator:
    """Run one study (and what a driver adds) on a started DaskTaskRunner."""

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

    def __post_init__(self) -> None:
        reused, self.reused = self.reused, {}  # the ledger keeps each until its set is done
        self.ledger = Ledger(
            self.study, self.sets, self.batches, reused, self.driver_batch_size,
            self.stored.reusable_batch if self.stored is not None else None,
        )  # fmt: skip
        self.deadlines = Deadlines.of(self.study.execution)
        self._futures: dict[str, PrefectDaskFuture[Any]] = {}  # Dask key -> simulation run
        self._aggregating: dict[str, tuple[int, PrefectDaskFuture[Any]]] = {}  # -> group
        self._computing_asked = 0.0  # when the scheduler was last asked (`_snapshot`)
        self._submitted: dict[str, float] = {}  # Dask key -> time.time(), for memory kills
        self._abandoned: dict[UUID, str] = {}  # task runs that failed or never finished
        self._events: queue.SimpleQueue[RunEvent] = queue.SimpleQueue()
        self._task_done = threading.Event()
        largest = max([run.size for run in self.ledger.pending] + [self.driver_batch_size])
        self._simulate = configured_simulate_batch(self.study, largest)
        self._limit = self.study.execution.batches_in_flight(self.worker_threads)
        if self.driver is not None:
            # A run being run and one queued per thread: a driver's sets then share runs
            # (`Ledger.next_runs`) instead of each queueing one of its own.
            self._limit = 2 * max(1, self.worker_threads)
        self._hand_on()

    @property
    def tracker(self) -> StudyTracker:
        """Return the study's progress (what is finished, what is missing)."""
        return self.ledger.tracker

    def run(self) -> StudyOutcome:
        """Submit, follow and collect every task; return the outcome."""
        self._edit_event_log(bound_topic, length=EVENT_TOPIC_LENGTH)
        self.client.subscribe_topic(self.progress_topic, self._on_event)
        try:
            return self._loop()
        finally:
            with contextlib.suppress(Exception):
                self.client.unsubscribe_topic(self.progress_topic)
            self._edit_event_log(forget_topic)

    # The engine protocol (simstudy/run/engine.py): the driver calls these from the loop.

    def add_sets(self, sets: Sequence[ParameterSet], replicates: int) -> None:
        """Run `replicates` replicates of each new set; its outcome goes to the driver."""
        self.ledger.add_sets(sets, replicates)

    def extend(self, param_id: str, replicates: int) -> None:
        """Give a set `replicates` replicates in all; its new outcome covers every one."""
        self.ledger.extend(param_id, replicates)

    def close(self, param_id: str) -> None:
        """Forget a set's batch statistics once aggregated: it gets no more replicates."""
        self.ledger.close(param_id)

    def cancel(self, param_id: str) -> None:
        """Run nothing more of a set: its outcome says cancelled."""
        self.ledger.cancel(param_id)

    def capacity(self) -> int:
        """Return the worker threads the study started with."""
        return max(1, self.worker_threads)

    def in_flight(self) -> int:
        """Return the driver's sets whose outcome has not come yet."""
        return len(self.ledger.awaited)

    # The loop.

    def _on_event(self, event: tuple[float, dict[str, Any]]) -> None:
        # Runs on the client's event-loop thread: queued for the loop, which owns the ledger.
        parsed = parse_event(event[1])
        if parsed is not None:
            self._events.put(parsed)

    def _apply_events(self) -> None:
        while True:
            try:
                event = self._events.get_nowait()
            except queue.Empty:
                return
            if isinstance(event, RunBegan):
                self.ledger.run_began(event)
            elif isinstance(event, RecordsReported):
                self.ledger.records_reported(event)

    def _loop(self) -> StudyOutcome:
        watch = StallWatch(self.deadlines.stall, self.study.execution.on_stall)
        last_snapshot: TrackerSnapshot | None = None
        if self.driver is not None:
            self.driver.start(self)
        while not self._done():
            if STOP_REQUESTED.is_set():
                raise KeyboardInterrupt
            self._apply_events()
            self._submit_runs()
            finished = self._collect_finished()
            self._submit_due_aggregations()
            self._hand_on()
            if self._hand_outcomes():
                continue  # the driver's new work is submitted at once
            snapshot = self._snapshot(watch.stall_timeout)
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

    def _snapshot(self, stall_timeout: float) -> TrackerSnapshot:
        """Return the tracker's snapshot, counting an aggregation still computing as progress.

        Asked of the scheduler only past half the stall timeout without progress, at most
        once per `ANSWER_SECONDS`: the loop polls every POLL_SECONDS.
        """
        snapshot = self.tracker.snapshot()
        half = stall_timeout / 2
        if not self._aggregating or snapshot.seconds_since_progress < half:
            return snapshot
        if time.monotonic() - self._computing_asked < min(ANSWER_SECONDS, half):
            return snapshot
        self._computing_asked = time.monotonic()
        longest = AGGREGATION_PROGRESS_STALLS * stall_timeout
        keys = list(self._aggregating)
        if computing_tasks(self.client, keys, longest, min(ANSWER_SECONDS, half)):
            self.tracker.work_progressed()
            snapshot = self.tracker.snapshot()
        return snapshot

    def _done(self) -> bool:
        """Return whether every group is aggregated and the driver wants nothing more."""
        if not self.ledger.all_done():
            return False
        if self.driver is None or self.driver.finished():
            return True
        # Idle, and the driver has not finished: it must add work now, or it never will.
        self.driver.on_outcomes(self, [])
        if self.ledger.all_done() and not self.driver.finished():
            raise RuntimeError(
                f"{type(self.driver).__name__} neither finished nor added work while the "
                "engine was idle"
            )
        return self.driver.finished() and self.ledger.all_done()

    def _hand_outcomes(self) -> bool:
        """Give the driver the outcomes that came since its last turn; return whether any."""
        outcomes = self.ledger.take_outcomes()
        if self.driver is None or not outcomes:
            return False
        self.driver.on_outcomes(self, outcomes)
        return True

    def _hand_on(self) -> None:
        """Pass the batches just finished to `on_batches`, in runs contiguous in the plan."""
        for group in self.ledger.take_finished():
            if self.on_batches is not None:
                notify(self.on_batches, group)

    def _collect_finished(self) -> bool:
        """Handle every finished run and aggregation; return whether there were any."""
        runs = [key for key, future in self._futures.items() if future.wrapped_future.done()]
        aggregations = [
            key for key, (_, future) in self._aggregating.items() if future.wrapped_future.done()
        ]
        for key in runs:
            self._take_run(key, self._futures.pop(key), self._submitted.pop(key, 0.0))
        for key in aggregations:
            group_index, future = self._aggregating.pop(key)
            submitted = self._submitted.pop(key, 0.0)
            self._take_aggregation(group_index, future, submitted)
        return bool(runs or aggregations)

    def _submit_runs(self) -> None:
        runs = self.ledger.next_runs(self._limit - len(self._futures), self._limit)
        if not runs:
            return
        priors = [self.ledger.prior_attempts(run) for run in runs]
        try:
            futures = [
                self._submit_simulation(run, prior) for run, prior in zip(runs, priors, strict=True)
            ]
        except Exception as exc:  # e.g. the API refused a task run: try again next poll
            logger.warning("submitting %d runs failed, trying again: %s", len(runs), exc)
            self.ledger.not_submitted(runs)
            return
        for run, future, prior in zip(runs, futures, priors, strict=True):
            key = str(future.wrapped_future.key)
            self._futures[key] = future
            self._submitted[key] = time.time()
            self.ledger.submitted(run, key, prior)
            self._watch(future)

    def _submit_simulation(
        self, run: Run, prior: dict[tuple[str, int], int]
    ) -> PrefectDaskFuture[Any]:
        """Submit one simulation run: a Prefect task run, or a plain Dask task for a driver.

        A driver's run is a few trials of milliseconds each: measured on a calibration of
        256 trials x 4 SEIR replicates, the Prefect API server, the workers' task engine
        and the flow spent ~3 times the simulations' CPU on a task run per run. Records,
        parts, reruns, timeouts and the stall watch are the engine's own either way; the
        flow run's artifacts show the search.
        """
        parameters = {
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
        }
        if self.driver is None:
            return submit_task(self.runner, self._simulate, parameters)
        future = submit_plain(self.client, simulate_batch.fn, parameters)
        return cast(PrefectDaskFuture[Any], future)

    def _aggregation(self, run: Run) -> SetAggregation | None:
        """Return what a driver's run needs to aggregate the sets it runs whole, if any."""
        if not run.whole_sets:
            return None
        ledger = self.ledger
        sets = {pid: ledger.set_of(pid) for pid in run.whole_sets}
        return SetAggregation(
            sets={pid: state.parameter_set for pid, state in sets.items()},
            replicates={pid: state.replicates for pid, state in sets.items()},
            min_success_fraction=self.study.execution.min_success_fraction,
            quantiles=self.study.aggregate.quantiles,
            targets=self.targets,
        )

    def _watch(self, future: PrefectDaskFuture[Any]) -> None:
        # Wakes the loop at once, so a finished set's aggregation or a rerun is not delayed.
        future.wrapped_future.add_done_callback(lambda _: self._task_done.set())

    def _take_run(self, key: str, future: PrefectDaskFuture[Any], submitted: float) -> None:
        """Fetch a finished run's results (a deadline) and give them to the ledger."""
        self._apply_events()  # records it streamed count before its result
        run = self.ledger.running[key]
        try:
            results: list[BatchResult] = future.result(timeout=self.deadlines.result_fetch)
        except KeyboardInterrupt:
            raise
        except TimeoutError:
            self._abandon(future, run.label)
            failure = ResultNotFetched(self.deadlines.result_fetch)
            self.ledger.run_lost(key, describe_failure(failure), worker_lost(failure))
            return
        except BaseException as exc:  # a lost worker, an error outside the model
            self._abandon(future, run.label)
            reason = self._lost_reason(exc, submitted, RUN_MEMORY_ADVICE)
            self.ledger.run_lost(key, reason, worker_lost(exc))
            return
        if results and results[0].part is not None and self.ledger.needs_outputs(key, results):
            # The flow needs the outputs of some of its batches: its part is not kept.
            results = cast(PartWriter, self.worker_parts).read_back(results)
        self.ledger.run_finished(key, results)

    def _submit_due_aggregations(self) -> None:
        for group_index in self.ledger.take_due():
            self._submit_aggregation(group_index)

    def _submit_aggregation(self, group_index: int) -> None:
        ledger = self.ledger
        group = ledger.groups[group_index]
        name = group_name(ledger.sets, group.set_indices)
        execution = self.study.execution
        # Resources are Dask annotations; prefect-dask passes them on to Client.submit. The
        # inputs are values: a group is aggregated once its batches are finished, so no
        # worker thread waits for them, and no finished batch is recomputed when a worker dies.
        resources = execution.aggregation_resources
        with dask.annotate(resources=resources) if resources else contextlib.nullcontext():
            future = submit_task(
                self.runner,
                aggregate_parameter_sets_task.with_options(task_run_name=name),
                {
                    "parameter_sets": [ledger.sets[s] for s in group.set_indices],
                    "batches": ledger.group_batches(group_index),
                    "replicates": [ledger.set_replicates(s) for s in group.set_indices],
                    "min_success_fraction": execution.min_success_fraction,
                    "quantiles": self.study.aggregate.quantiles,
                    "targets": self.targets,
                },
            )
        future = cast(PrefectDaskFuture[Any], future)
        ledger.aggregation_started(group_index)
        self._aggregating[str(future.wrapped_future.key)] = (group_index, future)
        self._submitted[str(future.wrapped_future.key)] = time.time()
        self._watch(future)

    def _take_aggregation(
        self, group_index: int, future: PrefectDaskFuture[Any], submitted: float
    ) -> None:
        try:
            aggregates: list[ParameterSetAggregate] = future.result(
                timeout=self.deadlines.result_fetch
            )
        except KeyboardInterrupt:
            raise
        except BaseException as exc:
            indices = self.ledger.groups[group_index].set_indices
            self._abandon(future, group_name(self.ledger.sets, indices))
            reason = self._lost_reason(exc, submitted, AGGREGATION_MEMORY_ADVICE)
            self.ledger.aggregation_failed(group_index, reason)
            if self.ledger.groups[group_index].done and self.on_aggregate is not None:
                # Past max_resubmits its sets failed with the reason: listeners hear of it.
                failed = [self.ledger.set_states[s].aggregate for s in indices]
                notify(self.on_aggregate, [a for a in failed if a is not None])
            return
        # Released, the scheduler forgets the task and its arguments (the batches'
        # statistics: ~3 MB a set of 1,000 replicates of a 365-point series).
        self.ledger.aggregation_finished(group_index, aggregates)
        if self.on_aggregate is not None:
            notify(self.on_aggregate, aggregates)

    def _lost_reason(self, exc: BaseException, submitted: float, advice: str) -> str:
        """Return why a task failed; a lost worker that its nanny restarted for memory says so."""
        reason = describe_failure(exc)
        if not worker_lost(exc):
            return reason
        restarts = memory_restarts(self.client, submitted)
        return memory_reason(reason, restarts, advice) if restarts else reason

    def abandoned_task_runs(self) -> dict[UUID, str]:
        """Return task runs (id -> name) still unfinished or lost when the study stopped."""
        unfinished = {
            future.task_run_id: self.ledger.running[key].label
            for key, future in self._futures.items()
            if future.task_run_id is not None and key in self.ledger.running
        }
        for group_index, future in self._aggregating.values():
            indices = self.ledger.groups[group_index].set_indices
            unfinished[future.task_run_id] = group_name(self.ledger.sets, indices)
        return {**self._abandoned, **unfinished}

    def _abandon(self, future: PrefectDaskFuture[Any], name: str) -> None:
        """Remember a task run the study gave up on (a plain Dask run has none)."""
        if future.task_run_id is not None:
            self._abandoned[future.task_run_id] = name

    def _stall_report(self, stall_timeout: float) -> StallReport:
        unfinished = {
            key: (self.ledger.running[key].label, str(future.task_run_id))
            for key, future in self._futures.items()
            if key in self.ledger.running
        }
        for key, (group_index, future) in self._aggregating.items():
            indices = self.ledger.groups[group_index].set_indices
            unfinished[key] = (group_name(self.ledger.sets, indices), str(future.task_run_id))
        return collect_stall_report(
            self.client, self.study.name, self.tracker, unfinished, stall_timeout
        )

    def _cancel_unfinished(self) -> None:
        futures = [future.wrapped_future for future in self._futures.values()]
        futures += [future.wrapped_future for _, future in self._aggregating.values()]
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
            return cast(StudySummary, future.result(timeout=self.deadlines.summary))
        except KeyboardInterrupt:
            raise
        except BaseException as exc:
            self._abandoned[future.task_run_id] = "summarize-study"
            logger.warning("the summary task failed (%s); summarised in the flow instead", exc)
            return summarize_study(aggregates)

    def _outcome(self, stall_report: StallReport | None, abandoned: bool = False) -> StudyOutcome:
        # Sets whose outputs differ from the study's fail here, before any file is written.
        aggregates = reconcile_outputs(
            [s.aggregate for s in self.ledger.set_states if s.aggregate is not None]
        )
        if not abandoned:
            # A driver's sets were told one by one: no study summary task over thousands.
            summary = summarize_study(aggregates) if self.driver else self._summarize(aggregates)
            return StudyOutcome(aggregates, summary, stall_report)
        self._apply_events()
        unfinished = self.ledger.kept_records()
        summary = summarize_study(aggregates)
        missing = self.tracker.missing_aggregations()
        summary.status = "failed"
        summary.n_parameter_sets = len(self.ledger.sets)
        summary.failed_sets.update({pid: ["abandoned: the study stalled"] for pid in missing})
        # Counts of every replicate that finished, aggregated or not; the rest are missing.
        summary.replicate_counts = self.tracker.snapshot().replicates
        return StudyOutcome(aggregates, summary, stall_report, abandoned, unfinished)

    def _edit_event_log(self, edit: Callable[..., None], **kwargs: Any) -> None:
        try:
            self.client.run_on_scheduler(
                edit, topic=self.progress_topic, callback_timeout=ANSWER_SECONDS, **kwargs
            )
        except Exception as exc:  # only memory is at stake
            logger.debug("could not edit the scheduler's event log: %s", exc)


def group_name(sets: list[ParameterSet], set_indices: range) -> str:
    """Return the task run name of a group's aggregation (agg-<id> for a lone set)."""
    first, last = set_indices[0], set_indices[-1]
    if first == last:
        return aggregation_name(sets[first])
    digits = max(4, len(str(last)))
    return f"agg-s{first:0{digits}d}-{last:0{digits}d}"


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
    except StorageError:
        # A full disk (or a read-only folder): every later part and result file would fail
        # too, and their replicates be lost. The study stops with what it kept.
        raise
    except Exception as exc:
        function = getattr(callback, "func", callback)  # a functools.partial's function
        logger.warning(
            "%s failed (%s: %s); the study goes on",
            getattr(function, "__name__", repr(function)), type(exc).__name__, exc,
            exc_info=True,
        )  # fmt: skip


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
