"""The simulation task: one Prefect task run per batch of replicates."""

from __future__ import annotations

import logging
import socket
import threading

import distributed
from prefect import Task, task
from prefect.cache_policies import NO_CACHE

from simstudy.batch import BatchResult, run_batch
from simstudy.batching import Batch
from simstudy.records import ReplicateRecord
from simstudy.spec import Study

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
"""Finished replicates of a batch are reported at most this often, in one event.

One Dask event per replicate meant thousands of messages through the worker, the scheduler
and the flow, on the cores the model needs; a stall now shows up at most this much later.
"""


def replicate_reporter(topic: str | None) -> ReplicateReporter | None:
    """Return a callback publishing finished replicates as Dask events on `topic`."""
    if topic is None:
        return None
    try:
        worker = distributed.get_worker()
    except ValueError:
        return None
    return ReplicateReporter(worker, topic)


class ReplicateReporter:
    """Publish finished replicates to the flow, at most every PROGRESS_EVENT_SECONDS."""

    def __init__(
        self, worker: distributed.Worker, topic: str, interval: float = PROGRESS_EVENT_SECONDS
    ):
        self.worker = worker
        self.topic = topic
        self.interval = interval
        self._pending: list[tuple[str, int, str]] = []
        self._flush_scheduled = False
        self._lock = threading.Lock()

    def __call__(self, record: ReplicateRecord) -> None:
        """Queue (param_id, replicate, status) of one record; it leaves within `interval`."""
        with self._lock:
            self._pending.append((record.param_id, record.replicate, record.status))
            if self._flush_scheduled:
                return
            self._flush_scheduled = True
        # The flush runs on the worker's event loop, so a replicate that hangs after this
        # one cannot hold back the report of the ones already finished.
        self.worker.loop.add_callback(self.worker.loop.call_later, self.interval, self._flush)

    def _flush(self) -> None:
        with self._lock:
            pending, self._pending = self._pending, []
            self._flush_scheduled = False
        if pending:
            self.worker.log_event(self.topic, {"done": [list(item) for item in pending]})


# Caching is off: the default policy would hash every argument of every task run, and a
# batch's identity is already its (param_id, replicate range, seed).
@task(name="simulate-batch", cache_policy=NO_CACHE, persist_result=False)
def simulate_batch(
    study: Study, batch: Batch, log_dir: str, progress_topic: str | None = None
) -> BatchResult:
    """Run one batch of replicates on this worker, reporting each finished replicate."""
    return run_batch(
        study,
        batch,
        worker=current_worker(),
        log_dir=log_dir,
        on_record=replicate_reporter(progress_topic),
    )


def outer_timeout_seconds(study: Study, batch_size: int) -> float:
    """Return the batch task's timeout: every replicate's attempts and delays, plus a margin."""
    execution = study.execution
    per_replicate = (execution.retries + 1) * execution.timeout_seconds + (
        execution.retries * execution.retry_delay_seconds
    )
    return per_replicate * batch_size + OUTER_TIMEOUT_MARGIN_SECONDS


def configured_simulate_batch(study: Study, batch_size: int) -> Task[..., BatchResult]:
    """Return the simulation task with the study's retries, timeout and run names."""
    return simulate_batch.with_options(
        task_run_name="{batch.label}",
        retries=study.execution.retries,
        retry_delay_seconds=study.execution.retry_delay_seconds,
        timeout_seconds=outer_timeout_seconds(study, batch_size),
    )
