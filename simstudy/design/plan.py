"""Split a study's replicates into simulation task runs, and its sets into aggregation groups.

The study's replicates, in design order (set 0's replicates 0..R-1, then set 1's, ...),
are cut into runs of `batch_size` consecutive replicates: one Prefect task run each, so
the number of task runs follows the work, not the number of parameter sets. Where a run
crosses a set boundary it holds one `Batch` per set: a batch is the part of one set in
one run, the unit of records, part files and reruns.
"""

from __future__ import annotations

import math

from pydantic import BaseModel, Field

from simstudy.design.expand import ParameterSet
from simstudy.spec.study import ScalarParam, Study

TARGET_TASK_RUNS = 40
"""Simulation task runs a study aims for: each costs ~70 ms of CPU in Prefect (~0.1 s where
workers rebuild the Prefect settings; measured in benchmarks/overhead.py). 40 rather than
100 saved 3-5 s for 20 x 200 x 50 ms on 2 workers; 20 would save ~1-3 s more there but
leaves many-worker clusters idle at the end."""

MIN_AUTO_BATCH = 25
"""Smallest automatic run, so cheap replicates are not drowned in orchestration."""

MAX_AUTO_BATCH = 5_000
"""Largest automatic run: what a run holds waits in the flow until the run ends (a million
replicates make 200 runs), and a lost run has less to redo."""

TARGET_AGGREGATIONS = 40
"""Aggregation task runs a study aims for: sets are aggregated in groups of consecutive sets."""


class Batch(BaseModel):
    """A contiguous range of replicates of one parameter set, inside one task run."""

    param_id: str = Field(description="Parameter set identity.")
    params: dict[str, ScalarParam] = Field(description="Full parameter set.")
    start: int = Field(ge=0, description="First replicate index.")
    stop: int = Field(gt=0, description="One past the last replicate index.")
    width: int = Field(default=3, description="Digits used for replicate indices in labels.")
    set_index: int = Field(default=0, ge=0, description="Position of the set in the design.")
    run: int = Field(default=0, ge=0, description="Simulation task run holding it in the plan.")

    @property
    def label(self) -> str:
        """Return a readable name, e.g. sim-3f2a9c01b7de-r000-049."""
        w = self.width
        return f"sim-{self.param_id[:12]}-r{self.start:0{w}d}-{self.stop - 1:0{w}d}"

    @property
    def size(self) -> int:
        """Return the number of replicates in the batch."""
        return self.stop - self.start


def run_label(batches: list[Batch]) -> str:
    """Return a task run's name: its batch's label, or its first and last set and replicate.

    e.g. sim-s0040.r0-s0064.r3: from set 40 (design order) replicate 0 to set 64 replicate 3.
    """
    if len(batches) == 1:
        return batches[0].label
    first, last = batches[0], batches[-1]
    digits = max(4, len(str(last.set_index)))
    return (
        f"sim-s{first.set_index:0{digits}d}.r{first.start}-"
        f"s{last.set_index:0{digits}d}.r{last.stop - 1}"
    )


def auto_batch_size(n_sets: int, replicates: int) -> int:
    """Return the automatic run size: ~TARGET_TASK_RUNS runs of MIN..MAX_AUTO_BATCH replicates."""
    # Depends on the study alone, never on the cluster, so the same study always gets
    # the same runs (and bit-identical merged statistics) on any cluster layout.
    total = n_sets * replicates
    n_runs = max(1, min(TARGET_TASK_RUNS, total // MIN_AUTO_BATCH))
    # At least one run per set up to TARGET_TASK_RUNS sets: a small study of slow
    # replicates (8 sets x 10 replicates of a minute) still spreads over 8 workers.
    n_runs = max(n_runs, min(n_sets, TARGET_TASK_RUNS), math.ceil(total / MAX_AUTO_BATCH))
    return math.ceil(total / n_runs)


def batch_size_for(study: Study, n_sets: int) -> int:
    """Return the study's replicates per task run (its own setting, or the automatic one)."""
    setting = study.execution.batch_size
    if setting == "auto":
        return auto_batch_size(n_sets, study.replicates)
    return int(setting)


def plan_batches(study: Study, sets: list[ParameterSet]) -> list[Batch]:
    """Return all batches of the study in design order, each with its task run."""
    size = batch_size_for(study, len(sets))
    width = max(3, len(str(study.replicates - 1)))
    batches: list[Batch] = []
    run, filled = 0, 0  # the current run, and the replicates it holds so far
    for position, ps in enumerate(sets):
        start = 0
        while start < study.replicates:
            stop = min(start + size - filled, study.replicates)
            batches.append(
                Batch(
                    param_id=ps.param_id,
                    params=ps.params,
                    start=start,
                    stop=stop,
                    width=width,
                    set_index=position,
                    run=run,
                )
            )
            filled += stop - start
            start = stop
            if filled == size:
                run, filled = run + 1, 0
    return batches


def plan_runs(batches: list[Batch]) -> list[list[int]]:
    """Return the batch indices of each task run, in order."""
    runs: list[list[int]] = []
    for index, batch in enumerate(batches):
        if runs and batches[runs[-1][-1]].run == batch.run:
            runs[-1].append(index)
        else:
            runs.append([index])
    return runs


def aggregation_groups(n_sets: int) -> list[range]:
    """Return consecutive set positions aggregated by one task run each (~TARGET_AGGREGATIONS)."""
    size = max(1, math.ceil(n_sets / TARGET_AGGREGATIONS))
    return [range(start, min(start + size, n_sets)) for start in range(0, n_sets, size)]
