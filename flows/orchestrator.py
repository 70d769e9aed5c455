"""Submit a study's tasks to Dask, follow them, and never wait silently.

The orchestrator keeps at most `execution.max_batches_in_flight` simulation batches
submitted ahead of completion, submits each parameter set's aggregation (with that set's
batch futures as arguments) once all its batches are submitted, reruns batches whose
worker was lost, and writes a stall report when nothing finishes for
`execution.stall_timeout_seconds`.
"""

from __future__ import annotations

import contextlib
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast
from uuid import UUID

import dask
import distributed
from prefect import unmapped
from prefect_dask import DaskTaskRunner
from prefect_dask.task_runners import PrefectDaskFuture

from flows.watchdog import collect_stall_report
from simstudy.aggregate import ParameterSetAggregate, StudySummary, summarize_study
from simstudy.batch import BatchResult, failed_batch
from simstudy.batching import Batch
from simstudy.design import ParameterSet
from simstudy.spec import Study
from simstudy.stall import StallReport
from simstudy.tracking import StudyTracker, TrackerSnapshot
from tasks.aggregate import aggregate_parameter_set_task, summarize_study_task
from tasks.simulate import configured_simulate_batch

POLL_SECONDS = 0.25
STOP_REQUESTED = threading.Event()
"""Set by a front end (the CLI, on Ctrl-C) to stop the study at the next poll.

A KeyboardInterrupt raised at an arbitrary point can be caught and logged by library
code (seen: inside Prefect's context serialisation), and the study would then wait on
forever; the orchestrator's loop checks this event too, at a point where stopping is
safe.
"""
MAX_RESUBMITS = 2
"""Extra submissions of a batch or aggregation whose Dask task failed (e.g. KilledWorker)."""


@dataclass
class StudyOutcome:
    """Everything a finished (or abandoned) study run produced."""

    batch_results: list[BatchResult]
    aggregates: list[ParameterSetAggregate]
    summary: StudySummary
    stall_report: StallReport | None = None
    abandoned: bool = False


