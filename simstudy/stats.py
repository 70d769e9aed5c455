"""Mergeable summary statistics of model outputs.

A batch summarises its successful replicates as one `Partial` per output (count, mean,
M2, min, max over each time point, plus the values kept for exact quantiles); partials
merge pairwise (Chan et al.'s parallel variance update), so aggregation never needs the
raw records. Scalars are series of length 1. NaN values count as missing.

```python
>>> import numpy as np
>>> a = Partial.from_values(np.array([[1.0], [2.0]]))
>>> b = Partial.from_values(np.array([[3.0]]))
>>> summarize(a.merge(b), quantiles=[0.5])["mean"].tolist()
[2.0]
```
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Partial:
    """Summary of some replicates of one output, per time point."""

    count: np.ndarray
    mean: np.ndarray
    m2: np.ndarray
    minimum: np.ndarray
    maximum: np.ndarray
    values: np.ndarray
    """Replicate x time point values, kept for exact quantiles (a sketch could replace them)."""

    @classmethod
    def from_values(cls, values: np.ndarray) -> Partial:
        """Summarise a (replicates x time points) array."""
        values = np.asarray(values, dtype=np.float64)
        finite = ~np.isnan(values)
        count = finite.sum(axis=0)
        safe = np.where(finite, values, 0.0)
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = np.where(count > 0, safe.sum(axis=0) / np.maximum(count, 1), np.nan)
            m2 = np.where(finite, (values - mean) ** 2, 0.0).sum(axis=0)
        minimum = np.where(
            count > 0, np.where(finite, values, np.inf).min(axis=0, initial=np.inf), np.nan
        )
        maximum = np.where(
            count > 0, np.where(finite, values, -np.inf).max(axis=0, initial=-np.inf), np.nan
        )
        return cls(count, mean, m2, minimum, maximum, values)

    @property
    def length(self) -> int:
        """Return the number of time points (1 for a scalar)."""
        return int(self.count.shape[0])

    def merge(self, other: Partial) -> Partial:
        """Return the summary of both partials' replicates together."""
        if other.length != self.length:
            raise ValueError(f"cannot merge series of length {self.length} and {other.length}")
        n_a, n_b = self.count, other.count
        n = n_a + n_b
        with np.errstate(invalid="ignore", divide="ignore"):
            delta = np.where(n_b > 0, other.mean, 0.0) - np.where(n_a > 0, self.mean, 0.0)
            weight_b = np.where(n > 0, n_b / np.maximum(n, 1), 0.0)
            mean = np.where(n_a > 0, self.mean, 0.0) + delta * weight_b
            mean = np.where(n > 0, mean, np.nan)
            m2 = self.m2 + other.m2 + delta**2 * n_a * weight_b
        return Partial(
            count=n,
            mean=mean,
            m2=m2,
            minimum=np.fmin(self.minimum, other.minimum),
            maximum=np.fmax(self.maximum, other.maximum),
            values=np.concatenate([self.values, other.values], axis=0),
        )


def summarize(partial: Partial, quantiles: list[float]) -> dict[str, np.ndarray]:
    """Return count, mean, std (sample, ddof=1), min, max and quantiles per time point."""
    count = partial.count
    with np.errstate(invalid="ignore", divide="ignore"):
        std = np.where(count > 1, np.sqrt(partial.m2 / np.maximum(count - 1, 1)), np.nan)
    result = {
        "count": count,
        "mean": partial.mean,
        "std": std,
        "min": partial.minimum,
        "max": partial.maximum,
    }
    for q in quantiles:
        result[quantile_column(q)] = _nan_quantile(partial.values, q)
    return result


def quantile_column(q: float) -> str:
    """Return the column name of a quantile, e.g. q0.05."""
    return f"q{q:g}"


def _nan_quantile(values: np.ndarray, q: float) -> np.ndarray:
    if values.shape[0] == 0:
        return np.full(values.shape[1], np.nan)
    # An all-NaN time point is simply NaN; numpy's warning about it is noise here.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanquantile(values, q, axis=0)
