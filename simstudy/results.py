"""Result files of a study, each written whole (atomically on a local disk).

Files in the output folder: `replicates.parquet`, `timeseries.parquet`,
`aggregates.parquet`, `timeseries_aggregates.parquet`, `study.json` and `logs/`.
"""

from __future__ import annotations

import hashlib
import json
import platform
from datetime import UTC, datetime
from importlib import metadata
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from simstudy.aggregate import ParameterSetAggregate
from simstudy.design import ParameterSet
from simstudy.errors import OutputDirError
from simstudy.location import OutputStore
from simstudy.records import ReplicateRecord
from simstudy.spec import Study

STUDY_FILE = "study.json"
REPLICATES_FILE = "replicates.parquet"
TIMESERIES_FILE = "timeseries.parquet"
AGGREGATES_FILE = "aggregates.parquet"
TIMESERIES_AGGREGATES_FILE = "timeseries_aggregates.parquet"
STALL_JSON = "stall-report.json"
STALL_MARKDOWN = "stall-report.md"
LOGS_DIR = "logs"
LOCK_FILE = ".simstudy.lock"
RESULT_FILES = (
    STUDY_FILE,
    STALL_JSON,
    STALL_MARKDOWN,
    REPLICATES_FILE,
    TIMESERIES_FILE,
    AGGREGATES_FILE,
    TIMESERIES_AGGREGATES_FILE,
)
RECORD_COLUMNS: list[tuple[str, pa.DataType]] = [
    ("param_id", pa.string()),
    ("replicate", pa.int64()),
    ("seed", pa.int64()),
    ("status", pa.string()),
    ("attempts", pa.int64()),
    ("duration_s", pa.float64()),
    ("error", pa.string()),
    ("worker", pa.string()),
]
"""Columns of a replicate record (all its fields but the outputs)."""
KEY_PACKAGES = ("simstudy", "prefect", "prefect-dask", "dask", "distributed", "numpy", "pyarrow")


def study_id(study: Study, sets: list[ParameterSet]) -> str:
    """Return the identity of a study's results: name, model, parameter sets, seed.

    Not the number of replicates: replicate r's seed does not depend on it, so the same
    study with more (or fewer) replicates extends (or reuses part of) earlier results.
    """
    model = study.model if isinstance(study.model, str) else study.model.model_dump()
    identity = {
        "name": study.name,
        "model": model,
        "param_ids": [ps.param_id for ps in sets],
        "seed": study.seed,
    }
    text = json.dumps(identity, sort_keys=True, separators=(",", ":"))
    return hashlib.blake2b(text.encode(), digest_size=16).hexdigest()


def write_json(store: OutputStore, name: str, data: Any) -> None:
    """Write JSON whole."""
    store.write_bytes(name, json.dumps(data, indent=2, default=str).encode())


def write_text(store: OutputStore, name: str, text: str) -> None:
    """Write UTF-8 text whole."""
    store.write_bytes(name, text.encode("utf-8"))


def write_table(store: OutputStore, name: str, table: pa.Table) -> None:
    """Write a Parquet table whole."""
    buffer = pa.BufferOutputStream()
    pq.write_table(table, buffer)
    store.write_bytes(name, buffer.getvalue().to_pybytes())


def read_table(store: OutputStore, name: str, schema: pa.Schema | None = None) -> pa.Table:
    """Read a Parquet table."""
    return pq.read_table(pa.BufferReader(store.read_bytes(name)), schema=schema)


def check_output_dir(store: OutputStore, identity: str, overwrite: bool) -> None:
    """Raise `OutputDirError` unless the output is absent, empty or holds this study's results."""
    if store.is_file_location():
        raise OutputDirError(f"output {store} is a file, not a folder: choose another output")
    # logs/ and the lock file alone do not make a folder someone else's: they are
    # created (by preflight's model processes, by the lock) before study.json.
    if overwrite or store.entries() <= {LOGS_DIR, LOCK_FILE}:
        return
    if not store.exists(STUDY_FILE):
        raise OutputDirError(
            f"output {store} is not empty and holds no simstudy results; "
            "choose another output or pass --overwrite"
        )
    found = read_study_json(store)
    if found.get("study_id") != identity:
        raise OutputDirError(
            f"output {store} holds results of another study ({found.get('name')!r}, "
            f"study_id {found.get('study_id')}); choose another output or pass --overwrite"
        )


