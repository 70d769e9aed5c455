"""Expand the study's parameter design into identified parameter sets.

```python
>>> from simstudy.design.expand import expand_parameters
>>> from simstudy.spec.loading import load_study
>>> [ps.params["beta"] for ps in expand_parameters(load_study("examples/seir.yaml"))][:2]
[0.2, 0.2]
```

The size of a design (grid product, list length, rows of a parameter file, rows of a
sampled design) is counted and checked against the study's limits (`Study.size_problems`)
before any set is built.

A sampled design (`parameters.sample`) may repeat a parameter set (integer or categorical
parameters; saltelli's and morris's cross rows): each distinct set runs once, and
`design_row_ids` maps every design row to the id of its set, from the study file alone.
"""

from __future__ import annotations

import itertools
import math
import re
import stat
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv
import pyarrow.parquet as pq
from pydantic import BaseModel, Field

from simstudy.design.identity import ParameterValueError, canonical_params, param_id
from simstudy.errors import StudyError
from simstudy.spec.sample import QMC_METHODS
from simstudy.spec.study import (
    MAX_PARAMETER_FILE_BYTES,
    MAX_PARAMETER_SETS,
    ScalarParam,
    Study,
    check_parameter_names,
)
from simstudy.spec.text import check_column_text, text_columns

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
"""Integer parameters must fit a signed 64-bit integer, as in the result files."""
INTEGER_TEXT = r"^[+-]?[0-9]+$"
NUMBER_TEXT = r"^[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?$|^[+-]?(?:inf|nan)$"
BOOLEAN_TEXT = r"^(?:true|false)$"


class ParameterSet(BaseModel):
    """One full parameter set (fixed + varying) and its identity."""

    param_id: str = Field(description="BLAKE2b-256 hex of the canonical JSON of params.")
    index: int = Field(description="Position in the expanded design (0-based).")
    params: dict[str, ScalarParam] = Field(description="Fixed and varying values, as written.")


def check_design_size(study: Study, n_sets: int, varying_names: int) -> None:
    """Raise `StudyError` naming the field when `n_sets` sets are too many for the study."""
    problems = study.size_problems(n_sets, varying_names + len(study.fixed))
    if problems:
        raise StudyError(study.name, problems)


def varying_rows(study: Study) -> list[dict[str, Any]]:
    """Return the varying parameters of each parameter set, in design order."""
    design = study.parameters
    if design.grid is not None:
        names = list(design.grid)
        check_design_size(study, math.prod(len(v) for v in design.grid.values()), len(names))
        return [
            dict(zip(names, combo, strict=True))
            for combo in itertools.product(*design.grid.values())
        ]
    if design.list is not None:
        check_design_size(study, len(design.list), max(len(row) for row in design.list))
        return [dict(row) for row in design.list]
    if design.sample is not None:
        check_design_size(study, design.sample.size(), len(design.sample.bounds))
        from simstudy.design.sampling import sample_rows  # scipy only for a sampled design

        return sample_rows(design.sample, sample_seed(study))
    assert design.file is not None
    table = read_parameter_table(study.resolve(design.file))
    check_design_size(study, table.num_rows, table.num_columns)
    columns = [table.column(i).to_pylist() for i in range(table.num_columns)]
    names = table.column_names
    return [dict(zip(names, values, strict=True)) for values in zip(*columns, strict=True)]


def sample_seed(study: Study) -> int:
    """Return the seed of the study's sampled design: its own, or the study's."""
    sample = study.parameters.sample
    return study.seed if sample is None or sample.seed is None else sample.seed


def design_row_ids(study: Study) -> list[str]:
    """Return the param_id of every design row, in design order (repeated sets repeat)."""
    return [param_id({**study.fixed, **row}) for row in varying_rows(study)]


def sampled_design(study: Study) -> tuple[np.ndarray, list[str]]:
    """Return a sampled design's unit-space rows and each row's param_id, in design order."""
    sample = study.parameters.sample
    if sample is None:
        raise StudyError(study.name, ["parameters: the design is not sampled (no sample)"])
    check_design_size(study, sample.size(), len(sample.bounds))
    from simstudy.design.sampling import scaled_columns, unit_sample

    unit = unit_sample(sample, sample_seed(study))
    columns = scaled_columns(sample, unit)
    names = list(columns)
    ids = [
        param_id({**study.fixed, **dict(zip(names, values, strict=True))})
        for values in zip(*columns.values(), strict=True)
    ]
    return unit, ids


