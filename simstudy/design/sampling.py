"""Sample a `parameters.sample` design: unit-space points, then parameter values.

```python
>>> from simstudy.spec.sample import SampleDesign
>>> from simstudy.design.sampling import sample_rows
>>> design = SampleDesign.model_validate(
...     {"method": "sobol", "n": 4, "bounds": {"beta": [0.1, 0.6]}})
>>> len(sample_rows(design, seed=1))
4
```

Every method first draws the design in the unit hypercube [0, 1]^D (scipy.stats.qmc for
random, lhs, sobol and halton; SALib's samplers for saltelli and morris), then maps each
column to its parameter: linear or log-uniform, whole numbers, or one of a list of choices.
Floats are rounded to `SIGNIFICANT_DIGITS` significant digits, so that a last-bit
difference between two machines' `exp` cannot change a parameter set's id.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
from scipy.stats import qmc

from simstudy.spec.sample import QMC_METHODS, ChoiceBound, RangeBound, SampleDesign

SIGNIFICANT_DIGITS = 12
"""Significant digits kept of a sampled float: ids must not depend on the platform's libm."""
MAX_DISCREPANCY_POINTS = 10_000
"""Largest design whose discrepancy is computed: its cost grows as n^2 (~1 s at 10,000)."""


def unit_sample(design: SampleDesign, seed: int) -> np.ndarray:
    """Return the design's rows in the unit hypercube, shape (size, D), in design order."""
    dims = len(design.bounds)
    # A Generator, not an int: scipy's `seed=int` and `rng=int` give different streams, and
    # SALib passes `seed` on to scipy, so a Generator is the one spelling that pins the draw.
    rng = np.random.default_rng(seed)
    method, n = design.drawn()
    if method == "random":
        return rng.random((n, dims))
    if method in ("lhs", "sobol", "halton"):
        engines = {"lhs": qmc.LatinHypercube, "sobol": qmc.Sobol, "halton": qmc.Halton}
        return engines[method](dims, scramble=True, seed=rng).random(n)
    problem = salib_problem(design)
    with warnings.catch_warnings():
        # SALib warns about choices made on purpose (and validated) here, e.g. levels.
        warnings.simplefilter("ignore")
        if method == "saltelli":
            from SALib.sample import sobol

            unit = sobol.sample(problem, n, calc_second_order=design.second_order, seed=rng)
        else:
            from SALib.sample import morris

            unit = morris.sample(problem, n, num_levels=design.levels, seed=rng)
    return np.asarray(unit, dtype=float)


def salib_problem(design: SampleDesign) -> dict[str, Any]:
    """Return SALib's problem of the design: its parameters over the unit interval."""
    names = design.names()
    return {"num_vars": len(names), "names": names, "bounds": [[0.0, 1.0]] * len(names)}


def scaled_columns(design: SampleDesign, unit: np.ndarray) -> dict[str, list[Any]]:
    """Return each parameter's values (Python scalars) from unit-space rows."""
    return {
        name: scale_column(bound, unit[:, j])
        for j, (name, bound) in enumerate(design.bounds.items())
    }


def scale_column(bound: RangeBound | ChoiceBound, u: np.ndarray) -> list[Any]:
    """Return the values of one parameter for unit-space coordinates `u` in [0, 1]."""
    if isinstance(bound, ChoiceBound):
        count = len(bound.choices)
        picks = np.minimum((u * count).astype(np.int64), count - 1)
        return [bound.choices[i] for i in picks.tolist()]
    low, high = bound.low, bound.high
    if bound.integer:
        # Whole numbers low..high each get an equal share of [0, 1] (log: a share
        # proportional to log((k+1)/k)); u = 1, which morris draws, is the highest.
        top = high + 1.0
        if bound.log:
            # Rounded before the floor, so a last-bit difference of `exp` cannot cross a
            # whole number.
            values = np.floor(round_significant(np.exp(np.log(low) + u * np.log(top / low))))
        else:
            values = np.floor(low + u * (top - low))
        return np.clip(values, low, high).astype(np.int64).tolist()
    if bound.log:
        values = np.exp(np.log(low) + u * (np.log(high) - np.log(low)))
    else:
        values = low + u * (high - low)
    return round_significant(np.clip(values, low, high)).tolist()


def round_significant(values: np.ndarray, digits: int = SIGNIFICANT_DIGITS) -> np.ndarray:
    """Return `values` rounded to `digits` significant digits (zeros stay zero)."""
    magnitude = np.abs(values)
    exponent = np.floor(np.log10(np.where(magnitude > 0, magnitude, 1.0)))
    scale = 10.0 ** (digits - 1 - exponent)
    return np.round(values * scale) / scale


def sample_rows(design: SampleDesign, seed: int) -> list[dict[str, Any]]:
    """Return the design's parameter values, one mapping per row, in design order."""
    columns = scaled_columns(design, unit_sample(design, seed))
    names = list(columns)
    return [dict(zip(names, values, strict=True)) for values in zip(*columns.values(), strict=True)]


def discrepancy(design: SampleDesign, unit: np.ndarray) -> float | None:
    """Return the centred L2 discrepancy of a space-filling design (None if not computed).

    Lower is more uniform. Only for random, lhs, sobol and halton (SALib's designs are not
    meant to fill the space), and only up to `MAX_DISCREPANCY_POINTS` points.
    """
    if design.method not in QMC_METHODS or not 2 <= len(unit) <= MAX_DISCREPANCY_POINTS:
        return None
    return float(qmc.discrepancy(unit))


def design_summary(design: SampleDesign, seed: int, n_sets: int) -> list[str]:
    """Return lines describing a sampled design: method, size rule, repeats, discrepancy."""
    lines = [f"design: {design.size_rule()}, seed {seed}"]
    if n_sets < design.size():
        lines.append(
            f"  {design.size():,} design rows give {n_sets:,} distinct parameter sets: "
            "repeated rows run once"
        )
    if design.method in QMC_METHODS:
        value = discrepancy(design, unit_sample(design, seed))
        lines.append(
            f"  discrepancy (centred L2, unit space; lower is more uniform): {value:.6g}"
            if value is not None
            else f"  discrepancy: computed for 2 to {MAX_DISCREPANCY_POINTS:,} points only"
        )
    return lines
