"""Result files of a study, each written whole (atomically on a local disk).

The replicate files are assembled from the study's part files one part at a time, so
writing them needs the memory of one part, whatever the study's size.

Files in the output folder: `replicates.parquet`, `timeseries.parquet`,
`aggregates.parquet`, `timeseries_aggregates.parquet`, `study.json` and `logs/`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import platform
from collections.abc import Iterator
from datetime import UTC, datetime
from importlib import metadata
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from simstudy.analysis.ranking import loss_column, target_outputs
from simstudy.design.expand import ParameterSet
from simstudy.errors import OutputDirError
from simstudy.output.location import OutputStore
from simstudy.run.columns import (
    OUTPUT_PREFIX,
    records_table,
    replicates_schema,
    replicates_view,
    scalar_outputs,
    timeseries_view,
)
from simstudy.run.records import ReplicateRecord
from simstudy.spec.study import Study
from simstudy.stats.aggregate import ParameterSetAggregate

STUDY_FILE = "study.json"
REPLICATES_FILE = "replicates.parquet"
TIMESERIES_FILE = "timeseries.parquet"
AGGREGATES_FILE = "aggregates.parquet"
TIMESERIES_AGGREGATES_FILE = "timeseries_aggregates.parquet"
TARGETS_FILE = "targets.parquet"
RANKING_FILE = "ranking.parquet"
SENSITIVITY_FILE = "sensitivity.parquet"
REPORT_FILE = "report.html"
PLOTS_DIR = "plots"
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
    TARGETS_FILE,
    RANKING_FILE,
    SENSITIVITY_FILE,
    REPORT_FILE,
    PLOTS_DIR,
)
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


def read_table(
    store: OutputStore,
    name: str,
    schema: pa.Schema | None = None,
    columns: list[str] | None = None,
) -> pa.Table:
    """Read a Parquet table (or some of its columns)."""
    with store.fs.open(store.path(name), "rb") as handle:
        # Threaded reads of a file object made pyarrow 26 abort the interpreter at exit
        # ("terminate called without an active exception") in most runs of `simstudy show`.
        return pq.read_table(handle, schema=schema, columns=columns, use_threads=False)


def read_schema(store: OutputStore, name: str) -> pa.Schema:
    """Read a Parquet file's schema (its footer only)."""
    with store.fs.open(store.path(name), "rb") as handle:
        return pq.read_schema(handle)


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
    table = records_table(records)
    return replicates_view(table, replicates_schema(scalar_outputs(table.schema)))


def timeseries_table(records: list[ReplicateRecord]) -> pa.Table | None:
    """Return the series outputs in long form (param_id, replicate, output, t, value)."""
    return timeseries_view(records_table(records))


def aggregates_table(aggregates: list[ParameterSetAggregate], series: bool) -> pa.Table | None:
    """Return aggregate rows (scalar or series) with the parameters as columns.

    Scalar rows of a study with targets also get the set's `loss`, `loss_se` and
    `loss_<output>` per target output (null where a set has none).
    """
    if series:
        return series_aggregates_table(aggregates)
    targets = target_outputs(aggregates)
    rows = []
    for aggregate in aggregates:
        losses: dict[str, Any] = {}
        if targets:
            losses = {"loss": aggregate.loss, "loss_se": aggregate.loss_se}
            losses.update({loss_column(n): aggregate.target_losses.get(n) for n in targets})
        for row in aggregate.scalars:
            rows.append({**aggregate.params, **row, **losses})
    if not rows:
        return None
    table = pa.Table.from_pylist(rows)
    for index, field in enumerate(table.schema):
        if targets and field.name.startswith("loss") and pa.types.is_null(field.type):
            # loss_se is null for every set of one replicate: still a float column.
            table = table.set_column(index, field.name, table.column(index).cast(pa.float64()))
    return table


def series_aggregates_table(aggregates: list[ParameterSetAggregate]) -> pa.Table | None:
    """Return a row per set, series output and time point: parameters, ids, t, statistics.

    Built column by column: the ids and parameters are one row per set and output, taken
    once per point, so a 1,000,000-point series costs arrays, not a million Python rows.
    """
    heads: list[dict[str, Any]] = []
    pieces: list[dict[str, np.ndarray]] = []
    for aggregate in aggregates:
        n_failed = sum(aggregate.counts.values()) - aggregate.counts.get("ok", 0)
        for output, statistics in aggregate.series.items():
            heads.append(
                {**aggregate.params, "param_id": aggregate.param_id, "output": output,
                 "n_failed": n_failed}
            )  # fmt: skip
            pieces.append(statistics.columns)
    if not heads:
        return None
    lengths = [len(columns["n_ok"]) for columns in pieces]
    table = pa.Table.from_pylist(heads).take(np.repeat(np.arange(len(heads)), lengths))
    table = table.append_column("t", pa.array(np.concatenate([np.arange(n) for n in lengths])))
    for name in pieces[0]:  # every set has the study's statistics columns
        table = table.append_column(name, pa.array(np.concatenate([p[name] for p in pieces])))
    return table


