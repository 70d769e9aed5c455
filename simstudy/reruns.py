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


@dataclass(frozen=True)
class LostRun:
    """A run of (part of) a batch whose task failed."""

    missing: list[int]
    """Replicates of the run without a record, ascending."""
    started: list[int] | None
    """Replicates the run reported starting, in order (None: it did not report starts)."""


@dataclass
class RerunPlan:
    """The decision for one lost run."""

    running: int | None = None
    """The replicate charged with the lost execution (None: none had started)."""
    batch_failed_before_start: bool = False
    """The run failed before its first replicate started: charged to the batch."""
    give_up: list[int] = field(default_factory=list)
    """Replicates to record failed now."""
    pieces: list[tuple[int, int]] = field(default_factory=list)
    """Replicate ranges [start, stop) to run again, the charged replicate's first."""


def running_replicate(lost: LostRun) -> int | None:
    """Return the replicate that was running when the run was lost (None: none had started)."""
    if not lost.missing:
        return None
    if lost.started is None:
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
) -> RerunPlan:
    """Decide what runs again after `lost`, given the losses counted so far.

    `lost_executions` counts, per replicate, runs already lost while it ran;
    `failed_before_start` counts the batch's runs that failed before any replicate started.
    Each may reach `max_resubmits` reruns; past that, what is left is given up.
    """
    if not lost.missing:
        return RerunPlan()
    running = running_replicate(lost)
    if running is None:
        if failed_before_start + 1 > max_resubmits:
            return RerunPlan(batch_failed_before_start=True, give_up=list(lost.missing))
        pieces = contiguous_ranges(lost.missing)
        return RerunPlan(batch_failed_before_start=True, pieces=pieces)
    plan = RerunPlan(running=running)
    if lost_executions.get(running, 0) + 1 > max_resubmits:
        plan.give_up.append(running)
    else:
        plan.pieces.append((running, running + 1))
    plan.pieces += contiguous_ranges([r for r in lost.missing if r != running])
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
