"""Finished batches persisted as they finish, so a crashed study resumes where it stopped.

Batches that finish together (contiguous in the plan) become one Parquet part file under
`output/_parts/`, written atomically (temp file + rename), holding their replicate records
as columns (see `simstudy.run.columns`) and each replicate's cache key. The flow keeps nothing
of them but the file's name; the result files are assembled from the parts at the end.
On the next run of the same study, a batch whose replicates are all in the parts with
status ok and the current cache key is reused instead of run again.

Why part files rather than Prefect result persistence: Prefect's cache costs a task run
per cached task (a fully cached rerun took as long as the first run, measured), keys
on arguments only, and the state of a killed run stays RUNNING in its database; the
study's own files are the truth about what finished.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pydantic import BaseModel, Field

from simstudy.design.plan import Batch
from simstudy.output.fingerprint import replicate_cache_key
from simstudy.output.location import OutputStore
from simstudy.output.results import read_schema, read_table, write_table
from simstudy.run.batch import BatchResult, batch_table, summarize_batch
from simstudy.run.columns import (
    OUTPUT_PREFIX,
    RECORD_COLUMNS,
    concat_record_tables,
    table_records,
    table_to_bytes,
)

PARTS_DIR = "_parts"
CACHE_KEY = "cache_key"
logger = logging.getLogger(__name__)

PART_SCHEMA = pa.schema([*RECORD_COLUMNS, (CACHE_KEY, pa.string())])
"""The columns every part has; one column per model output follows them."""


class PartTarget(BaseModel):
    """Where a worker writes the part file of a run it finished (workers write parts)."""

    location: str = Field(description="The study's output: a folder or an fsspec URL.")
    fingerprint: str = Field(description="The model's fingerprint, for the cache keys.")
    prefix: str = Field(description="The part's name without its execution suffix.")

    def write(self, results: list[BatchResult], execution: str) -> str:
        """Write the run's batches as one part file; return its name in the output."""
        name = f"{self.prefix}-{execution[:8]}.parquet"
        write_table(OutputStore(self.location), name, part_table(results, self.fingerprint))
        return name


def part_table(results: list[BatchResult], fingerprint: str) -> pa.Table:
    """Return the batches' records and outputs as a part: with each replicate's cache key."""
    table = concat_record_tables([batch_table(result) for result in results])
    keys = [
        replicate_cache_key(fingerprint, param_id, seed)
        for param_id, seed in zip(
            table.column("param_id").to_pylist(), table.column("seed").to_pylist(), strict=True
        )
    ]
    return table.add_column(len(RECORD_COLUMNS), CACHE_KEY, pa.array(keys, pa.string()))


class PartWriter:
    """Write finished batches as part files, and remember which (in plan order)."""

    def __init__(self, store: OutputStore, fingerprint: str):
        self.store = store
        self.fingerprint = fingerprint
        # Names never repeat across runs, so a part an earlier run wrote is never
        # overwritten while it may still be needed.
        self.token = uuid.uuid4().hex[:12]
        self.written: list[tuple[int, str]] = []  # (first batch index, part name)

    def write(self, batches: list[tuple[int, Batch, BatchResult]]) -> None:
        """Write batches contiguous in the plan (given in order) as one part file.

        Batches a worker already wrote (`BatchResult.part`) are only remembered: the
        orchestrator hands them on whole, every batch of that part and nothing else.
        """
        own = [(index, result) for index, _, result in batches if result.part is None]
        known = {name for _, name in self.written}
        for index, _, result in batches:
            if result.part is not None and result.part not in known:
                known.add(result.part)
                self.written.append((index, result.part))
        if own:
            assert len(own) == len(batches), "a part holds batches of one writer"
            name = f"{PARTS_DIR}/{own[0][0]:07d}-{self.token}.parquet"
            write_table(self.store, name, part_table([r for _, r in own], self.fingerprint))
            self.written.append((own[0][0], name))

    def target(self, first: int) -> PartTarget:
        """Return where a worker writes the part of a run whose first planned batch is `first`."""
        prefix = f"{PARTS_DIR}/{first:07d}-{self.token}-w"
        return PartTarget(location=self.store.location, fingerprint=self.fingerprint, prefix=prefix)

    def read_back(self, results: list[BatchResult]) -> list[BatchResult]:
        """Return a worker-written run's batches with their outputs, read from its part."""
        table = read_table(self.store, str(results[0].part))
        outputs = [name for name in table.column_names if name.startswith(OUTPUT_PREFIX)]
        backed = []
        for result in results:
            rows = table.filter(
                pc.and_(
                    pc.equal(table.column("param_id"), result.param_id),
                    pc.and_(
                        pc.greater_equal(table.column("replicate"), result.start),
                        pc.less(table.column("replicate"), result.stop),
                    ),
                )
            ).sort_by("replicate")
            data = table_to_bytes(rows.select(outputs))
            backed.append(result.model_copy(update={"outputs": data, "part": None}))
        return backed

    def in_plan_order(self) -> list[str]:
        """Return the parts written, in plan order (they hold disjoint batches)."""
        return [name for _, name in sorted(self.written)]

    def remove_others(self) -> None:
        """Delete the parts of earlier runs: what they held that is still valid was rewritten."""
        mine = {name for _, name in self.written}
        for name in self.store.names(PARTS_DIR, ".parquet"):
            if name not in mine:
                self.store.delete(name)