def write_results(
    store: OutputStore, parts: list[str], aggregates: list[ParameterSetAggregate]
) -> None:
    """Write the Parquet result files from the part files (in order), one part at a time.

    Replicates of sets whose outputs were refused are failed and lose their outputs, so no
    file gets columns of outputs the study refused.
    """
    refused = {a.param_id: a.refused_outputs for a in aggregates if a.refused_outputs}
    scalars: set[str] = set()
    for name in parts:  # the files' columns, before any row is written
        # Without refused sets (the usual case) the footer alone is read.
        if not refused or refused.keys().isdisjoint(
            read_table(store, name, columns=["param_id"]).column("param_id").to_pylist()
        ):
            scalars.update(scalar_outputs(read_schema(store, name)))  # the footer is enough
            continue
        table = _refuse(read_table(store, name), refused)
        scalars.update(
            output
            for output in scalar_outputs(table.schema)
            if table.column(OUTPUT_PREFIX + output).null_count < table.num_rows
        )
    schema = replicates_schema(scalars)
    with contextlib.ExitStack() as files:
        replicates = pq.ParquetWriter(
            files.enter_context(store.open_write(REPLICATES_FILE)), schema
        )
        files.callback(replicates.close)
        series: pq.ParquetWriter | None = None
        for name in parts:
            table = _refuse(read_table(store, name), refused)
            replicates.write_table(replicates_view(table, schema))
            for rows in series_slices(table):
                long = timeseries_view(rows)
                if long is None:
                    continue  # no series here (or only failed replicates)
                if series is None:
                    handle = files.enter_context(store.open_write(TIMESERIES_FILE))
                    series = pq.ParquetWriter(handle, long.schema)
                    files.callback(series.close)
                series.write_table(long)
    for file_name, aggregate_table in (
        (AGGREGATES_FILE, aggregates_table(aggregates, series=False)),
        (TIMESERIES_AGGREGATES_FILE, aggregates_table(aggregates, series=True)),
    ):
        if aggregate_table is not None:
            write_table(store, file_name, aggregate_table)


SERIES_POINTS_PER_WRITE = 65_536
"""Time points turned into long rows at once: the long form repeats each replicate's ids on
every point (a 2,500-replicate part of 365-point series was ~450 MB at once, in one piece)."""


def series_slices(table: pa.Table) -> Iterator[pa.Table]:
    """Yield the part's rows in slices of about `SERIES_POINTS_PER_WRITE` series points."""
    points = sum(
        pc.sum(pc.list_value_length(table.column(field.name))).as_py() or 0
        for field in table.schema
        if field.name.startswith(OUTPUT_PREFIX) and pa.types.is_list(field.type)
    )
    per_row = max(1, points // max(1, table.num_rows))
    step = max(1, SERIES_POINTS_PER_WRITE // per_row)
    for start in range(0, max(1, table.num_rows), step):
        yield table.slice(start, step)


def _refuse(table: pa.Table, refused: dict[str, str]) -> pa.Table:
    """Return the rows with the ok replicates of refused sets failed, without outputs."""
    if not refused:
        return table
    ids = table.column("param_id").to_pylist()
    hit = [pid in refused for pid in ids]
    if not any(hit):
        return table
    statuses = table.column("status").to_pylist()
    errors = table.column("error").to_pylist()
    new_status = ["failed" if h and s == "ok" else s for h, s in zip(hit, statuses, strict=True)]
    new_error = [
        refused[pid] if h and s == "ok" else e
        for pid, h, s, e in zip(ids, hit, statuses, errors, strict=True)
    ]
    table = table.set_column(
        table.column_names.index("status"), "status", pa.array(new_status, pa.string())
    )
    table = table.set_column(
        table.column_names.index("error"), "error", pa.array(new_error, pa.string())
    )
    mask = pa.array(hit, pa.bool_())
    for index, name in enumerate(table.column_names):
        if name.startswith(OUTPUT_PREFIX):
            column = table.column(name)
            nulls = pa.nulls(len(column), column.type)
            table = table.set_column(index, name, pc.if_else(mask, nulls, column))
    return table
