"""The simulation task: one Prefect task run per run of replicates (one or more batches)."""

from __future__ import annotations

import contextlib
import contextvars
import functools
import logging
import socket
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import distributed
from prefect import Task, task
from prefect.cache_policies import NO_CACHE

from simstudy.design.plan import Batch
from simstudy.output.parts import PartTarget
from simstudy.run.batch import BatchResult, as_columns, run_batch
from simstudy.run.columns import records_to_bytes
from simstudy.run.records import ReplicateRecord
from simstudy.spec.study import Study
from simstudy.stats.aggregate import SetAggregation

OUTER_TIMEOUT_MARGIN_SECONDS = 60.0


class _BatchTimeoutWarningFilter(logging.Filter):
    """Drop Prefect's 'timeout in a worker thread cannot interrupt' warning for batch tasks.

    It is true (PrefectHQ/prefect#15760) and is why replicates run under the runner's own
    killable timeout; the batch task's timeout is only a backstop, so the warning on every
    batch is noise.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        is_batch = getattr(record, "task_name", None) == "simulate-batch"
        return not (is_batch and "running in a worker thread" in str(record.msg))


logging.getLogger("prefect.task_runs").addFilter(_BatchTimeoutWarningFilter())


def current_worker() -> str:
    """Return the address of the Dask worker running this code (or the host name)."""
    try:
        return str(distributed.get_worker().address)
    except ValueError:
        return socket.gethostname()


PROGRESS_EVENT_SECONDS = 0.5
"""Finished replicates of a run leave the worker at most this often, in one event.

