"""How much of an output's variance is replicate noise rather than the parameters.

```python
>>> import pyarrow as pa
>>> from simstudy.analysis.variance import replicate_variance_share
>>> table = pa.table({"param_id": ["a", "b"], "output": ["y", "y"], "n_ok": [2, 2],
...                   "mean": [0.0, 2.0], "std": [1.0, 1.0]})
>>> replicate_variance_share(table).to_pylist()[0]["within_share"]
0.5
```

A one-way analysis of variance over the aggregates table (one row per parameter set and
scalar output), weighted by each set's successful replicates `n_ok`:

- `between_sets_variance` = sum n_i (m_i - m)^2 / sum n_i, the variance of the set means
  m_i around the weighted grand mean m: what the parameters explain;
- `within_sets_variance` = sum (n_i - 1) s_i^2 / sum (n_i - 1), the pooled variance of the
  replicates around their set's mean (s_i is the sample standard deviation): noise;
- `within_share` = within / (within + between).

The set means themselves carry noise (variance s^2 / n), so with few replicates the
between part is somewhat overstated; it is the design's variance, not that of a wider
population of parameter sets.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

VARIANCE_SCHEMA = pa.schema(
    [
        pa.field("output", pa.string()),
        pa.field("between_sets_variance", pa.float64()),
        pa.field("within_sets_variance", pa.float64()),  # null: no set has 2 replicates
        pa.field("within_share", pa.float64()),  # null: no variance at all
    ]
)


def replicate_variance_share(aggregates: pa.Table) -> pa.Table:
    """Return per output the variance between parameter sets, within them, and its share."""
    rows = []
    outputs = pc.unique(aggregates.column("output")).drop_null().to_pylist()
    for output in outputs:
        part = aggregates.filter(pc.equal(aggregates.column("output"), output))
        rows.append({"output": output, **variance_parts(part)})
    return pa.Table.from_pylist(rows, schema=VARIANCE_SCHEMA)


def variance_parts(part: pa.Table) -> dict[str, float | None]:
    """Return the between, within and within-share of one output's rows."""
    n = _numbers(part, "n_ok")
    mean = _numbers(part, "mean")
    std = _numbers(part, "std")
    # Failed sets (no mean) and sets without a successful replicate weigh nothing.
    ok = np.isfinite(mean) & (n >= 1)
    between = None
    if ok.any():
        weights = n[ok]
        grand = np.average(mean[ok], weights=weights)
        between = float(np.average((mean[ok] - grand) ** 2, weights=weights))
    spread = ok & (n >= 2) & np.isfinite(std)
    within = None
    if spread.any():
        within = float(np.average(std[spread] ** 2, weights=n[spread] - 1))
    share = None
    if between is not None and within is not None and between + within > 0:
        share = within / (between + within)
    return {"between_sets_variance": between, "within_sets_variance": within, "within_share": share}


def _numbers(table: pa.Table, name: str) -> np.ndarray:
    column = table.column(name).cast(pa.float64())
    return column.fill_null(np.nan).to_numpy()
