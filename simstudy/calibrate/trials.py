"""`trials.parquet`: every trial of a calibration, one row each, in trial order.

```python
>>> from simstudy.calibrate.trials import TrialRecord, trials_table
>>> record = TrialRecord(trial=0, ask=1, param_id="3f2a", state="complete", loss=405.0,
...                      loss_se=12.0, replicates=8, allocation="best 405+-12, no other trial "
...                      "overlaps", params={"beta": 0.31})
>>> trials_table([record], ["beta"]).column_names[-1]
'beta'
```

Columns (`TRIALS_SCHEMA`, then one per parameter): `trial`, `ask`, `param_id`, `state`
("complete" | "failed" | "pending"), `loss`, `loss_se`, `replicates` (the replicates its
loss is over), `allocation` (the reason of its last allocation), `loss_bias`, `score`
(the loss as at replicates.min: what trials are ranked by), then each parameter.

`trials.jsonl` (`TrialLog`) is the search's own record: one line per change of a trial,
appended and flushed to disk before Optuna is told, so a calibration killed at any point
resumes with every trial as it was; `trials.parquet` is rebuilt from it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Literal

import pyarrow as pa
from pydantic import AliasChoices, BaseModel, ConfigDict, Field

TrialState = Literal["complete", "failed", "pending"]

TRIALS_SCHEMA = pa.schema(
    [
        ("trial", pa.int64()),
        ("ask", pa.int64()),
        ("param_id", pa.string()),
        ("state", pa.string()),
        ("loss", pa.float64()),
        ("loss_se", pa.float64()),
        ("replicates", pa.int64()),
        ("allocation", pa.string()),
        ("loss_bias", pa.float64()),
        ("score", pa.float64()),
    ]
)
"""The fixed columns of trials.parquet; the parameter columns follow, typed by their values."""


class TrialRecord(BaseModel):
    """One trial of a calibration, as trials.parquet holds it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    trial: int = Field(ge=0, description="Optuna's trial number, from 0 in the order asked.")
    ask: int = Field(
        ge=1,
        validation_alias=AliasChoices("ask", "round"),  # trial logs before 'round' was renamed
        description="Its ask: trials asked together when capacity freed share it (from 1).",
    )
    param_id: str = Field(description="The parameter set's id, as in every result file.")
    state: TrialState = Field(
        description="complete (told its loss), failed (told failed: no loss), or pending "
        "(asked, not told yet)."
    )
    loss: float | None = Field(default=None, description="Loss against the targets.")
    loss_se: float | None = Field(
        default=None, description="Standard error of the loss over the trial's replicates."
    )
    replicates: int = Field(ge=0, description="Replicates the loss is over.")
    allocation: str = Field(
        default="", description="Why the trial has its replicates (its last allocation)."
    )
    params: dict[str, Any] = Field(description="The trial's parameter values, by name.")
    loss_bias: float | None = Field(
        default=None,
        description="The part of the loss due to its finite replicates (see "
        "simstudy.analysis.losses.replicate_bias); None when unknown for the loss.",
    )
    score: float | None = Field(
        default=None,
        description="The loss as at replicates.min, which trials are ranked and told by "
        "(`search.score`): like with like whatever their replicates.",
    )


def trials_table(records: list[TrialRecord], names: list[str]) -> pa.Table:
    """Return trials.parquet's table: one row per record, by trial number."""
    ordered = sorted(records, key=lambda record: record.trial)
    rows = [record.model_dump(exclude={"params"}) for record in ordered]
    table = pa.Table.from_pylist(rows, schema=TRIALS_SCHEMA)
    for name in names:  # parameter types as the values have them (numbers, text, booleans)
        table = table.append_column(name, pa.array([r.params.get(name) for r in ordered]))
    return table


class TrialLog:
    """`trials.jsonl`: every change of a trial, one JSON line each, flushed before it counts.

    Append-only like Optuna's journal: a crash loses at most the line being written, which
    `read` skips (and the next `append` starts on a line of its own).
    """

    def __init__(self, path: Path):
        self.path = path

    def read(self) -> dict[int, TrialRecord]:
        """Return each trial's last record (a torn last line is skipped; other bad ones raise)."""
        records: dict[int, TrialRecord] = {}
        if not self.path.exists():
            return records
        lines = self.path.read_bytes().split(b"\n")
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                record = TrialRecord.model_validate(json.loads(line))
            except ValueError as exc:
                if number == len(lines):  # unterminated: the write a crash interrupted
                    break
                raise ValueError(f"{self.path}, line {number}: not a trial record ({exc})") from exc
            records[record.trial] = record
        return records

    def append(self, records: list[TrialRecord]) -> None:
        """Append records and flush them to disk."""
        if not records:
            return
        text = "".join(record.model_dump_json() + "\n" for record in records)
        self._cut_torn_line()
        with self.path.open("ab") as handle:
            handle.write(text.encode())
            handle.flush()
            os.fsync(handle.fileno())

    def _cut_torn_line(self) -> None:
        """Cut the log back to its last complete line: a torn one would end up mid-file."""
        if not self.path.exists():
            return
        with self.path.open("rb+") as handle:
            size = handle.seek(0, os.SEEK_END)
            if size == 0:
                return
            handle.seek(size - 1)
            if handle.read(1) == b"\n":
                return  # the usual case, read in one byte: the log grows by every change
            handle.seek(0)
            data = handle.read()
            handle.truncate(data.rfind(b"\n") + 1)
