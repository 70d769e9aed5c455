"""Targets: what was observed, read and checked before anything runs.

```python
>>> from simstudy.analysis.targets import TargetsSpec
>>> TargetsSpec.model_validate({"data": "observed.csv", "loss": "poisson"}).loss
'poisson'
```

`TargetsSpec` is the study file's `targets` field (pydantic only, so the study spec stays
light to import); `load_targets` reads its data file into `Targets`, a small picklable
object the flow loads once and hands to every aggregation.
"""

from __future__ import annotations

import math
import re
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from pydantic import BaseModel, ConfigDict, Field, field_validator

from simstudy.errors import StudyError
from simstudy.run.records import MAX_SERIES_LENGTH
from simstudy.spec.text import check_column_text, text_columns

if TYPE_CHECKING:
    import numpy as np
    import pyarrow as pa

BUILTIN_LOSSES = (
    "mse_of_mean",
    "mean_of_mse",
    "gaussian_nll",
    "poisson",
    "negative_binomial",
    "binomial",
)
"""Loss names known to simstudy (docs/guides/targets.md gives each formula)."""
COUNT_LOSSES = frozenset({"poisson", "negative_binomial", "binomial"})
"""Likelihoods of counts: their observed values must be non-negative integers."""
SPREAD_LOSSES = frozenset({"gaussian_nll", "negative_binomial"})
"""Losses that need the replicates' spread, so at least 2 replicates."""
LOSS_REF_PATTERN = r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$"
"""A user loss as 'module:function' (the form of a Python model)."""
COLUMNS = ("output", "value", "t", "weight", "denominator")
"""Columns a targets file may hold; output and value are required."""
MAX_TARGETS_FILE_BYTES = 100 * 1024 * 1024
"""Largest targets file (CSV or Parquet)."""
MAX_TARGET_ROWS = 1_000_000
"""Most observed values: every aggregation holds all of them."""
DEFAULT_BOOTSTRAP = 200
"""Bootstrap resamples of a set's replicates for the loss's standard error."""
MAX_BOOTSTRAP = 10_000


class TargetsSpec(BaseModel):
    """Observed data to compare every parameter set with, and the loss that compares."""

    model_config = ConfigDict(extra="forbid")

    data: str = Field(
        description="CSV or Parquet file of observed values, relative to the study file: "
        "columns output, value, and optionally t (time point of a series output), weight "
        "(default 1) and denominator (binomial trials).",
    )
    loss: str | dict[str, str] = Field(
        default="mse_of_mean",
        description=f"Loss of every target output: one of {', '.join(BUILTIN_LOSSES)}, or "
        "'module:function' (a function (summary, observed) -> float); or a mapping output "
        "-> loss, one per output of the data.",
    )
    dispersion: float | None = Field(
        default=None,
        gt=0,
        allow_inf_nan=False,
        description="negative_binomial's size k (variance = mean + mean^2 / k). Default: "
        "estimated per output from the replicates' mean and variance.",
    )
    bootstrap: int = Field(
        default=DEFAULT_BOOTSTRAP,
        ge=0,
        le=MAX_BOOTSTRAP,
        description="Resamples of a set's replicates for loss_se (0: no loss_se).",
    )

    @field_validator("loss")
    @classmethod
    def _known_losses(cls, value: str | dict[str, str]) -> str | dict[str, str]:
        names = value.values() if isinstance(value, dict) else [value]
        if isinstance(value, dict) and not value:
            raise ValueError("the mapping of outputs to losses is empty: give one loss per output")
        for name in names:
            if name not in BUILTIN_LOSSES and not re.fullmatch(LOSS_REF_PATTERN, name):
                raise ValueError(
                    f"loss {name!r} is unknown; use one of {', '.join(BUILTIN_LOSSES)}, or "
                    "'module:function' for a loss of your own"
                )
        return value

    def loss_of(self, output: str) -> str | None:
        """Return the loss name of a target output (None: the mapping gives none)."""
        return self.loss.get(output) if isinstance(self.loss, dict) else self.loss


@dataclass(frozen=True)
class OutputTarget:
    """The observed values of one output, in the order of the data file."""

    output: str
    loss: str
    t: np.ndarray | None
    """Time points (int64) of a series target; None for a scalar target."""
    value: np.ndarray
    weight: np.ndarray
    denominator: np.ndarray | None
    """Trials per value (binomial), or None where the file has no denominator column."""

    @property
    def points(self) -> np.ndarray:
        """Return the columns of the output's statistics the targets sit at (t, or 0)."""
        import numpy as np

        return self.t if self.t is not None else np.zeros(1, dtype=np.int64)