def prepare_output_dir(store: OutputStore, identity: str, overwrite: bool) -> None:
    """Check the output, then remove the result files of a previous run.

    `logs/` and `_parts/` are kept: model processes started by preflight already write
    logs, and the parts are what a resumed run reuses.
    """
    check_output_dir(store, identity, overwrite)
    for name in RESULT_FILES:
        store.delete(name)
    store.makedirs()


def read_study_json(store: OutputStore) -> dict[str, Any]:
    """Return the study.json of an output."""
    try:
        data: dict[str, Any] = json.loads(store.read_bytes(STUDY_FILE))
    except (OSError, json.JSONDecodeError) as exc:
        raise OutputDirError(f"cannot read {store.path(STUDY_FILE)}: {exc}") from exc
    return data


def versions() -> dict[str, str]:
    """Return the versions of Python and the key packages."""
    found = {"python": platform.python_version()}
    for name in KEY_PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "not installed"
    return found


def study_document(
    study: Study,
    sets: list[ParameterSet],
    identity: str,
    started_at: datetime,
    **fields: Any,
) -> dict[str, Any]:
    """Return the content of study.json."""
    return {
        "name": study.name,
        "study_id": identity,
        "study": study.model_dump(mode="json"),
        "parameter_sets": [ps.model_dump() for ps in sets],
        "versions": versions(),
        "started_at": started_at.isoformat(),
        **fields,
    }


def now() -> datetime:
    """Return the current UTC time."""
    return datetime.now(UTC)


def replicates_table(records: list[ReplicateRecord]) -> pa.Table:
    """Return one row per replicate: the record fields and one column per scalar output."""
    scalar_names = sorted(
        {name for r in records for name, v in r.outputs.items() if not isinstance(v, list)}
    )
    rows = []
    for r in records:
        row = r.model_dump(exclude={"outputs"})
        for name in scalar_names:
            value = r.outputs.get(name)
            row[name] = None if isinstance(value, list) else value
        rows.append(row)
    schema = pa.schema([*RECORD_COLUMNS, *[(name, pa.float64()) for name in scalar_names]])
    return pa.Table.from_pylist(rows, schema=schema)


def timeseries_table(records: list[ReplicateRecord]) -> pa.Table | None:
    """Return the series outputs in long form (param_id, replicate, output, t, value)."""
    columns: dict[str, list[Any]] = {
        k: [] for k in ("param_id", "replicate", "output", "t", "value")
    }
    for r in records:
        for name, value in sorted(r.outputs.items()):
            if isinstance(value, list):
                n = len(value)
                columns["param_id"].extend([r.param_id] * n)
                columns["replicate"].extend([r.replicate] * n)
                columns["output"].extend([name] * n)
                columns["t"].extend(range(n))
                columns["value"].extend(value)
    if not columns["value"]:
        return None
    return pa.table(columns)


def aggregates_table(aggregates: list[ParameterSetAggregate], series: bool) -> pa.Table | None:
    """Return aggregate rows (scalar or series) with the parameters as columns."""
    rows = []
    for aggregate in aggregates:
        for row in aggregate.series if series else aggregate.scalars:
            rows.append({**aggregate.params, **row})
    return pa.Table.from_pylist(rows) if rows else None


def write_results(
    store: OutputStore, records: list[ReplicateRecord], aggregates: list[ParameterSetAggregate]
) -> None:
    """Write the Parquet result files of a finished study."""
    write_table(store, REPLICATES_FILE, replicates_table(records))
    for name, table in (
        (TIMESERIES_FILE, timeseries_table(records)),
        (AGGREGATES_FILE, aggregates_table(aggregates, series=False)),
        (TIMESERIES_AGGREGATES_FILE, aggregates_table(aggregates, series=True)),
    ):
        if table is not None:
            write_table(store, name, table)
