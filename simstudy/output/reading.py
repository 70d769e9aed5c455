"""Result files read back, each checked against what its readers use.

An output folder's files can be edited, truncated or replaced by hand, by another tool or
by a full disk. `simstudy show` and `simstudy report` read them; a file that is not what
simstudy wrote is an `OutputDirError` naming the file and the field or column, never a
traceback (a `study.json` holding a list, a ranking without `loss_se`, a Parquet file of
garbage).

```python
>>> study = read_finished_study(OutputStore("results/seir-demo"))
>>> table = read_result_table(OutputStore("results/seir-demo"), AGGREGATES_FILE)
```
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Literal

import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from simstudy.errors import OutputDirError, validation_problems
from simstudy.output.location import OutputStore
from simstudy.output.results import (
    AGGREGATES_FILE,
    RANKING_FILE,
    REPLICATES_FILE,
    SENSITIVITY_FILE,
    STUDY_FILE,
    TARGETS_FILE,
    TIMESERIES_AGGREGATES_FILE,
    read_schema,
    read_table,
)

Kind = Literal["text", "integer", "number"]

RESULT_COLUMNS: dict[str, dict[str, Kind]] = {
    AGGREGATES_FILE: {"param_id": "text", "output": "text", "n_ok": "integer", "mean": "number"},
    RANKING_FILE: {"param_id": "text", "rank": "integer", "loss": "number", "loss_se": "number"},
    REPLICATES_FILE: {"param_id": "text", "replicate": "integer", "status": "text"},
    TIMESERIES_AGGREGATES_FILE: {"param_id": "text", "output": "text", "t": "integer"},
    TARGETS_FILE: {"output": "text", "t": "integer", "value": "number"},
    SENSITIVITY_FILE: {"output": "text", "method": "text"},
}
"""The columns each result file's readers use, and their kinds (more columns may follow)."""


class ParameterSetEntry(BaseModel):
    """A parameter set as study.json lists it."""

    param_id: str = Field(description="Parameter set identity.")
    index: int = Field(default=0, description="Position in the design.")
    params: dict[str, bool | int | float | str | None] = Field(
        default_factory=dict, description="The set's parameters."
    )


class StudyDocument(BaseModel):
    """What the readers of study.json use; the rest of the document is free."""

    model_config = ConfigDict(extra="allow")

    name: str = Field(description="The study's name.")
    status: str | None = Field(default=None, description="running, ok or failed.")
    study: dict[str, Any] = Field(default_factory=dict, description="The study as run.")
    parameter_sets: list[ParameterSetEntry] = Field(description="Every set of the design.")
    failed_parameter_sets: dict[str, list[str]] = Field(
        default_factory=dict, description="param_id -> why it failed."
    )
    replicate_counts: dict[str, int] = Field(
        default_factory=dict, description="Replicates by status."
    )


def read_document(
    store: OutputStore, name: str, model: type[BaseModel], what: str
) -> dict[str, Any]:
    """Return a JSON document of an output folder, checked to hold what `model` describes
    (what its readers use); else raise `OutputDirError` naming the file and the field."""
    try:
        document: dict[str, Any] = json.loads(store.read_bytes(name))
        model.model_validate(document)
    except ValidationError as exc:
        detail = validation_problems(exc)[0]
    except (OSError, ValueError) as exc:  # unreadable, or not JSON
        detail = str(exc)
    else:
        return document
    raise OutputDirError(
        f"{store.path(name)} is not a simstudy {name} ({detail}): give the output folder of a "
        f"finished {what}, or run it again"
    )


UNFINISHED = ("running", "incomplete")
"""Statuses of a study.json whose result files are not all written."""


def read_finished_study(store: OutputStore) -> dict[str, Any]:
    """Return a finished study's study.json; raise `OutputDirError` saying why it is not one."""
    document = read_document(store, STUDY_FILE, StudyDocument, "study")
    status = document.get("status")
    if status is None or status in UNFINISHED:
        stopped = f": {document['error']}" if document.get("error") else ""
        raise OutputDirError(
            f"the study in {store} has not finished (status {status!r} in {STUDY_FILE}"
            f"{stopped}); wait for it to end, or run it again to resume"
        )
    return document


def checked_schema(
    store: OutputStore, name: str, columns: Mapping[str, Kind] | None = None
) -> pa.Schema:
    """Return a result file's schema (its footer), checked as `check_schema` does."""
    try:
        schema = read_schema(store, name)
    except (OSError, pa.ArrowException) as exc:
        raise OutputDirError(f"cannot read {store.path(name)}: {exc}; {_REBUILD}") from exc
    return check_schema(store, name, schema, columns)


def check_schema(
    store: OutputStore, name: str, schema: pa.Schema, columns: Mapping[str, Kind] | None = None
) -> pa.Schema:
    """Return a result file's schema if it has the columns its readers use (`columns`, by
    default those of RESULT_COLUMNS), of their kinds; else raise naming the file."""
    wanted = RESULT_COLUMNS.get(name, {}) if columns is None else columns
    problems = []
    for column, kind in wanted.items():
        if column not in schema.names:
            problems.append(f"no column {column!r}")
        elif not _of_kind(schema.field(column).type, kind):
            problems.append(f"column {column!r} is {schema.field(column).type}, not {kind}")
    if problems:
        raise OutputDirError(
            f"{store.path(name)} is not the file simstudy writes ({'; '.join(problems)}); "
            f"{_REBUILD}"
        )
    return schema


def read_result_table(
    store: OutputStore, name: str, columns: Mapping[str, Kind] | None = None
) -> pa.Table:
    """Return a result file whole, checked as `checked_schema` does."""
    checked_schema(store, name, columns)
    try:
        return read_table(store, name)
    except (OSError, pa.ArrowException) as exc:
        raise OutputDirError(f"cannot read {store.path(name)}: {exc}; {_REBUILD}") from exc


_REBUILD = "run the study again to rebuild its files (finished replicates are reused)"


def _of_kind(kind: pa.DataType, wanted: Kind) -> bool:
    if pa.types.is_dictionary(kind):
        kind = kind.value_type
    if pa.types.is_null(kind):  # every value missing: any kind
        return True
    if wanted == "text":
        return bool(pa.types.is_string(kind) or pa.types.is_large_string(kind))
    if wanted == "integer":
        return bool(pa.types.is_integer(kind))
    return bool(pa.types.is_integer(kind) or pa.types.is_floating(kind))