@dataclass(frozen=True)
class Targets:
    """Observed data of a study and how to compare with it: loaded once, sent to aggregations."""

    outputs: tuple[OutputTarget, ...]
    dispersion: float | None
    bootstrap: int
    seed: int
    """The study seed: bootstrap resamples derive from it and the set's param_id."""
    source: str
    """The data file, for messages."""

    @property
    def names(self) -> list[str]:
        """Return the target outputs in the order of the data file."""
        return [target.output for target in self.outputs]

    def describe(self) -> str:
        """Return one line per target output: values, time points, loss (for `validate`)."""
        lines = [f"targets: {self.source}"]
        for target in self.outputs:
            where = (
                f"t {int(target.t.min())}-{int(target.t.max())}"
                if target.t is not None
                else "scalar"
            )
            lines.append(
                f"  {target.output}: {len(target.value)} values ({where}), loss {target.loss}"
            )
        return "\n".join(lines)


class TargetedStudy(Protocol):
    """What `load_targets` reads of a study (a `simstudy.spec.study.Study`).

    A protocol, not the class: the study spec builds on this module (`TargetsSpec`), and
    this module must not import it back.
    """

    targets: TargetsSpec | None
    calibrate: Any
    replicates: int
    seed: int

    def resolve(self, path: str) -> Path:
        """Return a path of the study file's folder."""
        ...


def load_targets(study: TargetedStudy) -> Targets | None:
    """Return the study's targets read and checked, None without targets; or raise StudyError."""
    spec = study.targets
    if spec is None:
        return None
    path = study.resolve(spec.data)
    where = f"targets.data ({path})"
    rows = _read_rows(path, where)
    outputs = _output_targets(rows, spec, where)
    problems = []
    # A calibration's first runs of a trial have its smallest number of replicates.
    fewest = study.calibrate.min_replicates if study.calibrate else study.replicates
    field = "calibrate.replicates.min" if study.calibrate else "replicates"
    for target in outputs:
        if target.loss in SPREAD_LOSSES and fewest < 2 and spec.dispersion is None:
            problems.append(
                f"targets.loss: {target.loss} (output {target.output!r}) needs the spread of "
                f"at least 2 replicates, the study has {fewest}; raise {field}"
                + (" or give targets.dispersion" if target.loss == "negative_binomial" else "")
            )
    if problems:
        raise StudyError(where, problems)
    return Targets(tuple(outputs), spec.dispersion, spec.bootstrap, study.seed, str(path))


def observed_table(targets: Targets) -> pa.Table:
    """Return the observed data normalised (targets.parquet): output, t, value, weight, ..."""
    import numpy as np
    import pyarrow as pa

    def column(target: OutputTarget, name: str) -> np.ndarray:
        n = len(target.value)
        found = getattr(target, name)
        return found if found is not None else np.full(n, np.nan)

    outputs = [np.full(len(t.value), t.output, dtype=object) for t in targets.outputs]
    times = [column(t, "t") for t in targets.outputs]
    t_all = np.concatenate(times) if times else np.array([])
    return pa.table(
        {
            "output": pa.array(np.concatenate(outputs) if outputs else [], pa.string()),
            "t": pa.array(
                [None if math.isnan(v) else int(v) for v in t_all.astype(float)], pa.int64()
            ),
            "value": pa.array(np.concatenate([t.value for t in targets.outputs]), pa.float64()),
            "weight": pa.array(np.concatenate([t.weight for t in targets.outputs]), pa.float64()),
            "denominator": pa.array(
                np.concatenate([column(t, "denominator") for t in targets.outputs]),
                pa.float64(),
                from_pandas=True,  # NaN -> null: no denominator given
            ),
        }
    )


