"""`trials.parquet`: every trial of a calibration, one row each, in trial order.

```python
>>> from simstudy.calibrate.trials import TrialRecord, trials_table
>>> record = TrialRecord(trial=0, round=1, param_id="3f2a", state="complete", loss=405.0,
...                      loss_se=12.0, replicates=8, allocation="best 405+-12, no other trial "
...                      "overlaps", params={"beta": 0.31})
>>> trials_table([record], ["beta"]).column_names[-1]
'beta'
```

Columns (`TRIALS_SCHEMA`, then one per parameter): `trial`, `round`, `param_id`, `state`
("complete" | "failed" | "pending"), `loss`, `loss_se`, `replicates` (the replicates its
loss is over), `allocation` (the reason of its last allocation), then each parameter.
"""

from __future__ import annotations

from typing import Any, Literal

import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field

TrialState = Literal["complete", "failed", "pending"]

TRIALS_SCHEMA = pa.schema(
    [
        ("trial", pa.int64()),
        ("round", pa.int64()),
        ("param_id", pa.string()),
        ("state", pa.string()),
        ("loss", pa.float64()),
        ("loss_se", pa.float64()),
        ("replicates", pa.int64()),
        ("allocation", pa.string()),
    ]
)
"""The fixed columns of trials.parquet; the parameter columns follow, typed by their values."""


class TrialRecord(BaseModel):
    """One trial of a calibration, as trials.parquet holds it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    trial: int = Field(ge=0, description="Optuna's trial number, from 0 in the order asked.")
    round: int = Field(ge=1, description="The round that asked the trial (1 = first).")
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


def trials_table(records: list[TrialRecord], names: list[str]) -> pa.Table:
    """Return trials.parquet's table: one row per record, by trial number."""
    ordered = sorted(records, key=lambda record: record.trial)
    rows = [record.model_dump(exclude={"params"}) for record in ordered]
    table = pa.Table.from_pylist(rows, schema=TRIALS_SCHEMA)
    for name in names:  # parameter types as the values have them (numbers, text, booleans)
        table = table.append_column(name, pa.array([r.params.get(name) for r in ordered]))
    return table
