"""The ranking: parameter sets ordered by their loss against the targets.

```python
>>> from simstudy.stats.aggregate import ParameterSetAggregate
>>> sets = [
...     ParameterSetAggregate(param_id=pid, index=i, params={"beta": b}, status="ok",
...                           counts={"ok": 2}, loss=loss, loss_se=0.1,
...                           target_losses={"cases": loss})
...     for i, (pid, b, loss) in enumerate([("a", 0.2, 3.0), ("b", 0.3, 1.0)])
... ]
>>> ranking_table(sets, ["beta"]).column("param_id").to_pylist()
['b', 'a']
```

`ranking.parquet` holds one row per parameter set, best first: `rank` (1 = best; null
for sets without a finite loss, last, in design order), `param_id`, `index`, `status`,
`loss`, `loss_se`, `loss_<output>` per target output, then each varied parameter.
"""

from __future__ import annotations

import math
from typing import Any

import pyarrow as pa

from simstudy.analysis.targets import observed_table
from simstudy.stats.aggregate import ParameterSetAggregate

__all__ = ["loss_column", "ranked", "ranking_table", "observed_table", "target_outputs"]

LOSS_PREFIX = "loss_"
"""Prefix of the per-output loss columns: loss_<output>."""


def loss_column(output: str) -> str:
    """Return the column name of an output's loss, e.g. loss_incidence."""
    return f"{LOSS_PREFIX}{output}"


def target_outputs(aggregates: list[ParameterSetAggregate]) -> list[str]:
    """Return the target outputs the aggregates have losses of, in order of first appearance."""
    return list(dict.fromkeys(name for a in aggregates for name in a.target_losses))


def ranked(aggregates: list[ParameterSetAggregate]) -> list[ParameterSetAggregate]:
    """Return the aggregates best first: finite loss ascending, then the rest in design order."""

    def key(aggregate: ParameterSetAggregate) -> tuple[bool, float, int]:
        loss = aggregate.loss
        finite = loss is not None and math.isfinite(loss)
        return (not finite, loss if finite and loss is not None else 0.0, aggregate.index)

    return sorted(aggregates, key=key)


def ranking_table(aggregates: list[ParameterSetAggregate], varied: list[str]) -> pa.Table:
    """Return the ranking (ranking.parquet): one row per parameter set, best first."""
    outputs = target_outputs(aggregates)
    rows: list[dict[str, Any]] = []
    for position, aggregate in enumerate(ranked(aggregates), start=1):
        finite = aggregate.loss is not None and math.isfinite(aggregate.loss)
        row: dict[str, Any] = {
            "rank": position if finite else None,
            "param_id": aggregate.param_id,
            "index": aggregate.index,
            "status": aggregate.status,
            "loss": aggregate.loss,
            "loss_se": aggregate.loss_se,
        }
        row.update({loss_column(name): aggregate.target_losses.get(name) for name in outputs})
        row.update({name: aggregate.params.get(name) for name in varied})
        rows.append(row)
    schema = pa.schema(
        [
            ("rank", pa.int64()),
            ("param_id", pa.string()),
            ("index", pa.int64()),
            ("status", pa.string()),
            ("loss", pa.float64()),
            ("loss_se", pa.float64()),
            *[(loss_column(name), pa.float64()) for name in outputs],
        ]
    )
    table = pa.Table.from_pylist(
        [{field.name: row[field.name] for field in schema} for row in rows], schema=schema
    )
    for name in varied:  # parameter types as the values have them (numbers, text, booleans)
        table = table.append_column(name, pa.array([row[name] for row in rows]))
    return table
