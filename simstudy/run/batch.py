"""Run one batch of replicates and summarise it for aggregation."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field

from simstudy.design.identity import replicate_seed
from simstudy.design.plan import Batch
from simstudy.display import describe_outputs
from simstudy.run.columns import (
    outputs_table,
    records_table,
    table_from_bytes,
    table_records,
    table_to_bytes,
    with_outputs,
)
from simstudy.run.records import ReplicateRecord, is_series, output_kinds
from simstudy.run.runners import make_runner, run_replicate
from simstudy.spec.study import Study
from simstudy.stats.partial import Partial

FIRST_ERRORS = 3
"""Distinct errors kept per batch, and per failed parameter set."""


class BatchResult(BaseModel):
    """Records of a batch's replicates and mergeable statistics of its successes."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    param_id: str = Field(description="Parameter set identity.")
    start: int = Field(description="First replicate index.")
    stop: int = Field(description="One past the last replicate index.")
    records: list[ReplicateRecord] = Field(description="One record per replicate, in order.")
    kinds: dict[str, str] = Field(description="Output name -> 'scalar' or 'series'.")
    partials: dict[str, Partial] = Field(description="Output name -> statistics of ok replicates.")
    counts: dict[str, int] = Field(
        default_factory=dict, description="Replicates by status (ok, failed, timed_out)."
    )
    errors: list[str] = Field(
        default_factory=list,
        description=f"First lines of the first {FIRST_ERRORS} distinct errors, in replicate order.",
    )
    execution: str | None = Field(
        default=None,
        description="Id of the task execution that produced it: a task Dask ran again "
        "(its result was lost with a worker) gets a new one, so no execution goes uncounted.",
    )
    outputs: bytes | None = Field(
        default=None,
        description="The records' outputs as one Arrow IPC stream (a column per output, a "
        "row per record, in order) when the batch travels as columns; its records then "
        "carry no outputs.",
    )
    part: str | None = Field(
        default=None,
        description="The part file (name in the output) its worker wrote the batch to, when "
        "workers write parts; its records then carry no outputs and `outputs` is None.",
    )
    aggregate: Any = Field(
        default=None,
        description="The set's ParameterSetAggregate, when the run that ran all of its "
        "replicates aggregated it too (`simstudy.stats.aggregate.SetAggregation`): no aggregation "
        "task then. Typed Any: aggregate.py builds on this module.",
    )


def as_columns(result: BatchResult) -> BatchResult:
    """Return the batch with its outputs as Arrow columns and its records without them.

    A task's result leaves the worker this way: one buffer per output instead of an
    object per replicate, and the flow writes it to a part file without decoding it.
    """
    records = [record.model_copy(update={"outputs": {}}) for record in result.records]
    data = table_to_bytes(outputs_table(result.records))
    return result.model_copy(update={"records": records, "outputs": data})


def batch_table(result: BatchResult) -> pa.Table:
    """Return the batch's records and outputs as one table (see `simstudy.run.columns`)."""
    if result.outputs is None:
        return records_table(result.records)
    return with_outputs(result.records, table_from_bytes(result.outputs))


def batch_records(result: BatchResult) -> list[ReplicateRecord]:
    """Return the batch's records with their outputs (series as arrays)."""
    if result.outputs is None:
        return result.records
    return table_records(batch_table(result), arrays=True)


def statistics_only(result: BatchResult) -> BatchResult:
    """Return the batch without its records: what an aggregation needs (counts, errors, partials).

    The records would travel for nothing: with their outputs, 20 sets x 200 SEIR replicates
    with a 365-point series each took 104-106 s instead of 78 s; without outputs, Prefect
    still walks every record of an aggregation's arguments (1,000 sets x 40 replicates:
    a fifth of the flow's time went into submitting aggregations).
    """
    return result.model_copy(
        update={"records": [], "outputs": None, "part": None, "aggregate": None}
    )


def run_batch(
    study: Study,
    batch: Batch,
    worker: str,
    log_dir: str | Path,
    on_record: Callable[[ReplicateRecord], None] | None = None,
    on_start: Callable[[int], None] | None = None,
    prior_attempts: Mapping[int, int] | None = None,
) -> BatchResult:
    """Run every replicate of the batch (with retries) and summarise the successes.

    `on_start` is called with each replicate index before it runs, `on_record` with its
    record after; `prior_attempts` maps a replicate to executions lost with earlier runs.
    """
    runner = make_runner(study, log_dir)
    execution = study.execution
    prior_attempts = prior_attempts or {}
    records = []
    for replicate in range(batch.start, batch.stop):
        if on_start is not None:
            on_start(replicate)
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
            prior_attempts=prior_attempts.get(replicate, 0),
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
        mine = _shape(record)
        if mine != shape:
            differing = sorted(n for n in mine.keys() | shape.keys() if mine.get(n) != shape.get(n))
            record.status = "failed"
            record.error = (
                f"outputs {describe_outputs(mine, differing)} differ from replicate "
                f"{reference.replicate}'s {describe_outputs(shape, differing)}: every "  # type: ignore[union-attr]
                "replicate must return the same names, kinds and series lengths"
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
        counts=dict(Counter(r.status for r in records)),
        errors=first_errors(records),
    )


def first_errors(records: list[ReplicateRecord]) -> list[str]:
    """Return the first lines of the first FIRST_ERRORS distinct errors, in order."""
    errors = dict.fromkeys(r.error.splitlines()[0] for r in records if r.error)
    return list(errors)[:FIRST_ERRORS]


def _shape(record: ReplicateRecord) -> dict[str, tuple[str, int]]:
    """Return output name -> (kind, length); a scalar has length 1."""
    return {
        name: ("series", int(np.size(value))) if is_series(value) else ("scalar", 1)
        for name, value in sorted(record.outputs.items())
    }


def lost_replicate(
    study: Study, param_id: str, replicate: int, attempts: int, error: str
) -> ReplicateRecord:
    """Return the record of a replicate that never finished: its runs were lost with its task."""
    return ReplicateRecord(
        param_id=param_id,
        replicate=replicate,
        seed=replicate_seed(study.seed, param_id, replicate),
        status="failed",
        attempts=attempts,
        duration_s=0.0,
        error=error,
        worker="",
    )
