"""Sensitivity indices of a saltelli or morris design: which parameters matter.

```python
>>> from simstudy.analysis.sensitivity import sensitivity_table
>>> table = sensitivity_table(study, sets, aggregates)  # None unless saltelli or morris
>>> table.filter(pc.equal(table["index"], "ST")).to_pylist()[0]
{'output': 'peak', 'method': 'sobol', 'index': 'ST', 'parameter': 'beta', ...}
```

SALib's indices are computed on the per-parameter-set means (over replicates) of every
scalar output, and on the loss when the study has targets, with every design row mapped to
its parameter set (repeated rows share one set). The design's rows are sampled again from
the study file, so nothing but the study and the aggregates is needed.

An output that some design row has no mean for (a failed parameter set, an output it did
not return, a non-finite mean) or that never varies cannot be analysed: SALib would return
meaningless numbers. Such an output gets one row with no index and the reason in `note`.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable
from typing import Any

import numpy as np
import pyarrow as pa

from simstudy.design.expand import ParameterSet, sample_seed, sampled_design
from simstudy.spec.sample import SENSITIVITY_METHODS, SampleDesign
from simstudy.spec.study import Study
from simstudy.stats.aggregate import ParameterSetAggregate

LOSS_OUTPUT = "loss"
"""The `output` of the loss's indices."""
RESAMPLES = 100
"""Bootstrap resamples of SALib's confidence intervals (95%)."""
SHOWN_IDS = 3
"""Parameter sets named in a skipped output's note."""

SENSITIVITY_SCHEMA = pa.schema(
    [
        pa.field("output", pa.string()),
        pa.field("method", pa.string()),  # sobol | morris
        pa.field("index", pa.string()),  # S1, ST, S2 | mu, mu_star, sigma; null: skipped
        pa.field("parameter", pa.string()),
        pa.field("parameter_2", pa.string()),  # the second parameter of S2
        pa.field("value", pa.float64()),
        pa.field("conf", pa.float64()),  # half-width of the 95% interval; null: none
        pa.field("note", pa.string()),  # why the output was skipped
    ]
)


def sensitivity_table(
    study: Study, sets: list[ParameterSet], aggregates: list[ParameterSetAggregate]
) -> pa.Table | None:
    """Return the sensitivity indices of every scalar output and the loss (None: no such design)."""
    sample = study.parameters.sample
    if sample is None or sample.method not in SENSITIVITY_METHODS:
        return None
    unit, row_ids = sampled_design(study)
    known = {s.param_id for s in sets}
    method = "sobol" if sample.method == "saltelli" else "morris"
    rows: list[dict[str, Any]] = []
    for output, means in set_means(aggregates).items():
        values = np.array([means.get(pid, math.nan) for pid in row_ids])
        reason = skip_reason(output, values, row_ids, known)
        if reason is not None:
            rows.append({"output": output, "method": method, "note": reason})
            continue
        seed = sample_seed(study)
        if method == "sobol":
            rows.extend(sobol_rows(output, sample, values, seed))
        else:
            rows.extend(morris_rows(output, sample, unit, values, seed))
    return pa.Table.from_pylist(rows, schema=SENSITIVITY_SCHEMA)


def set_means(aggregates: Iterable[ParameterSetAggregate]) -> dict[str, dict[str, float]]:
    """Return output -> param_id -> mean over replicates (the loss as output 'loss')."""
    means: dict[str, dict[str, float]] = {}
    for aggregate in sorted(aggregates, key=lambda a: a.index):
        if aggregate.status != "ok":
            continue
        for row in aggregate.scalars:
            mean = row.get("mean")
            if mean is not None:
                means.setdefault(row["output"], {})[aggregate.param_id] = float(mean)
    losses = {
        a.param_id: float(loss)
        for a in aggregates
        if a.status == "ok" and (loss := getattr(a, "loss", None)) is not None
    }
    if losses:
        means[LOSS_OUTPUT] = losses
    return means


def skip_reason(output: str, values: np.ndarray, row_ids: list[str], known: set[str]) -> str | None:
    """Return why the indices of `output` cannot be computed from `values` (None: they can)."""
    missing = list(dict.fromkeys(pid for pid, v in zip(row_ids, values, strict=True)
                                 if not math.isfinite(v)))  # fmt: skip
    if missing:
        shown = ", ".join(pid[:12] for pid in missing[:SHOWN_IDS])
        more = f" and {len(missing) - SHOWN_IDS} more" if len(missing) > SHOWN_IDS else ""
        unknown = sum(pid not in known for pid in missing)
        extra = f" ({unknown} not in the study's parameter sets)" if unknown else ""
        return (
            f"{len(missing)} of {len(set(row_ids))} parameter sets have no finite mean of "
            f"{output!r} ({shown}{more}){extra}: failed or missing sets leave the design "
            "incomplete; rerun them (raise retries or timeout_seconds) to get indices"
        )
    if np.ptp(values) == 0:
        return (
            f"{output!r} is the same ({values[0]:g}) for every parameter set: nothing to apportion"
        )
    return None


def sobol_rows(
    output: str, sample: SampleDesign, values: np.ndarray, seed: int
) -> list[dict[str, Any]]:
    """Return Sobol' S1 and ST (and S2 with second_order) of one output, with their intervals."""
    from SALib.analyze import sobol

    from simstudy.design.sampling import salib_problem

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # SALib's numpy warnings on tiny designs
        result = sobol.analyze(
            salib_problem(sample),
            values,
            calc_second_order=sample.second_order,
            num_resamples=RESAMPLES,
            seed=seed,
        )
    names = sample.names()
    rows = [
        _row(output, "sobol", index, name, None, result[index][j], result[f"{index}_conf"][j])
        for index in ("S1", "ST")
        for j, name in enumerate(names)
    ]
    if sample.second_order:
        rows.extend(
            _row(output, "sobol", "S2", names[j], names[k], result["S2"][j, k],
                 result["S2_conf"][j, k])
            for j in range(len(names))
            for k in range(j + 1, len(names))
        )  # fmt: skip
    return rows


def morris_rows(
    output: str, sample: SampleDesign, unit: np.ndarray, values: np.ndarray, seed: int
) -> list[dict[str, Any]]:
    """Return Morris mu, mu_star (with its interval) and sigma of one output.

    Effects are per unit of the parameter's range (the design in [0, 1]), so mu_star
    compares parameters whatever their units.
    """
    from SALib.analyze import morris

    from simstudy.design.sampling import salib_problem

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = morris.analyze(
            salib_problem(sample),
            unit,
            values,
            num_resamples=RESAMPLES,
            num_levels=sample.levels,
            seed=seed,
        )
    rows = []
    for j, name in enumerate(sample.names()):
        rows.append(_row(output, "morris", "mu", name, None, result["mu"][j], None))
        rows.append(
            _row(output, "morris", "mu_star", name, None, result["mu_star"][j],
                 result["mu_star_conf"][j])
        )  # fmt: skip
        rows.append(_row(output, "morris", "sigma", name, None, result["sigma"][j], None))
    return rows


def _row(
    output: str,
    method: str,
    index: str,
    parameter: str,
    parameter_2: str | None,
    value: Any,
    conf: Any,
) -> dict[str, Any]:
    return {
        "output": output,
        "method": method,
        "index": index,
        "parameter": parameter,
        "parameter_2": parameter_2,
        "value": _finite(value),
        "conf": _finite(conf),
        "note": None,
    }


def _finite(value: Any) -> float | None:
    # SALib marks what it cannot estimate with NaN; a null says so without poisoning means.
    if value is None:
        return None
    number = float(value)
    return number if math.isfinite(number) else None
