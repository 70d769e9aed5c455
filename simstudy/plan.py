"""Split a study's replicates into batches: one Prefect task run per batch."""

from __future__ import annotations

import math

from pydantic import BaseModel, Field

from simstudy.design import ParameterSet
from simstudy.spec import ScalarParam, Study

TARGET_TASK_RUNS = 40
"""Simulation task runs a study aims for: each costs ~70 ms of CPU in Prefect (~0.1 s where
workers rebuild the Prefect settings; measured in benchmarks/overhead.py). 40 rather than
100 saved 3-5 s for 20 x 200 x 50 ms on 2 workers; 20 would save ~1-3 s more there but
leaves many-worker clusters idle at the end."""

MIN_AUTO_BATCH = 25
"""Smallest automatic batch, so cheap replicates are not drowned in orchestration."""


class Batch(BaseModel):
    """A contiguous range of replicates of one parameter set."""

    param_id: str = Field(description="Parameter set identity.")
    params: dict[str, ScalarParam] = Field(description="Full parameter set.")
    start: int = Field(ge=0, description="First replicate index.")
    stop: int = Field(gt=0, description="One past the last replicate index.")
    width: int = Field(default=3, description="Digits used for replicate indices in labels.")

    @property
    def label(self) -> str:
        """Return a readable name, e.g. sim-3f2a9c01b7de-r000-049."""
        w = self.width
        return f"sim-{self.param_id[:12]}-r{self.start:0{w}d}-{self.stop - 1:0{w}d}"

    @property
    def size(self) -> int:
        """Return the number of replicates in the batch."""
        return self.stop - self.start


def auto_batch_size(n_sets: int, replicates: int) -> int:
    """Return the automatic batch size: ~TARGET_TASK_RUNS runs, >= MIN_AUTO_BATCH replicates."""
    # Depends on the study alone, never on the cluster, so the same study always gets
    # the same batches (and bit-identical merged statistics) on any cluster layout.
    batches_per_set = max(1, math.ceil(TARGET_TASK_RUNS / n_sets))
    smallest = max(min(replicates, MIN_AUTO_BATCH), math.ceil(replicates / batches_per_set))
    # Equal batches: as many as fit at `smallest` or more each.
    n_batches = max(1, replicates // smallest)
    return math.ceil(replicates / n_batches)


def batch_size_for(study: Study, n_sets: int) -> int:
    """Return the study's batch size (its own setting, or the automatic one)."""
    setting = study.execution.batch_size
    if setting == "auto":
        return auto_batch_size(n_sets, study.replicates)
    return min(int(setting), study.replicates)


def plan_batches(study: Study, sets: list[ParameterSet]) -> list[Batch]:
    """Return all batches of the study, parameter set by parameter set."""
    size = batch_size_for(study, len(sets))
    width = max(3, len(str(study.replicates - 1)))
    return [
        Batch(
            param_id=ps.param_id,
            params=ps.params,
            start=start,
            stop=min(start + size, study.replicates),
            width=width,
        )
        for ps in sets
        for start in range(0, study.replicates, size)
    ]
