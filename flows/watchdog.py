"""Watch a study for stalls and collect a `StallReport` from the live Dask cluster.

Every call to the cluster here has a deadline: a worker that is stopped (SIGSTOP) or whose
task holds the GIL answers no RPC, and a watchdog that waited for it would freeze with the
study it watches. Such a worker is named in the report instead.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import distributed

from simstudy.output.results import now
from simstudy.run.deadlines import call_with_deadline
from simstudy.run.stall import StallReport, StuckTask, WorkerLoad
from simstudy.run.tracking import StudyTracker, TrackerSnapshot

ANSWER_SECONDS = 5.0
"""How long the scheduler and each worker get to answer one watchdog question."""
SILENT_HEARTBEAT_SECONDS = 5.0
"""A worker whose last heartbeat is older than this is named as not answering (workers of
small clusters beat about every second)."""


def _task_states(dask_scheduler: Any, keys: list[str]) -> dict[str, dict[str, Any]]:
    """Runs on the scheduler: what it knows of each key."""
    states: dict[str, dict[str, Any]] = {}
    for key in keys:
        ts = dask_scheduler.tasks.get(key)
        if ts is None:
            states[key] = {"state": "forgotten"}
            continue
        worker = ts.processing_on
        states[key] = {
            "state": ts.state,
            "waiting_on": sorted(str(dep.key) for dep in (ts.waiting_on or ())),
            "worker": worker.address if worker is not None else None,
            "running_seconds": worker.executing.get(ts) if worker is not None else None,
            "resources": dict(ts.resource_restrictions or {}),
            "exception": str(ts.exception_text) if ts.exception_text else None,
        }
    return states


BUSY_CPU_PERCENT = 50.0
"""A worker process using at least half a core is computing, not waiting on something."""


def _computing(dask_scheduler: Any, keys: list[str], longest: float) -> list[str]:
    """Runs on the scheduler: the keys executing for under `longest` s on a worker that
    beats and uses CPU (the worker's own last sample: ~0.5 s old)."""
    now_s = time.time()
    found = []
    for key in keys:
        ts = dask_scheduler.tasks.get(key)
        worker = ts.processing_on if ts is not None else None
        if worker is None or ts not in worker.executing:
            continue
        if worker.executing[ts] >= longest or now_s - worker.last_seen > SILENT_HEARTBEAT_SECONDS:
            continue
        if (worker.metrics.get("cpu") or 0.0) >= BUSY_CPU_PERCENT:
            found.append(key)
    return found


def computing_tasks(
    client: distributed.Client, keys: list[str], longest: float, seconds: float = ANSWER_SECONDS
) -> list[str]:
    """Return which of `keys` are computing now, for under `longest` s (no answer: none)."""
    try:
        found: list[str] = client.run_on_scheduler(
            _computing, keys=keys, longest=longest, callback_timeout=seconds
        )
    except Exception:  # no answer: nothing is known to be computing
        return []
    return found


def memory_restarts(
    client: distributed.Client, since: float, seconds: float = ANSWER_SECONDS
) -> list[dict[str, Any]]:
    """Return the workers a nanny restarted for memory since `since` (a `time.time()`).

    A worker over its memory limit's terminate fraction is killed by its nanny, and
    whatever ran there fails as a lost worker; the nanny's event says it was memory.
    """
    try:
        events = call_with_deadline(lambda: client.get_events("worker-restart-memory"), seconds)
    except Exception:  # no answer: nothing known
        return []
    return [event for stamp, event in events if stamp >= since and isinstance(event, dict)]


AGGREGATION_MEMORY_ADVICE = "need less (a user loss, fewer points or replicates per set)"
RUN_MEMORY_ADVICE = (
    "need less (the thread runner's model shares its worker's memory; runner 'process' "
    "runs it outside the worker process)"
)


def memory_reason(reason: str, restarts: list[dict[str, Any]], advice: str) -> str:
    """Return a lost task's reason, saying that its worker ran out of memory."""
    rss = max(int(event.get("rss", 0)) for event in restarts) / 2**20
    lost = reason.split(":", 1)[0]  # KilledWorker's own text names only the Dask task
    return (
        f"out of memory: a worker used {rss:,.0f} MiB, over its memory limit, and was "
        f"restarted ({lost}); give the workers more memory (execution.dask.memory_limit) or "
        f"{advice}"
    )


def worker_loads(dask_scheduler: Any) -> list[dict[str, Any]]:
    """Runs on the scheduler: each worker's load and when it was last heard from."""
    now_s = time.time()
    return [
        {
            "address": ws.address,
            "nthreads": ws.nthreads,
            "executing": len(ws.executing),
            "memory_bytes": int(ws.memory.process),
            "memory_limit_bytes": ws.memory_limit or None,
            "resources": dict(ws.resources),
            "seconds_since_heartbeat": max(0.0, now_s - ws.last_seen),
        }
        for ws in dask_scheduler.workers.values()
    ]


async def _call_stacks(
    client: distributed.Client, keys_by_worker: Mapping[str, list[str]], seconds: float
) -> dict[str, dict[str, list[str]] | None]:
    """Ask each worker, through the scheduler, for the stacks of its keys (None: no answer)."""
    assert client.scheduler is not None
    scheduler = client.scheduler

    async def ask(keys: list[str]) -> dict[str, list[str]] | None:
        try:
            answer = await asyncio.wait_for(scheduler.call_stack(keys=keys), seconds)
        except Exception:  # no answer, a closed comm, an error on the scheduler: no stacks
            return None
        stacks: dict[str, list[str]] = {}
        for per_key in (answer or {}).values():
            for key, stack in per_key.items():
                stacks[str(key)] = [line.rstrip() for line in stack]
        return stacks

    workers = list(keys_by_worker)
    answers = await asyncio.gather(*(ask(keys_by_worker[w]) for w in workers))
    return dict(zip(workers, answers, strict=True))


def silent_workers(client: distributed.Client, seconds: float = ANSWER_SECONDS) -> list[str]:
    """Return the workers the scheduler has not heard from for `SILENT_HEARTBEAT_SECONDS`."""
    try:
        loads = client.run_on_scheduler(worker_loads, callback_timeout=seconds)
    except Exception:
        return []
    return [
        load["address"]
        for load in loads
        if load["seconds_since_heartbeat"] > SILENT_HEARTBEAT_SECONDS
    ]


def unresponsive_note(seconds: float) -> str:
    """Return why a worker may not have answered within `seconds`."""
    return f"did not answer within {seconds:g} s: stopped, or a task holding the GIL"


def collect_stall_report(
    client: distributed.Client,
    study_name: str,
    tracker: StudyTracker,
    unfinished: Mapping[str, tuple[str, str | None]],
    stall_timeout_seconds: float,
    answer_seconds: float = ANSWER_SECONDS,
) -> StallReport:
    """Ask the scheduler and workers about every unfinished task (key -> name, run id)."""
    keys = list(unfinished)
    notes: list[str] = []
    try:
        states = client.run_on_scheduler(_task_states, keys=keys, callback_timeout=answer_seconds)
        loads = client.run_on_scheduler(worker_loads, callback_timeout=answer_seconds)
    except Exception as exc:  # no answer in time, or an error on the scheduler
        states, loads = {}, []
        notes.append(f"the scheduler {unresponsive_note(answer_seconds)} ({type(exc).__name__})")
    keys_by_worker: dict[str, list[str]] = {}
    for key in keys:
        worker = states.get(key, {}).get("worker")
        if worker:
            keys_by_worker.setdefault(worker, []).append(key)
    try:
        stacks_by_worker = client.sync(
            _call_stacks,
            client,
            keys_by_worker,
            answer_seconds,
            callback_timeout=answer_seconds + 5,
        )
    except Exception:
        stacks_by_worker = dict.fromkeys(keys_by_worker)
    silent = {w for w, stacks in stacks_by_worker.items() if stacks is None}
    stacks = {k: v for s in stacks_by_worker.values() if s for k, v in s.items()}
    tasks = []
    for key in keys:
        info = states.get(key, {"state": "unknown"})
        name, run_id = unfinished[key]
        worker = info.get("worker")
        tasks.append(
            StuckTask(
                key=key,
                name=name,
                task_run_id=run_id,
                state=info["state"],
                waiting_on=info.get("waiting_on", []),
                worker=worker,
                running_seconds=info.get("running_seconds"),
                call_stack=stacks.get(key, []),
                resource_restrictions=info.get("resources", {}),
                exception=info.get("exception"),
                worker_note=unresponsive_note(answer_seconds) if worker in silent else None,
            )
        )
    workers = [
        WorkerLoad(
            **load, note=unresponsive_note(answer_seconds) if load["address"] in silent else None
        )
        for load in loads
    ]
    snapshot = tracker.snapshot()
    return StallReport(
        study=study_name,
        created_at=now().isoformat(),
        seconds_without_progress=snapshot.seconds_since_progress,
        stall_timeout_seconds=stall_timeout_seconds,
        missing_replicates=tracker.missing_replicates(),
        missing_aggregations=tracker.missing_aggregations(),
        tasks=tasks,
        workers=workers,
        notes=notes,
    )


StallAction = Literal["none", "report", "fail"]


@dataclass
class StallWatch:
    """Decide when a study without progress gets a stall report, and when it is given up.

    A report is due after every `stall_timeout` without progress; with `on_stall: fail`
    the study ends at the second report (a second interval without progress).
    """

    stall_timeout: float
    on_stall: str
    reports: list[StallReport] = field(default_factory=list)

    def check(self, snapshot: TrackerSnapshot) -> StallAction:
        """Return what to do now: nothing, write a report, or report and end the study."""
        if snapshot.seconds_since_progress < self.stall_timeout:
            self.reports.clear()
            return "none"
        if snapshot.seconds_since_progress < self.stall_timeout * (len(self.reports) + 1):
            return "none"
        return "fail" if self.on_stall == "fail" and len(self.reports) >= 1 else "report"

    def add(self, report: StallReport) -> None:
        """Remember a report written for the current stall."""
        self.reports.append(report)

    @property
    def last_report(self) -> StallReport | None:
        """Return the newest report of the current stall, if any."""
        return self.reports[-1] if self.reports else None
