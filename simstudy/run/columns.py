"""Replicate records as Arrow columns, and the result tables built from them.

A batch's records become one table: the record fields as columns, one float64 column per
scalar output and one list<float64> column per series output (named `output:<name>`, so
no output name can collide with a record field). Part files store that table; the result
files `replicates.parquet` and `timeseries.parquet` are views of it, built part by part.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.ipc

from simstudy.run.records import ReplicateRecord, is_series

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
RECORD_SCHEMA = pa.schema(RECORD_COLUMNS)
OUTPUT_PREFIX = "output:"
SERIES_TYPE = pa.list_(pa.float64())
TIMESERIES_SCHEMA = pa.schema(
    [
        ("param_id", pa.string()),
        ("replicate", pa.int64()),
        ("output", pa.string()),
        ("t", pa.int64()),
        ("value", pa.float64()),
    ]
)


def records_table(records: list[ReplicateRecord]) -> pa.Table:
    """Return the records as one table: record fields, then one column per output."""
    columns = _record_columns(records)
    names = sorted({name for r in records for name in r.outputs})
    for name in names:
        values = [r.outputs.get(name) for r in records]
        series = any(is_series(v) for v in values)
        if series:  # a scalar where others have a series is left out, as in the files
            values = [v if is_series(v) else None for v in values]
        columns[OUTPUT_PREFIX + name] = pa.array(values, SERIES_TYPE if series else pa.float64())
    return pa.table(columns)


def _record_columns(records: list[ReplicateRecord]) -> dict[str, Any]:
    return {
        name: pa.array([getattr(r, name) for r in records], type=kind)
        for name, kind in RECORD_COLUMNS
    }


def table_records(table: pa.Table, arrays: bool = False) -> list[ReplicateRecord]:
    """Return the records of a table built by `records_table` (series as arrays if asked)."""
    outputs = [name for name in table.column_names if name.startswith(OUTPUT_PREFIX)]
    rows = table.select([name for name, _ in RECORD_COLUMNS]).to_pylist()
    values = {
        name[len(OUTPUT_PREFIX) :]: _series_arrays(table.column(name))
        if arrays and pa.types.is_list(table.schema.field(name).type)
        else table.column(name).to_pylist()
        for name in outputs
    }
    records = []
    for i, row in enumerate(rows):
        row["outputs"] = {
            name: column[i] for name, column in values.items() if column[i] is not None
        }
        # The columns' types are the record's own (`RECORD_COLUMNS`), so no validation:
        # validating every record was a quarter of the flow's CPU (365-point series).
        records.append(ReplicateRecord.model_construct(**row))
    return records


def records_to_bytes(records: list[ReplicateRecord]) -> bytes:
    """Return the records as one Arrow IPC stream: compact for a message, no object per value."""
    return table_to_bytes(records_table(records))


def records_from_bytes(data: bytes, arrays: bool = False) -> list[ReplicateRecord]:
    """Return the records of an Arrow IPC stream written by `records_to_bytes`."""
    return table_records(table_from_bytes(data), arrays)


def table_to_bytes(table: pa.Table) -> bytes:
    """Return a table as one Arrow IPC stream."""
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return bytes(sink.getvalue().to_pybytes())


def table_from_bytes(data: bytes) -> pa.Table:
    """Return the table of an Arrow IPC stream written by `table_to_bytes`."""
    return pa.ipc.open_stream(pa.py_buffer(data)).read_all()


def outputs_table(records: list[ReplicateRecord]) -> pa.Table:
    """Return the records' output columns only (one row per record, in order)."""
    table = records_table(records)
    return table.drop_columns([name for name, _ in RECORD_COLUMNS])


def with_outputs(records: list[ReplicateRecord], outputs: pa.Table) -> pa.Table:
    """Return the records' table (their own fields) with the given output columns."""
    columns = _record_columns(records)
    columns.update((name, outputs.column(name)) for name in outputs.column_names)
    return pa.table(columns)