One Dask event per replicate meant thousands of messages through the worker, the scheduler
and the flow, on the cores the model needs; a stall now shows up at most this much later.
A run's first records leave this long after it began, and records still waiting when the
run returns are dropped (its result carries them): a run of a few fast replicates (a
calibration's trial) sends its result and no event, where it sent two events the flow then
decoded for nothing, measured as a seventh of a calibration's loop.
"""


CAREFUL_EVENT_TIMEOUT_SECONDS = 30.0
ACKNOWLEDGED_REPORT_SECONDS = 0.25
"""A replicate that took this long is reported at once, acknowledged by the scheduler
(~1-2 ms, under 1% of its time): if its worker dies next, its result is not lost with it."""


def replicate_reporter(
    topic: str | None, careful: bool = False, with_outputs: bool = True
) -> ReplicateReporter | None:
    """Return a callback sending finished replicates' records to the flow as Dask events."""
    if topic is None:
        return None
    try:
        worker = distributed.get_worker()
    except ValueError:
        return None
    return ReplicateReporter(worker, topic, careful=careful, with_outputs=with_outputs)


class ReplicateReporter:
    """Send each finished replicate's record to the flow, so a lost batch loses only the rest.

    Records of fast replicates are coalesced (at most one event every `interval`); a
    replicate that took `ACKNOWLEDGED_REPORT_SECONDS` or more is sent at once. A *careful*
    reporter, used when a batch runs again after its task was lost, sends every start and
    every record at once and waits for the scheduler to acknowledge it: the flow then knows
    exactly which replicate was running if the batch is lost again.
    """

    def __init__(
        self,
        worker: distributed.Worker,
        topic: str,
        interval: float = PROGRESS_EVENT_SECONDS,
        careful: bool = False,
        with_outputs: bool = True,
    ):
        self.worker = worker
        self.topic = topic
        self.interval = interval
        self.careful = careful
        # Without outputs (the worker writes its part), a record is provisional: the flow
        # counts it, and runs it again if the run is lost before its part is written.
        self.with_outputs = with_outputs
        self.execution = uuid.uuid4().hex
        # The flow maps a start to the run reporting it; records carry their own identity.
        self.key = str(worker.get_current_task())
        self._pending: list[ReplicateRecord] = []
        self._flush_scheduled = False
        self._last_flush = time.monotonic()  # as if flushed when the run began
        self._begun = False
        self._lock = threading.Lock()

    def started(self, param_id: str, replicate: int) -> None:
        """Tell the flow that a run has begun (careful reporters: every replicate's start)."""
        # One acknowledged message per run, before its first replicate: a run its worker
        # took down before it began (Dask fails every task assigned to a dead worker) is
        # then never charged to a replicate that did not run.
        if self.careful or not self._begun:
            self._begun = True
            message = {"key": self.key, "execution": self.execution, "started": replicate}
            self._send_now({**message, "param_id": param_id})

    def __call__(self, record: ReplicateRecord) -> None:
        """Queue one finished replicate's record; it leaves within `interval`."""
        if self.careful or record.duration_s >= ACKNOWLEDGED_REPORT_SECONDS:
            with self._lock:
                pending, self._pending = [*self._pending, record], []
            self._send_now(self._message(pending))
            return
        with self._lock:
            self._pending.append(record)
            if self._flush_scheduled:
                return
            self._flush_scheduled = True
            delay = max(0.0, self._last_flush + self.interval - time.monotonic())
        # The flush runs on the worker's event loop, so a replicate that hangs after this
        # one cannot hold back the report of the ones already finished.
        outside_task(self.worker.loop.add_callback, self.worker.loop.call_later, delay, self._flush)

    def returned(self) -> None:
        """Drop the records not sent yet: the run's result holds them."""
        with self._lock:
            self._pending = []

    def _flush(self) -> None:
        with self._lock:
            pending, self._pending = self._pending, []
            self._flush_scheduled = False
            self._last_flush = time.monotonic()
        if pending:
            self.worker.log_event(self.topic, self._message(pending))

    def _message(self, records: list[ReplicateRecord]) -> dict[str, Any]:
        # Records travel as one Arrow buffer: as Python objects, a 365-point series is 365
        # floats decoded again by the scheduler and the client (~0.7 GB of the flow
        # process's peak for 100 x 1,000 such replicates).
        if not self.with_outputs:
            records = [record.model_copy(update={"outputs": {}}) for record in records]
        data = records_to_bytes(records)
        message = {"key": self.key, "execution": self.execution, "records": data}
        return message if self.with_outputs else {**message, "provisional": True}

    def _send_now(self, message: dict[str, Any]) -> None:
        # Client.log_event waits for the scheduler's reply; the deadline keeps a lost
        # scheduler from holding the batch (the event is then merely late or lost).
        with contextlib.suppress(Exception):
            client = distributed.get_client()
            assert client.scheduler is not None
            outside_task(
                client.sync,
                client.scheduler.log_event,
                topic=self.topic,
                msg=message,
                callback_timeout=CAREFUL_EVENT_TIMEOUT_SECONDS,
            )


def outside_task(function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Call `function` in an empty context, so what it schedules does not hold the task's.

    A callback or timer scheduled on the worker's event loop keeps the context it was
    scheduled from; the task's context holds its Prefect transaction, and through it the
    task's result. A deadline's timer stays in the loop after it is cancelled, until it is
    due: each run's result (its outputs, a set's values) stayed 30 s on the worker,
    measured as ~30 MB more worker memory per 20 x 200-replicate study of 365-point series.
    """
    return contextvars.Context().run(function, *args, **kwargs)


# Caching is off: the default policy would hash every argument of every task run, and a
# batch's identity is already its (param_id, replicate range, seed).
@task(name="simulate-batch", cache_policy=NO_CACHE, persist_result=False)
def simulate_batch(
    study: Study,
    batches: list[Batch],
    label: str,
    log_dir: str,
    progress_topic: str | None = None,
    prior_attempts: list[dict[int, int]] | None = None,
    careful: bool = False,
    part: PartTarget | None = None,
    aggregation: SetAggregation | None = None,
) -> list[BatchResult]:
    """Run batches of replicates (one task run) on this worker, reporting each finished one.

    `label` names the task run (see `simstudy.design.plan.run_label`); `prior_attempts` has one
    mapping per batch. With a `part`, the worker writes the run's records and outputs to
    that part file and returns the records without outputs: the flow gets statistics.
    With an `aggregation`, each set the run holds whole is aggregated here too.
    """
    reporter = replicate_reporter(progress_topic, careful, with_outputs=part is None)
    execution = reporter.execution if reporter is not None else uuid.uuid4().hex
    worker = current_worker()
    results = []
    for batch, prior in zip(batches, prior_attempts or [{}] * len(batches), strict=True):
        on_start = None
        if reporter is not None:
            on_start = functools.partial(reporter.started, batch.param_id)
        result = run_batch(
            study,
            batch,
            worker=worker,
            log_dir=log_dir,
            on_record=reporter,
            on_start=on_start,
            prior_attempts=prior,
        )
        result.execution = execution
        if aggregation is not None:
            result.aggregate = aggregation.of(result)
        results.append(as_columns(result))
    if reporter is not None:
        reporter.returned()
    if part is not None:
        name = part.write(results, execution)
        results = [r.model_copy(update={"outputs": None, "part": name}) for r in results]
    return results


def outer_timeout_seconds(study: Study, batch_size: int) -> float:
    """Return the run's timeout: every replicate's attempts and delays, plus a margin."""
    return study.execution.batch_worst_case_seconds(batch_size) + OUTER_TIMEOUT_MARGIN_SECONDS


def configured_simulate_batch(study: Study, batch_size: int) -> Task[..., list[BatchResult]]:
    """Return the simulation task with the study's backstop timeout and run names.

    No Prefect retries: replicate retries belong to the runner, and a batch whose task
    failed is rerun by the orchestrator for its unfinished replicates only.
    """
    return simulate_batch.with_options(
        task_run_name="{label}",
        retries=0,
        timeout_seconds=outer_timeout_seconds(study, batch_size),
    )