@dataclass
class _Tracked:
    """A submitted task: what it is and its current future."""

    kind: str  # "batch" or "aggregate"
    index: int
    name: str
    future: PrefectDaskFuture[Any]
    attempts: int = 1


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
    on_batch: Callable[[Batch, BatchResult], None] | None = None
    on_aggregate: Callable[[ParameterSetAggregate], None] | None = None
    reused: dict[int, BatchResult] = field(default_factory=dict)
    tracker: StudyTracker = field(init=False)
    _results: dict[int, BatchResult] = field(default_factory=dict)
    _aggregates: dict[int, ParameterSetAggregate] = field(default_factory=dict)
    _active: dict[int, _Tracked] = field(default_factory=dict)  # id(dask future) -> task
    _failed: list[_Tracked] = field(default_factory=list)  # lost, cancelled or crashed

    def __post_init__(self) -> None:
        self.tracker = StudyTracker(self.batches, [ps.param_id for ps in self.sets])
        self._set_index = {ps.param_id: i for i, ps in enumerate(self.sets)}
        self._set_batches: dict[str, list[int]] = {ps.param_id: [] for ps in self.sets}
        for i, batch in enumerate(self.batches):
            self._set_batches[batch.param_id].append(i)
        self._batch_futures: dict[int, Any] = {}
        self._aggregate_futures: dict[int, Any] = {}
        self._given_up: set[int] = set()
        self._task_done = threading.Event()
        self._unsubmitted = {
            pid: sum(i not in self.reused for i in indices)
            for pid, indices in self._set_batches.items()
        }
        self._pending = deque(i for i in range(len(self.batches)) if i not in self.reused)
        for index, result in self.reused.items():
            self._results[index] = result
            for record in result.records:
                self.tracker.replicate_finished(record.param_id, record.replicate, record.status)
        self.tracker.reused = sum(result.stop - result.start for result in self.reused.values())
        self._simulate = configured_simulate_batch(self.study, max(b.size for b in self.batches))
        self._limit = self.study.execution.batches_in_flight(self.worker_threads)

    def run(self) -> StudyOutcome:
        """Submit, follow and collect every task; return the outcome."""
        self.client.subscribe_topic(self.progress_topic, self._on_replicate_event)
        for param_id, left in self._unsubmitted.items():
            if left == 0:  # every batch reused: aggregate right away
                self._submit_aggregate(self._set_index[param_id], attempts=1)
        try:
            return self._loop()
        finally:
            self.client.unsubscribe_topic(self.progress_topic)

    def _on_replicate_event(self, event: tuple[float, dict[str, Any]]) -> None:
        _, message = event
        for param_id, replicate, status in message["done"]:
            self.tracker.replicate_finished(param_id, replicate, status)

    def _loop(self) -> StudyOutcome:
        execution = self.study.execution
        stall_timeout = execution.stall_timeout()
        reports: list[StallReport] = []
        last_snapshot: TrackerSnapshot | None = None
        while len(self._aggregates) < len(self.sets):
            if STOP_REQUESTED.is_set():
                raise KeyboardInterrupt
            self._submit_batches()
            finished = [t for t in self._active.values() if t.future.wrapped_future.done()]
            for tracked in finished:
                del self._active[id(tracked.future.wrapped_future)]
                self._handle(tracked)
            snapshot = self.tracker.snapshot()
            if snapshot != last_snapshot:
                self.on_progress(snapshot)
                last_snapshot = snapshot
            if snapshot.seconds_since_progress < stall_timeout:
                reports.clear()
            elif snapshot.seconds_since_progress >= stall_timeout * (len(reports) + 1):
                report = self._stall_report(stall_timeout)
                reports.append(report)
                self.on_stall(report)
                if execution.on_stall == "fail" and len(reports) >= 2:
                    self._cancel_active()
                    return self._outcome(stall_report=report, abandoned=True)
            if not finished:
                self._wait_for_any(POLL_SECONDS)
        return self._outcome(stall_report=reports[-1] if reports else None)

    def _wait_for_any(self, seconds: float) -> None:
        """Return when a tracked task finishes, or after `seconds` (to check for stalls)."""
        self._task_done.wait(seconds)
        self._task_done.clear()

    def _summarize(self) -> StudySummary:
        """Run the study summary task over the aggregates (futures, or values made here)."""
        aggregates = [
            self._aggregates[i] if i in self._given_up else self._aggregate_futures[i]
            for i in range(len(self.sets))
        ]
        return self.runner.submit(summarize_study_task, {"aggregates": aggregates}).result()

    def _submit_batches(self) -> None:
        in_flight = sum(1 for t in self._active.values() if t.kind == "batch")
        room = min(self._limit - in_flight, len(self._pending))
        if room <= 0:
            return
        indices = [self._pending.popleft() for _ in range(room)]
        by_set: dict[str, list[int]] = {}
        for index in indices:
            by_set.setdefault(self.batches[index].param_id, []).append(index)
        for param_id, group in by_set.items():
            self._map_batches(group, attempts=1)
            self._unsubmitted[param_id] -= len(group)
            if self._unsubmitted[param_id] == 0:
                self._submit_aggregate(self._set_index[param_id], attempts=1)

    def _map_batches(self, indices: list[int], attempts: int) -> None:
        """Submit these batches (of one parameter set) as mapped simulation task runs."""
        futures = self.runner.map(
            self._simulate,
            {
                "study": unmapped(self.study),
                "batch": [self.batches[i] for i in indices],
                "log_dir": unmapped(self.log_dir),
                "progress_topic": unmapped(self.progress_topic),
            },
        )
        for index, future in zip(indices, futures, strict=True):
            self._batch_futures[index] = future
            label = self.batches[index].label
            self._track(
                _Tracked("batch", index, label, cast(PrefectDaskFuture[Any], future), attempts)
            )

    def _submit_aggregate(self, set_index: int, attempts: int) -> None:
        parameter_set = self.sets[set_index]
        inputs = [
            self._results[i] if i in self._results else self._batch_futures[i]
            for i in self._set_batches[parameter_set.param_id]
        ]
        name = f"agg-{parameter_set.param_id[:12]}"
        execution = self.study.execution
        # Resources are Dask annotations; prefect-dask passes them on to Client.submit.
        resources = execution.aggregation_resources
        with dask.annotate(resources=resources) if resources else contextlib.nullcontext():
            future = self.runner.submit(
                aggregate_parameter_set_task.with_options(task_run_name=name),
                {
                    "parameter_set": parameter_set,
                    "batches": inputs,
                    "replicates": self.study.replicates,
                    "min_success_fraction": execution.min_success_fraction,
                    "quantiles": self.study.aggregate.quantiles,
                },
            )
        self._aggregate_futures[set_index] = future
        self._track(_Tracked("aggregate", set_index, name, future, attempts))

    def _track(self, tracked: _Tracked) -> None:
        self._active[id(tracked.future.wrapped_future)] = tracked
        # Wakes the loop at once, so a finished set's summary or a rerun is not delayed a poll.
        tracked.future.wrapped_future.add_done_callback(lambda _: self._task_done.set())

    def _handle(self, tracked: _Tracked) -> None:
        try:
            value = tracked.future.result()
        except Exception as exc:  # a lost worker, a cancelled or crashed task run
            self._failed.append(tracked)
            self._retry_or_give_up(tracked, exc)
            return
        if tracked.kind == "batch":
            result: BatchResult = value
            self._results[tracked.index] = result
            if self.on_batch is not None:
                self.on_batch(self.batches[tracked.index], result)
            for record in result.records:
                self.tracker.replicate_finished(record.param_id, record.replicate, record.status)
        else:
            aggregate: ParameterSetAggregate = value
            self._aggregates[tracked.index] = aggregate
            self.tracker.aggregate_finished(aggregate.param_id, aggregate.status)
            if self.on_aggregate is not None:
                self.on_aggregate(aggregate)

    def _retry_or_give_up(self, tracked: _Tracked, exc: Exception) -> None:
        reason = f"{type(exc).__name__}: {exc}"
        if tracked.kind == "batch":
            if tracked.attempts <= MAX_RESUBMITS:
                self._map_batches([tracked.index], tracked.attempts + 1)
            else:
                self._results[tracked.index] = failed_batch(
                    self.study,
                    self.batches[tracked.index],
                    f"batch lost after {tracked.attempts} submissions: {reason}",
                )
            return
        if tracked.attempts <= MAX_RESUBMITS:
            # Its inputs may have been resubmitted batches: give it the current ones.
            self._submit_aggregate(tracked.index, tracked.attempts + 1)
            return
        parameter_set = self.sets[tracked.index]
        self._given_up.add(tracked.index)
        self._aggregates[tracked.index] = ParameterSetAggregate(
            param_id=parameter_set.param_id,
            index=parameter_set.index,
            params=parameter_set.params,
            status="failed",
            counts={},
            reasons=[f"aggregation failed {tracked.attempts} times: {reason}"],
        )
        self.tracker.aggregate_finished(parameter_set.param_id, "failed")

    def abandoned_task_runs(self) -> dict[UUID, str]:
        """Return task runs (id -> name) still unfinished or lost when the study stopped."""
        return {
            tracked.future.task_run_id: tracked.name
            for tracked in [*self._active.values(), *self._failed]
        }

    def _stall_report(self, stall_timeout: float) -> StallReport:
        unfinished = {
            str(t.future.wrapped_future.key): (t.name, str(t.future.task_run_id))
            for t in self._active.values()
        }
        return collect_stall_report(
            self.client, self.study.name, self.tracker, unfinished, stall_timeout
        )

    def _cancel_active(self) -> None:
        self.client.cancel([t.future.wrapped_future for t in self._active.values()], force=True)

    def _outcome(self, stall_report: StallReport | None, abandoned: bool = False) -> StudyOutcome:
        results = [self._results[i] for i in sorted(self._results)]
        aggregates = [self._aggregates[i] for i in sorted(self._aggregates)]
        summary = summarize_study(aggregates) if abandoned else self._summarize()
        if abandoned:
            missing = self.tracker.missing_aggregations()
            summary.status = "failed"
            summary.n_parameter_sets = len(self.sets)
            summary.failed_sets.update({pid: ["abandoned: the study stalled"] for pid in missing})
        return StudyOutcome(results, aggregates, summary, stall_report, abandoned)