def concat_record_tables(tables: list[pa.Table]) -> pa.Table:
    """Concatenate records tables whose outputs may differ, as `records_table` would.

    An output missing from a table is null there; a scalar where another table has a
    series is left out (null), as in the result files.
    """
    kinds: dict[str, pa.DataType] = {}
    for table in tables:
        for field in table.schema:
            if field.name.startswith(OUTPUT_PREFIX) and kinds.get(field.name) != SERIES_TYPE:
                kinds[field.name] = SERIES_TYPE if pa.types.is_list(field.type) else pa.float64()
    schema = pa.schema([*RECORD_COLUMNS, *sorted(kinds.items())])
    aligned = []
    for table in tables:
        columns = [
            table.column(name)
            if name in table.column_names and table.schema.field(name).type == kind
            else pa.nulls(table.num_rows, kind)
            for name, kind in zip(schema.names, schema.types, strict=True)
        ]
        aligned.append(pa.Table.from_arrays(columns, schema=schema))
    return pa.concat_tables(aligned)


def _series_arrays(column: pa.ChunkedArray) -> list[np.ndarray | None]:
    """Return a list column's rows as float64 arrays (None for a null row)."""
    series = column.combine_chunks()
    offsets = series.offsets.to_numpy()
    flat = series.values.to_numpy(zero_copy_only=False)
    valid = series.is_valid().to_numpy(zero_copy_only=False)
    # Views of one buffer, not a copy each: one allocation per event instead of one per
    # replicate; the buffer goes when the last of its records does.
    return [flat[offsets[i] : offsets[i + 1]] if valid[i] else None for i in range(len(series))]


def scalar_outputs(schema: pa.Schema) -> list[str]:
    """Return the scalar output names of a records table's schema."""
    return [
        field.name[len(OUTPUT_PREFIX) :]
        for field in schema
        if field.name.startswith(OUTPUT_PREFIX) and not pa.types.is_list(field.type)
    ]


def replicates_schema(scalar_names: Iterable[str]) -> pa.Schema:
    """Return the schema of replicates.parquet: record columns, then the scalar outputs."""
    return pa.schema([*RECORD_COLUMNS, *[(name, pa.float64()) for name in sorted(scalar_names)]])


def replicates_view(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """Return one row per replicate: the record columns and every scalar output of `schema`."""
    columns = [table.column(name) for name, _ in RECORD_COLUMNS]
    for field in schema.names[len(RECORD_COLUMNS) :]:
        column = OUTPUT_PREFIX + field
        found = column in table.column_names and not pa.types.is_list(
            table.schema.field(column).type
        )
        columns.append(table.column(column) if found else pa.nulls(table.num_rows, pa.float64()))
    return pa.Table.from_arrays(columns, schema=schema)


def timeseries_view(table: pa.Table) -> pa.Table | None:
    """Return the series outputs in long form (param_id, replicate, output, t, value).

    Rows come replicate by replicate, outputs by name, then time points in order.
    """
    pieces = []
    names = [
        field.name
        for field in table.schema
        if field.name.startswith(OUTPUT_PREFIX) and pa.types.is_list(field.type)
    ]
    for column in sorted(names):
        series = table.column(column).combine_chunks()
        rows = pc.list_parent_indices(series)
        if len(rows) == 0:
            continue
        lengths = pc.fill_null(pc.list_value_length(series), 0).to_numpy()
        starts = np.repeat(np.cumsum(lengths) - lengths, lengths)
        pieces.append(
            pa.table(
                {
                    "row": rows,
                    "param_id": table.column("param_id").take(rows),
                    "replicate": table.column("replicate").take(rows),
                    "output": pa.array([column[len(OUTPUT_PREFIX) :]] * len(rows), pa.string()),
                    "t": pa.array(np.arange(len(rows)) - starts, pa.int64()),
                    "value": pc.list_flatten(series),
                }
            )
        )
    if not pieces:
        return None
    # Sorting by row alone keeps the outputs' order (concatenated by name) and the time
    # points' order: Arrow's sort is stable.
    long = pa.concat_tables(pieces).sort_by([("row", "ascending")]).drop_columns(["row"])
    return long.cast(TIMESERIES_SCHEMA)
