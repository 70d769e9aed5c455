"""Expand the study's parameter design into identified parameter sets."""

from __future__ import annotations

import itertools
from typing import Any

import pyarrow as pa
import pyarrow.csv
import pyarrow.parquet as pq
from pydantic import BaseModel, Field

from simstudy.errors import StudyError
from simstudy.identity import ParameterValueError, canonical_params, param_id
from simstudy.spec import ScalarParam, Study, check_parameter_names


class ParameterSet(BaseModel):
    """One full parameter set (fixed + varying) and its identity."""

    param_id: str = Field(description="BLAKE2b-256 hex of the canonical JSON of params.")
    index: int = Field(description="Position in the expanded design (0-based).")
    params: dict[str, ScalarParam] = Field(description="Fixed and varying values, as written.")


def varying_rows(study: Study) -> list[dict[str, Any]]:
    """Return the varying parameters of each parameter set, in design order."""
    design = study.parameters
    if design.grid is not None:
        names = list(design.grid)
        return [
            dict(zip(names, combo, strict=True))
            for combo in itertools.product(*design.grid.values())
        ]
    if design.list is not None:
        return [dict(row) for row in design.list]
    assert design.file is not None
    return read_parameter_file(study, design.file)


def read_parameter_file(study: Study, name: str) -> list[dict[str, Any]]:
    """Read a CSV or Parquet parameter table, one row per parameter set."""
    path = study.resolve(name)
    where = f"parameters.file ({path})"
    try:
        table = pq.read_table(path) if path.suffix == ".parquet" else pyarrow.csv.read_csv(path)
    except (OSError, pa.ArrowInvalid) as exc:
        raise StudyError(where, [f"cannot read the parameter table: {exc}"]) from exc
    if table.num_rows == 0:
        raise StudyError(where, ["the parameter table has no rows"])
    try:
        check_parameter_names(dict.fromkeys(table.column_names), "parameters.file")
    except ValueError as exc:
        raise StudyError(where, [str(exc)]) from exc
    return table.to_pylist()


def expand_parameters(study: Study) -> list[ParameterSet]:
    """Return every parameter set of the study with its `param_id`, in design order."""
    rows = varying_rows(study)
    problems: list[str] = []
    sets: list[ParameterSet] = []
    seen: dict[str, int] = {}
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
            pid = param_id(params)
        except ParameterValueError as exc:
            problems.append(f"{where}: {exc}")
            continue
        if pid in seen:
            problems.append(
                f"{where}: same parameter set as set {seen[pid]} ({canonical_params(params)}); "
                "remove the duplicate or raise replicates"
            )
            continue
        seen[pid] = index
        sets.append(ParameterSet(param_id=pid, index=index, params=params))
    if problems:
        raise StudyError(study.name, problems)
    return sets
