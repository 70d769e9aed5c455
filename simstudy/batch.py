"""Run one batch of replicates and summarise it for aggregation."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from simstudy.batching import Batch
from simstudy.identity import replicate_seed
from simstudy.records import ReplicateRecord, output_kinds
from simstudy.runners import make_runner, run_replicate
from simstudy.spec import Study
from simstudy.stats import Partial


class BatchResult(BaseModel):
    """Records of a batch's replicates and mergeable statistics of its successes."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    param_id: str = Field(description="Parameter set identity.")
    start: int = Field(description="First replicate index.")
    stop: int = Field(description="One past the last replicate index.")
    records: list[ReplicateRecord] = Field(description="One record per replicate, in order.")
    kinds: dict[str, str] = Field(description="Output name -> 'scalar' or 'series'.")
    partials: dict[str, Partial] = Field(description="Output name -> statistics of ok replicates.")


def run_batch(
    study: Study,
    batch: Batch,
    worker: str,
    log_dir: str | Path,
    on_record: Callable[[ReplicateRecord], None] | None = None,
) -> BatchResult:
    """Run every replicate of the batch (with retries) and summarise the successes."""
    runner = make_runner(study, log_dir)
    execution = study.execution
    records = []
    for replicate in range(batch.start, batch.stop):
        record = run_replicate(
            runner,
            param_id=batch.param_id,
            params=dict(batch.params),
            replicate=replicate,
            seed=replicate_seed(study.seed, batch.param_id, replicate),
            timeout_seconds=execution.timeout_seconds,
            retries=execution.retries,
            retry_delay_seconds=execution.retry_delay_seconds,
            worker=worker,
        )
        records.append(record)
        if on_record is not None:
            on_record(record)
    return summarize_batch(batch, records)


def summarize_batch(batch: Batch, records: list[ReplicateRecord]) -> BatchResult:
    """Check that outputs agree across the batch and build its partial statistics."""
    ok = [r for r in records if r.status == "ok"]
    reference = ok[0] if ok else None
    kinds = output_kinds(reference.outputs) if reference else {}
    shape = _shape(reference) if reference else {}
    for record in ok[1:]:
        if _shape(record) != shape:
            record.status = "failed"
            record.error = (
                f"outputs {_shape(record)} differ from replicate {reference.replicate}'s "  # type: ignore[union-attr]
                f"{shape}: every replicate must return the same names, kinds and series lengths"
            )
    ok = [r for r in records if r.status == "ok"]
    partials = {
        name: Partial.from_values(
            np.array([np.atleast_1d(r.outputs[name]) for r in ok], dtype=np.float64).reshape(
                len(ok), length
            )
        )
        for name, (_, length) in shape.items()
    }
    return BatchResult(
        param_id=batch.param_id,
        start=batch.start,
        stop=batch.stop,
        records=records,
        kinds=kinds,
        partials=partials,
    )


def _shape(record: ReplicateRecord) -> dict[str, tuple[str, int]]:
    """Return output name -> (kind, length); a scalar has length 1."""
    return {
        name: ("series", len(value)) if isinstance(value, list) else ("scalar", 1)
        for name, value in sorted(record.outputs.items())
    }


def failed_batch(study: Study, batch: Batch, error: str) -> BatchResult:
    """Return a batch that could not run: every replicate failed with `error`."""
    records = [
        ReplicateRecord(
            param_id=batch.param_id,
            replicate=r,
            seed=replicate_seed(study.seed, batch.param_id, r),
            status="failed",
            attempts=0,
            duration_s=0.0,
            error=error,
            worker="",
        )
        for r in range(batch.start, batch.stop)
    ]
    return summarize_batch(batch, records)