def read_parameter_table(path: Path) -> pa.Table:
    """Return a parameter table with one type per column, or raise naming the column."""
    where = f"parameters.file ({path})"
    try:
        info = path.stat()
    except OSError as exc:
        raise StudyError(where, [f"cannot read the parameter table: {exc.strerror}"]) from exc
    if not stat.S_ISREG(info.st_mode):
        raise StudyError(where, ["not a regular file: give a CSV or Parquet file"])
    size = info.st_size
    if size > MAX_PARAMETER_FILE_BYTES:
        raise StudyError(
            where, [f"the file has {size:,} bytes, more than the maximum of "
                    f"{MAX_PARAMETER_FILE_BYTES:,}"]
        )  # fmt: skip
    try:
        table = _read_parquet(path) if path.suffix == ".parquet" else _read_csv(path)
    except (OSError, pa.ArrowException) as exc:
        raise StudyError(where, [f"cannot read the parameter table: {exc}"]) from exc
    except ValueError as exc:
        raise StudyError(where, [str(exc)]) from exc
    if table.num_rows == 0:
        raise StudyError(where, ["the parameter table has no rows"])
    return table


def _check_names(names: list[str]) -> None:
    duplicated = sorted({name for name in names if names.count(name) > 1})
    if duplicated:
        raise ValueError(
            f"column {duplicated[0]!r} appears more than once; give every column its own name"
        )
    check_parameter_names(dict.fromkeys(names), "parameters.file")


def _check_rows(rows: int) -> None:
    if rows > MAX_PARAMETER_SETS:
        raise ValueError(
            f"the table has more than {MAX_PARAMETER_SETS:,} rows, the maximum number of "
            "parameter sets; split the study"
        )


def _read_parquet(path: Path) -> pa.Table:
    # Text columns are read as dictionaries and checked before they are decoded: a 5 kB
    # file of one 100 kB text repeated 2,000 times decoded to 500 MB.
    parquet = pq.ParquetFile(path, read_dictionary=text_columns(pq.read_schema(path)))
    schema = parquet.schema_arrow
    _check_names(schema.names)
    _check_rows(parquet.metadata.num_rows)  # from the footer: nothing read yet
    for field in schema:
        kind = field.type
        if not (
            pa.types.is_integer(kind)
            or pa.types.is_floating(kind)
            or pa.types.is_boolean(kind)
            or pa.types.is_string(kind)
            or pa.types.is_large_string(kind)
            or pa.types.is_null(kind)
            or (pa.types.is_dictionary(kind) and pa.types.is_string(kind.value_type))
        ):
            raise ValueError(
                f"column {field.name!r} has type {kind}; parameters are numbers, strings "
                "or booleans"
            )
    table = parquet.read()
    for index, name in enumerate(table.column_names):
        column = table.column(name)
        check_column_text(name, column)
        if pa.types.is_dictionary(column.type):  # a text, or a pandas category column
            table = table.set_column(index, name, column.cast(column.type.value_type))
        if pa.types.is_unsigned_integer(column.type) and (pc.max(column).as_py() or 0) > INT64_MAX:
            raise ValueError(f"column {name!r} holds an integer beyond 64 bits")
    return table


def _read_csv(path: Path) -> pa.Table:
    # Every column is read as text and typed here, so a column cannot silently become
    # text because of one cell ('1,x,5') nor a float because of one huge integer.
    with pyarrow.csv.open_csv(path) as reader:
        names = reader.schema.names
    _check_names(names)
    placeholders = [f"c{i}" for i in range(len(names))]
    read = pyarrow.csv.ReadOptions(column_names=placeholders, skip_rows=1)
    convert = pyarrow.csv.ConvertOptions(
        column_types=dict.fromkeys(placeholders, pa.string()), strings_can_be_null=True
    )
    batches, rows = [], 0
    with pyarrow.csv.open_csv(path, read_options=read, convert_options=convert) as reader:
        for batch in reader:
            rows += batch.num_rows
            _check_rows(rows)  # stops reading a file far too long for a design
            batches.append(batch)
    text = pa.Table.from_batches(batches, schema=reader.schema)
    for i, name in enumerate(names):
        check_column_text(name, text.column(i))
    columns = [typed_column(name, text.column(i)) for i, name in enumerate(names)]
    return pa.Table.from_arrays(columns, names=names)