def _read_rows(path: Path, where: str) -> dict[str, list[Any]]:
    import pyarrow as pa
    import pyarrow.csv
    import pyarrow.parquet as pq

    try:
        info = path.stat()
    except OSError as exc:
        raise StudyError(
            where, [f"cannot read the targets file: {exc.strerror}; check targets.data"]
        ) from exc
    if not stat.S_ISREG(info.st_mode):
        raise StudyError(where, ["not a regular file: give a CSV or Parquet file"])
    if info.st_size > MAX_TARGETS_FILE_BYTES:
        raise StudyError(
            where,
            [f"the file has {info.st_size:,} bytes, more than the maximum of "
             f"{MAX_TARGETS_FILE_BYTES:,}"],
        )  # fmt: skip
    try:
        if path.suffix == ".parquet":
            # Columns and rows from the footer, texts as dictionaries checked before they
            # are decoded: a 2 MB file of 300 M constant rows took 3.97 GB before its rows
            # were counted.
            parquet = pq.ParquetFile(path, read_dictionary=text_columns(pq.read_schema(path)))
            _check_columns(parquet.schema_arrow.names, parquet.metadata.num_rows, where)
            table = parquet.read()
        else:
            # Text first: every cell is checked here, so a bad cell is named by its row. Only
            # an empty cell is missing: an output may be called NA, null or NaN.
            with pyarrow.csv.open_csv(path) as reader:
                names = reader.schema.names
            table = pyarrow.csv.read_csv(
                path,
                convert_options=pyarrow.csv.ConvertOptions(
                    column_types=dict.fromkeys(names, pa.string()),
                    strings_can_be_null=True,
                    null_values=[""],
                ),
            )
            _check_columns(table.column_names, table.num_rows, where)
        for name in table.column_names:
            check_column_text(name, table.column(name))
    except StudyError:
        raise
    except (OSError, pa.ArrowException) as exc:
        raise StudyError(where, [f"cannot read the targets file: {exc}"]) from exc
    except ValueError as exc:  # a text too long
        raise StudyError(where, [str(exc)]) from exc
    return {name: table.column(name).to_pylist() for name in table.column_names}


def _check_columns(names: list[str], rows: int, where: str) -> None:
    """Raise naming what is wrong with a targets table's columns or its number of rows."""
    duplicated = sorted({name for name in names if names.count(name) > 1})
    unknown = [name for name in names if name not in COLUMNS]
    missing = [name for name in ("output", "value") if name not in names]
    problems = [f"column {name!r} appears more than once; keep one" for name in duplicated]
    if unknown:
        problems.append(
            f"unknown column(s) {', '.join(map(repr, unknown))}; the columns are "
            f"{', '.join(COLUMNS)} (output and value required)"
        )
    if missing:
        problems.append(f"missing column(s) {', '.join(map(repr, missing))}; add them")
    if not problems and rows == 0:
        problems.append("the file has no rows; give at least one observed value")
    if not problems and rows > MAX_TARGET_ROWS:
        problems.append(f"more than {MAX_TARGET_ROWS:,} rows; keep fewer observed values")
    if problems:
        raise StudyError(where, problems)


def _row_name(row: int) -> str:
    return f"row {row + 1}"


