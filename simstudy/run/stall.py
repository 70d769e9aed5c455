"""The stall report: what a study is waiting for when nothing has finished for too long.

Pure data and rendering; the Dask-side collection lives in `flows/watchdog.py`.
"""

from __future__ import annotations

from pydantic import BaseModel, Field

from simstudy.output.location import OutputStore
from simstudy.output.results import STALL_JSON, STALL_MARKDOWN, write_json, write_text

MISSING_LISTED = 50
"""Missing replicates listed one by one; beyond that, only counted."""


class StuckTask(BaseModel):
    """One unfinished task and what Dask knows about it."""

    key: str = Field(description="Dask key of the task.")
    name: str = Field(description="Prefect task run name, e.g. sim-3f2a9c01b7de-r000-049.")
    task_run_id: str | None = Field(default=None, description="Prefect task run id.")
    state: str = Field(
        description="Dask state: waiting, queued, processing, no-worker, erred, memory, "
        "released or lost."
    )
    waiting_on: list[str] = Field(default_factory=list, description="Inputs not yet computed.")
    worker: str | None = Field(default=None, description="Worker processing it.")
    running_seconds: float | None = Field(
        default=None, description="Seconds since the worker started it."
    )
    call_stack: list[str] = Field(
        default_factory=list, description="The worker thread's current call stack."
    )
    resource_restrictions: dict[str, float] = Field(
        default_factory=dict, description="Dask resources the task asks for."
    )
    exception: str | None = Field(default=None, description="Error, if it erred.")
    worker_note: str | None = Field(
        default=None, description="Why its worker gave no call stack, e.g. it did not answer."
    )


class WorkerLoad(BaseModel):
    """A worker of the cluster at the moment of the report."""

    address: str = Field(description="Worker address.")
    nthreads: int = Field(description="Threads.")
    executing: int = Field(description="Tasks executing now.")
    memory_bytes: int = Field(description="Resident memory of the worker process.")
    memory_limit_bytes: int | None = Field(default=None, description="Memory limit, if any.")
    resources: dict[str, float] = Field(default_factory=dict, description="Resources offered.")
    seconds_since_heartbeat: float | None = Field(
        default=None, description="Seconds since the scheduler last heard from the worker."
    )
    note: str | None = Field(default=None, description="E.g. that it did not answer in time.")


class StallReport(BaseModel):
    """Every unfinished task of a stalled study, and the cluster's workers."""

    study: str = Field(description="Study name.")
    created_at: str = Field(description="UTC time of the report.")
    seconds_without_progress: float = Field(description="Seconds since anything finished.")
    stall_timeout_seconds: float = Field(description="The configured stall timeout.")
    missing_replicates: list[tuple[str, int]] = Field(
        description="(param_id, replicate) of every replicate not finished."
    )
    missing_aggregations: list[str] = Field(description="param_ids not aggregated yet.")
    tasks: list[StuckTask] = Field(description="Unfinished tasks with their Dask state.")
    workers: list[WorkerLoad] = Field(description="The cluster's workers.")
    notes: list[str] = Field(
        default_factory=list, description="What could not be collected, and why."
    )

    def headline(self) -> str:
        """Return one sentence: how long, how much is missing, where it is stuck."""
        processing = [t for t in self.tasks if t.state == "processing"]
        where = "; ".join(f"{t.name} on {t.worker}" for t in processing[:3]) or "no task running"
        silent = [w for w in self.workers if w.note]
        silence = "".join(f"; worker {w.address} {w.note}" for w in silent[:3])
        return (
            f"study {self.study} stalled: nothing finished for "
            f"{self.seconds_without_progress:.0f} s; {len(self.missing_replicates)} replicates "
            f"and {len(self.missing_aggregations)} aggregations missing; stuck: {where}"
            f"{silence}"
        )

    def to_markdown(self) -> str:
        """Return the report as Markdown."""
        lines = [
            f"# Stall report: {self.study}",
            "",
            self.headline(),
            "",
            f"Created {self.created_at}; stall timeout {self.stall_timeout_seconds:g} s.",
            "",
            "## Unfinished tasks",
            "",
            "| task | state | worker | running s | waiting on | resources | error |",
            "| --- | --- | --- | --- | --- | --- | --- |",
        ]
        for t in self.tasks:
            running = f"{t.running_seconds:.0f}" if t.running_seconds is not None else ""
            lines.append(
                f"| {t.name} | {t.state} | {t.worker or ''} | {running} | "
                f"{len(t.waiting_on) or ''} | {t.resource_restrictions or ''} | "
                f"{(t.exception or '').splitlines()[0] if t.exception else ''} |"
            )
        for t in self.tasks:
            if t.call_stack:
                lines += ["", f"### Call stack of {t.name} on {t.worker}", "", "```"]
                lines += t.call_stack
                lines.append("```")
            elif t.worker_note:
                lines += ["", f"### Call stack of {t.name} on {t.worker}", "", t.worker_note]
        if self.notes:
            lines += ["", "## Notes", ""] + [f"- {note}" for note in self.notes]
        lines += ["", "## Missing", ""]
        listed = self.missing_replicates[:MISSING_LISTED]
        lines += [f"- replicate {r} of {pid}" for pid, r in listed]
        if len(self.missing_replicates) > MISSING_LISTED:
            lines.append(f"- ... {len(self.missing_replicates) - MISSING_LISTED} more")
        lines += [f"- aggregation of {pid}" for pid in self.missing_aggregations]
        lines += [
            "",
            "## Workers",
            "",
            "| worker | threads | executing | memory MiB | limit MiB | resources | last heard s "
            "| note |",
            "| --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
        for w in self.workers:
            limit = f"{w.memory_limit_bytes / 2**20:.0f}" if w.memory_limit_bytes else ""
            heard = (
                f"{w.seconds_since_heartbeat:.0f}" if w.seconds_since_heartbeat is not None else ""
            )
            lines.append(
                f"| {w.address} | {w.nthreads} | {w.executing} | "
                f"{w.memory_bytes / 2**20:.0f} | {limit} | {w.resources or ''} | {heard} "
                f"| {w.note or ''} |"
            )
        return "\n".join(lines) + "\n"

    def write(self, store: OutputStore) -> None:
        """Write stall-report.json and stall-report.md into the output."""
        write_json(store, STALL_JSON, self.model_dump(mode="json"))
        write_text(store, STALL_MARKDOWN, self.to_markdown())