def typed_column(name: str, column: pa.ChunkedArray) -> pa.ChunkedArray:
    """Return a text column as integers, floats, booleans or text: one type, or raise."""
    values = column.drop_null()
    if len(values) == 0:
        return column
    lowered = pc.utf8_lower(pc.utf8_trim_whitespace(values))
    if pc.all(pc.match_substring_regex(lowered, BOOLEAN_TEXT)).as_py():
        return pc.equal(pc.utf8_lower(pc.utf8_trim_whitespace(column)), "true")
    trimmed = pc.utf8_trim_whitespace(column)
    if pc.all(pc.match_substring_regex(lowered, INTEGER_TEXT)).as_py():
        try:
            return pc.cast(trimmed, pa.int64())
        except pa.ArrowInvalid:
            big = next(v for v in values.to_pylist() if not abs(int(v)) <= INT64_MAX)
            raise ValueError(
                f"column {name!r} holds {big.strip()}, an integer beyond 64 bits; write it "
                "as a float (e.g. 1e23) or give the column text"
            ) from None
    is_number = pc.match_substring_regex(lowered, NUMBER_TEXT)
    if pc.all(is_number).as_py():
        return pc.cast(trimmed, pa.float64())
    if pc.any(is_number).as_py():
        texts = column.to_pylist()
        number = next(i for i, v in enumerate(texts) if v is not None and _is_number(v))
        word = next(i for i, v in enumerate(texts) if v is not None and not _is_number(v))
        raise ValueError(
            f"column {name!r} mixes numbers and text (set {number}: {texts[number]!r}, "
            f"set {word}: {texts[word]!r}); give the column one type"
        )
    return column


def _is_number(text: str) -> bool:
    return re.match(NUMBER_TEXT, text.strip().lower()) is not None


def expand_parameters(study: Study) -> list[ParameterSet]:
    """Return every parameter set of the study with its `param_id`, in design order.

    A sampled design's repeated rows give one set, at its first row; `index` then counts
    distinct sets.
    """
    if study.calibrate is not None:
        raise StudyError(
            study.name,
            [
                "parameters: a calibration's parameter sets come from its trials (asked "
                "round by round within parameters.sample's bounds), not from a design "
                "expanded up front; run it as a calibration"
            ],
        )
    rows = varying_rows(study)
    sampled = study.parameters.sample
    problems: list[str] = []
    sets: list[ParameterSet] = []
    seen: dict[str, int] = {}
    repeated = 0
    expected = set(rows[0])
    for index, row in enumerate(rows):
        where = f"parameters (set {index})"
        overlap = sorted(set(row) & set(study.fixed))
        if overlap:
            problems.append(f"{where}: {overlap} also in fixed; a parameter is fixed or varying")
        if set(row) != expected:
            problems.append(
                f"{where}: has parameters {sorted(row)}, set 0 has {sorted(expected)}; "
                "every set needs the same names"
            )
        missing = sorted(name for name, value in row.items() if value is None)
        if missing:
            problems.append(f"{where}: no value for {missing}")
            continue
        params = {**study.fixed, **row}
        try:
            check_integers(params)
            pid = param_id(params)
        except ParameterValueError as exc:
            problems.append(f"{where}: {exc}")
            continue
        if pid in seen and sampled is not None:
            repeated += 1
            continue
        if pid in seen:
            problems.append(
                f"{where}: same parameter set as set {seen[pid]} ({canonical_params(params)}); "
                "remove the duplicate or raise replicates"
            )
            continue
        seen[pid] = index
        sets.append(ParameterSet(param_id=pid, index=len(sets), params=params))
    if problems:
        raise StudyError(study.name, problems)
    if repeated and sampled is not None and sampled.method in QMC_METHODS:
        warnings.warn(
            f"parameters.sample: {repeated:,} of {len(rows):,} sampled rows repeat an earlier "
            f"parameter set (integer or categorical parameters have few values); each set runs "
            f"once, so the study has {len(sets):,} sets: lower n or widen the bounds",
            UserWarning,
            stacklevel=2,
        )
    return sets


def check_integers(params: dict[str, Any]) -> None:
    """Raise `ParameterValueError` naming a parameter whose integer exceeds 64 bits."""
    for name, value in params.items():
        # Result files hold parameters as 64-bit integers: a larger one would fail the
        # study only when they are written, after every replicate has run.
        if type(value) is int and not INT64_MIN <= value <= INT64_MAX:
            raise ParameterValueError(
                f"parameter {name!r} is {value}, beyond a 64-bit integer; "
                f"write it as a float ({float(value):.6g}) or a string"
            )
