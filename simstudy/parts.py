"""Finished batches persisted as they finish, so a crashed study resumes where it stopped.

Each finished batch becomes one Parquet part file under `output/_parts/`, written
atomically (temp file + rename), holding its replicate records and each replicate's
cache key. On the next run of the same study, a batch whose replicates are all in the
parts with status ok and the current cache key is reused instead of run again.

Why part files rather than Prefect result persistence: Prefect's cache costs a task run
per cached task (a fully cached rerun took as long as the first run, measured), keys
on arguments only, and the state of a killed run stays RUNNING in its database; the
study's own files are the truth about what finished.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass

import pyarrow as pa

from simstudy.batch import BatchResult, summarize_batch
from simstudy.fingerprint import replicate_cache_key
from simstudy.location import OutputStore
from simstudy.plan import Batch
from simstudy.records import ReplicateRecord
from simstudy.results import RECORD_COLUMNS, read_table, write_table

PARTS_DIR = "_parts"
logger = logging.getLogger(__name__)

# Outputs as JSON text: scalars and series of any length fit one column.
PART_SCHEMA = pa.schema([*RECORD_COLUMNS, ("outputs", pa.string()), ("cache_key", pa.string())])


def part_name(batch: Batch) -> str:
    """Return the part file of a batch (one name per replicate range)."""
    return f"{PARTS_DIR}/{batch.param_id}-r{batch.start}-{batch.stop}.parquet"


def write_part(store: OutputStore, batch: Batch, result: BatchResult, fingerprint: str) -> None:
    """Persist a finished batch's records with their cache keys."""
    rows = [
        {
            **record.model_dump(exclude={"outputs"}),
            "outputs": json.dumps(record.outputs),
            "cache_key": replicate_cache_key(fingerprint, record.param_id, record.seed),
        }
        for record in result.records
    ]
    write_table(store, part_name(batch), pa.Table.from_pylist(rows, schema=PART_SCHEMA))


@dataclass
class StoredReplicates:
    """Ok replicate records found in the part files, by (param_id, replicate)."""

    records: dict[tuple[str, int], tuple[ReplicateRecord, str]]
    corrupt_parts: list[str]

    def reusable_batch(self, batch: Batch, fingerprint: str) -> BatchResult | None:
        """Return the batch rebuilt from stored records if every replicate can be reused."""
        records = []
        for replicate in range(batch.start, batch.stop):
            stored = self.records.get((batch.param_id, replicate))
            if stored is None:
                return None
            record, key = stored
            if key != replicate_cache_key(fingerprint, record.param_id, record.seed):
                return None
            records.append(record)
        return summarize_batch(batch, records)


def read_parts(store: OutputStore) -> StoredReplicates:
    """Read every part file; a corrupt one is deleted (its replicates will run again)."""
    found: dict[tuple[str, int], tuple[ReplicateRecord, str]] = {}
    corrupt: list[str] = []
    for name in store.names(PARTS_DIR, ".parquet"):
        try:
            rows = read_table(store, name, schema=PART_SCHEMA).to_pylist()
        except (OSError, pa.ArrowException) as exc:
            logger.warning("part %s is unreadable (%s); its replicates will run again", name, exc)
            corrupt.append(name.rsplit("/", 1)[-1])
            store.delete(name)
            continue
        for row in rows:
            if row["status"] != "ok":
                continue  # failed and timed-out replicates are tried again on resume
            key = row.pop("cache_key")
            row["outputs"] = json.loads(row["outputs"])
            record = ReplicateRecord.model_validate(row)
            found[(record.param_id, record.replicate)] = (record, key)
    return StoredReplicates(found, corrupt)