def _empty(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def _number(value: Any, column: str, row: int, problems: list[str]) -> float | None:
    """Return a cell as a float, None when empty; note a problem when it is not a number."""
    if _empty(value):
        return None
    # float() would take True (a Parquet boolean) as 1 and "1_000" as 1000.
    if isinstance(value, bool) or (isinstance(value, str) and "_" in value):
        problems.append(f"column {column!r}, {_row_name(row)}: {value!r} is not a number")
        return None
    try:
        number = float(value)
    except (TypeError, ValueError, OverflowError):
        problems.append(f"column {column!r}, {_row_name(row)}: {value!r} is not a number")
        return None
    if not math.isfinite(number):
        problems.append(f"column {column!r}, {_row_name(row)}: {value!r} is not finite")
        return None
    return number


def _output_targets(
    rows: dict[str, list[Any]], spec: TargetsSpec, where: str
) -> list[OutputTarget]:
    problems: list[str] = []
    n = len(rows["output"])
    by_output: dict[str, list[int]] = {}
    parsed: dict[str, list[float | None]] = {name: [None] * n for name in COLUMNS[1:]}
    bad_rows: set[int] = set()
    for row in range(n):
        before = len(problems)
        _check_row(rows, row, parsed, by_output, problems)
        if len(problems) > before:
            bad_rows.add(row)
    if isinstance(spec.loss, dict):
        for name in spec.loss:
            if name not in by_output:
                problems.append(
                    f"targets.loss names output {name!r}, which the data has no row of; "
                    f"the data's outputs are {', '.join(map(repr, by_output))}"
                )
    targets = []
    for output, indices in by_output.items():
        loss = spec.loss_of(output)
        if loss is None:
            problems.append(
                f"targets.loss gives no loss for output {output!r} of the data; add "
                f"{output}: <loss> to the mapping"
            )
            continue
        if not bad_rows.isdisjoint(indices):
            continue  # a cell of its rows is wrong: its arrays cannot be built
        target = _output_target(output, loss, indices, parsed, "t" in rows, problems)
        if target is not None:
            targets.append(target)
    if problems:
        raise StudyError(where, problems)
    return targets


def _check_row(
    rows: dict[str, list[Any]],
    row: int,
    parsed: dict[str, list[float | None]],
    by_output: dict[str, list[int]],
    problems: list[str],
) -> None:
    """Parse one row's cells into `parsed` and file it under its output; note its problems."""
    output = rows["output"][row]
    if output is None or not str(output).strip():
        problems.append(f"column 'output', {_row_name(row)}: empty; name the model output")
        return
    by_output.setdefault(str(output).strip(), []).append(row)
    for column in COLUMNS[1:]:
        if column in rows:
            parsed[column][row] = _number(rows[column][row], column, row, problems)
    if _empty(rows["value"][row]):
        problems.append(f"column 'value', {_row_name(row)}: empty; give the observed value")
    t = parsed["t"][row]
    if t is not None and (t < 0 or t != int(t)):
        problems.append(
            f"column 't', {_row_name(row)}: {rows['t'][row]!r} is not a time point; give "
            "the index of the series (0, 1, 2, ...)"
        )
    elif t is not None and t >= MAX_SERIES_LENGTH:
        problems.append(
            f"column 't', {_row_name(row)}: {rows['t'][row]!r} is beyond the longest "
            f"series ({MAX_SERIES_LENGTH:,} points: t at most {MAX_SERIES_LENGTH - 1:,})"
        )
    weight = parsed["weight"][row]
    if weight is not None and weight < 0:
        problems.append(
            f"column 'weight', {_row_name(row)}: {weight:g} is negative; give a weight >= 0"
        )


def _output_target(
    output: str,
    loss: str,
    rows: list[int],
    parsed: dict[str, list[float | None]],
    has_t: bool,
    problems: list[str],
) -> OutputTarget | None:
    import numpy as np

    before = len(problems)
    times = [parsed["t"][row] for row in rows] if has_t else [None] * len(rows)
    scalar = [row for row, t in zip(rows, times, strict=True) if t is None]
    if scalar and len(scalar) < len(rows):
        problems.append(
            f"output {output!r}: {_row_name(scalar[0])} has no t but other rows have one; "
            "a target is either a scalar (no t) or a series (a t on every row)"
        )
    elif len(scalar) > 1:
        problems.append(
            f"output {output!r}: {_row_name(scalar[0])} and {_row_name(scalar[1])} are both "
            "its scalar value; keep one row, or give each a t"
        )
    seen: dict[float, int] = {}
    for row, t in zip(rows, times, strict=True):
        if t is not None and t in seen:
            problems.append(
                f"output {output!r}: {_row_name(seen[t])} and {_row_name(row)} both observe "
                f"t = {int(t)}; keep one row per (output, t)"
            )
        elif t is not None:
            seen[t] = row
    denominators = [parsed["denominator"][row] for row in rows]
    for row, value, denominator in zip(
        rows, (parsed["value"][r] for r in rows), denominators, strict=True
    ):
        if value is None:
            continue
        if loss in COUNT_LOSSES and (value < 0 or value != int(value)):
            problems.append(
                f"column 'value', {_row_name(row)}: {value:g} is not a count (output "
                f"{output!r} has loss {loss}, a likelihood of non-negative integers); fix the "
                "value or choose another loss"
            )
        if loss == "binomial":
            if denominator is None:
                problems.append(
                    f"column 'denominator', {_row_name(row)}: empty, but output {output!r} has "
                    "loss binomial; give the number of trials"
                )
            elif denominator < 1 or denominator != int(denominator) or value > denominator:
                problems.append(
                    f"column 'denominator', {_row_name(row)}: {denominator:g} is not a number "
                    f"of trials >= the value {value:g}; fix it"
                )
    if len(problems) > before:
        return None
    values = np.array([parsed["value"][row] for row in rows], dtype=np.float64)
    weights = np.array(
        [1.0 if parsed["weight"][row] is None else parsed["weight"][row] for row in rows],
        dtype=np.float64,
    )
    has_denominator = any(d is not None for d in denominators)
    return OutputTarget(
        output=output,
        loss=loss,
        t=None if scalar else np.array(times, dtype=np.int64),
        value=values,
        weight=weights,
        denominator=(
            np.array([np.nan if d is None else d for d in denominators], dtype=np.float64)
            if has_denominator
            else None
        ),
    )
