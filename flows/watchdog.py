"""Collect a `StallReport` from a live Dask cluster: task states, call stacks, workers."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import distributed

from simstudy.stall import StallReport, StuckTask, WorkerLoad
from simstudy.storage import now
from simstudy.tracking import StudyTracker


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


def collect_stall_report(
    client: distributed.Client,
    study_name: str,
    tracker: StudyTracker,
    unfinished: Mapping[str, tuple[str, str | None]],
    stall_timeout_seconds: float,
) -> StallReport:
    """Ask the scheduler and workers about every unfinished task (key -> name, run id)."""
    keys = list(unfinished)
    states = client.run_on_scheduler(_task_states, keys=keys)
    stacks: dict[str, list[str]] = {}
    for per_key in client.call_stack(keys=keys).values():
        for key, stack in per_key.items():
            stacks[str(key)] = [line.rstrip() for line in stack]
    tasks = []
    for key in keys:
        info = states.get(key, {"state": "unknown"})
        name, run_id = unfinished[key]
        tasks.append(
            StuckTask(
                key=key,
                name=name,
                task_run_id=run_id,
                state=info["state"],
                waiting_on=info.get("waiting_on", []),
                worker=info.get("worker"),
                running_seconds=info.get("running_seconds"),
                call_stack=stacks.get(key, []),
                resource_restrictions=info.get("resources", {}),
                exception=info.get("exception"),
            )
        )
    workers = [
        WorkerLoad(
            address=address,
            nthreads=info.get("nthreads", 0),
            executing=int(info.get("metrics", {}).get("task_counts", {}).get("executing", 0)),
            memory_bytes=int(info.get("metrics", {}).get("memory", 0)),
            memory_limit_bytes=info.get("memory_limit"),
            resources=info.get("resources", {}),
        )
        for address, info in client.scheduler_info(n_workers=-1)["workers"].items()
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
    )
