"""What to run again when a batch's task was lost, and what to give up.

A batch runs its replicates in order and reports each finished one as it finishes, so
when its task is lost (a dead worker, an error outside the model) the flow knows which
replicates have a result. The rest run again; the replicate that was running is charged
one lost execution and runs again alone, so a replicate that kills its worker cannot take
the others with it. Pure decisions, no Dask or Prefect: the orchestrator applies them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

UNSTARTED_LOSSES = 10
"""Runs of one batch its workers may take down before the run began (a worker dies with
every task assigned to it) before the batch's remaining replicates are given up."""


@dataclass(frozen=True)
class LostRun:
    """A run of (part of) a batch whose task failed."""

    missing: list[int]
    """Replicates of the run without a record, ascending."""
    started: list[int]
    """Replicates the run reported starting, in order: every one for a careful run, only
    the first for another (each run reports its beginning)."""
    careful: bool
    """Whether the run reported every start and every record at once."""
    worker_lost: bool
    """Whether the task failed because its worker died (not an error raised in it)."""


@dataclass
class RerunPlan:
    """The decision for one lost run."""

    running: int | None = None
    """The replicate charged with the lost execution (None: none had started)."""
    batch_failed_before_start: bool = False
    """The task raised before its first replicate started: charged to the batch."""
    lost_before_start: bool = False
    """Its worker died before the run began: charged to no replicate."""
    give_up: list[int] = field(default_factory=list)
    """Replicates to record failed now."""
    isolated: tuple[int, int] | None = None
    """The charged replicate's own run [start, stop): alone, so that a replicate that kills
    its worker cannot take others with it."""
    pieces: list[tuple[int, int]] = field(default_factory=list)
    """The other replicate ranges [start, stop) to run again."""


def running_replicate(lost: LostRun) -> int | None:
    """Return the replicate that was running when the run was lost (None: none had started)."""
    if not lost.missing or not lost.started:
        return None
    if not lost.careful:
        # Records leave in order: the first replicate without one was running, or had just
        # finished and its report was lost with the worker (then it did run, too).
        return lost.missing[0]
    started = [r for r in lost.started if r in set(lost.missing)]
    return started[-1] if started else None


def plan_rerun(
    lost: LostRun,
    lost_executions: Mapping[int, int],
    failed_before_start: int,
    max_resubmits: int,
    lost_before_start: int = 0,
) -> RerunPlan:
    """Decide what runs again after `lost`, given the losses counted so far.

    `lost_executions` counts, per replicate, runs already lost while it ran;
    `failed_before_start` counts the batch's runs whose task raised before any replicate
    started, and `lost_before_start` those whose worker died before they began. The first
    two may reach `max_resubmits` reruns, the last `UNSTARTED_LOSSES`; past that, what is
    left is given up.
    """
    if not lost.missing:
        return RerunPlan()
    running = running_replicate(lost)
    if running is None and lost.worker_lost:
        if lost_before_start + 1 > UNSTARTED_LOSSES:
            return RerunPlan(lost_before_start=True, give_up=list(lost.missing))
        return RerunPlan(lost_before_start=True, pieces=contiguous_ranges(lost.missing))
    if running is None:
        if failed_before_start + 1 > max_resubmits:
            return RerunPlan(batch_failed_before_start=True, give_up=list(lost.missing))
        pieces = contiguous_ranges(lost.missing)
        return RerunPlan(batch_failed_before_start=True, pieces=pieces)
    plan = RerunPlan(running=running)
    if lost_executions.get(running, 0) + 1 > max_resubmits:
        plan.give_up.append(running)
    else:
        plan.isolated = (running, running + 1)
    plan.pieces = contiguous_ranges([r for r in lost.missing if r != running])
    return plan


def contiguous_ranges(replicates: list[int]) -> list[tuple[int, int]]:
    """Return ascending replicates as [start, stop) ranges of consecutive ones."""
    ranges: list[tuple[int, int]] = []
    for r in replicates:
        if ranges and ranges[-1][1] == r:
            ranges[-1] = (ranges[-1][0], r + 1)
        else:
            ranges.append((r, r + 1))
    return ranges