@dataclass
class StoredReplicates:
    """Where the reusable (ok, current cache key) replicates of earlier runs are stored."""

    store: OutputStore
    fingerprint: str
    parts: list[str] = field(default_factory=list)
    index: dict[tuple[str, int], int] = field(default_factory=dict)  # -> position in parts
    corrupt_parts: list[str] = field(default_factory=list)
    _cached: tuple[int, pa.Table] | None = field(default=None, repr=False)

    def reusable_batch(self, batch: Batch) -> BatchResult | None:
        """Return the batch rebuilt from stored records if every replicate can be reused."""
        found = {self.index.get((batch.param_id, r)) for r in range(batch.start, batch.stop)}
        if None in found:
            return None
        rows = []
        for position in sorted(p for p in found if p is not None):
            table = self._part(position)
            mask = pc.and_(
                pc.equal(table.column("param_id"), batch.param_id),
                pc.and_(
                    pc.greater_equal(table.column("replicate"), batch.start),
                    pc.less(table.column("replicate"), batch.stop),
                ),
            )
            rows.extend(table_records(table.filter(mask)))
        by_replicate = {record.replicate: record for record in rows}
        return summarize_batch(batch, [by_replicate[r] for r in range(batch.start, batch.stop)])

    def outputs(self, keys: Iterable[tuple[str, int]]) -> dict[tuple[str, int], dict[str, Any]]:
        """Return the outputs of the stored replicates among `keys` (param_id, replicate)."""
        wanted: dict[int, set[tuple[str, int]]] = {}
        for key in keys:
            position = self.index.get(key)
            if position is not None:
                wanted.setdefault(position, set()).add(key)
        found = {}
        for position, part_keys in sorted(wanted.items()):
            ids = pa.array(sorted({pid for pid, _ in part_keys}), pa.string())
            table = self._part(position)
            for record in table_records(table.filter(pc.is_in(table.column("param_id"), ids))):
                key = (record.param_id, record.replicate)
                if key in part_keys:
                    found[key] = record.outputs
        return found

    def _part(self, position: int) -> pa.Table:
        # Batches are asked for in plan order and a part holds consecutive batches, so
        # one part in memory at a time is enough.
        if self._cached is None or self._cached[0] != position:
            table = read_table(self.store, self.parts[position])
            self._cached = (position, reusable_rows(table, self.fingerprint))
        return self._cached[1]


def read_parts(store: OutputStore, fingerprint: str) -> StoredReplicates:
    """Index the reusable replicates of every part; a corrupt part is deleted (it runs again).

    Only ids are held: a part's outputs are read again when one of its batches is reused.
    """
    stored = StoredReplicates(store, fingerprint)
    for name in store.names(PARTS_DIR, ".parquet"):
        try:
            table = read_table(store, name, columns=PART_SCHEMA.names)
            problem = _format_problem(read_schema(store, name))
        except (OSError, pa.ArrowException) as exc:
            problem = str(exc)
        if problem:
            logger.warning(
                "part %s is unreadable (%s); its replicates will run again", name, problem
            )
            stored.corrupt_parts.append(name.rsplit("/", 1)[-1])
            store.delete(name)
            continue
        table = reusable_rows(table, fingerprint)
        if table.num_rows == 0:
            continue
        stored.parts.append(name)
        for param_id, replicate in zip(
            table.column("param_id").to_pylist(), table.column("replicate").to_pylist(), strict=True
        ):
            stored.index[(param_id, replicate)] = len(stored.parts) - 1
    return stored


def reusable_rows(table: pa.Table, fingerprint: str) -> pa.Table:
    """Return the rows of a part that a run may reuse: ok, with the current cache key."""
    # Failed and timed-out replicates are tried again on resume.
    table = table.filter(pc.equal(table.column("status"), "ok"))
    keep = [
        key == replicate_cache_key(fingerprint, param_id, seed)
        for param_id, seed, key in zip(
            table.column("param_id").to_pylist(),
            table.column("seed").to_pylist(),
            table.column(CACHE_KEY).to_pylist(),
            strict=True,
        )
    ]
    return table.filter(pa.array(keep, pa.bool_()))


def stored_replicates(store: OutputStore) -> int:
    """Return the replicates the part files hold (from their footers)."""
    total = 0
    for name in store.names(PARTS_DIR, ".parquet"):
        try:
            with store.fs.open(store.path(name), "rb") as handle:
                total += pq.ParquetFile(handle).metadata.num_rows
        except (OSError, pa.ArrowException):
            continue  # a corrupt part is found and removed by the next run
    return total


def _format_problem(schema: pa.Schema) -> str:
    """Return why a part cannot be read as this version's part ('' if it can)."""
    missing = [name for name in PART_SCHEMA.names if name not in schema.names]
    if "outputs" in schema.names:
        return "written by an earlier simstudy version"
    return f"columns {missing} are missing" if missing else ""
