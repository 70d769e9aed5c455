"""Mergeable summary statistics of model outputs.

A batch summarises its successful replicates as one `Partial` per output (count, mean,
M2, min, max over each time point, plus what quantiles need); partials merge pairwise
(Chan et al.'s parallel variance update), so aggregation never needs the raw records.
Scalars are series of length 1. NaN values count as missing.

Quantiles are exact (numpy's) while a partial holds at most `EXACT_REPLICATES`
replicates: it keeps their values. Beyond that it keeps a t-digest per time point
instead (`fastdigest`, `SKETCH_CENTROIDS` centroids), so its size stops growing with
replicates; a quantile is then within `SKETCH_RANK_ERROR` of the exact one in rank.

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
from fastdigest import TDigest

EXACT_REPLICATES = 1000
"""Most replicates a partial keeps values of: 8 kB per time point, results exact up to here.

At 1,000 replicates a quantile's own Monte Carlo uncertainty, sqrt(q(1-q)/n) in rank, is
0.7 (q=0.05) to 1.6 (q=0.5) percentage points, five times the sketch's worst measured error,
so sketching beyond costs no accuracy that matters (benchmarks/sketch_accuracy.py)."""

SKETCH_CENTROIDS = 100
"""Centroids per t-digest: ~1.6 kB pickled, ~0.6 MB for a 365-point series."""

SKETCH_RANK_ERROR = 0.005
"""Tested bound on a sketched quantile's rank error (measured at most 0.0015 on 10^6 values).

With ties (integer counts) the estimate may also fall between the exact quantile and the
next distinct value, e.g. 29.96 where numpy says 30: t-digest interpolates between centroids."""


@dataclass(frozen=True)
class _Sketch:
    """Per time point, a t-digest of the finite values and the counts of -inf and +inf.

    Infinite values are counted apart because t-digest rejects them.
    """

    digests: tuple[TDigest, ...]
    negative_inf: np.ndarray
    positive_inf: np.ndarray

    @classmethod
    def from_values(cls, values: np.ndarray) -> _Sketch:
        """Sketch a (replicates x time points) array, NaN left out."""
        finite = np.isfinite(values)
        digests = tuple(
            TDigest.from_values(values[finite[:, t], t], max_centroids=SKETCH_CENTROIDS)
            for t in range(values.shape[1])
        )
        return cls(digests, (values == -np.inf).sum(axis=0), (values == np.inf).sum(axis=0))

    def merge(self, other: _Sketch) -> _Sketch:
        """Return the sketch of both sketches' values."""
        return _Sketch(
            tuple(a.merge(b) for a, b in zip(self.digests, other.digests, strict=True)),
            self.negative_inf + other.negative_inf,
            self.positive_inf + other.positive_inf,
        )

    def quantile(self, q: float) -> np.ndarray:
        """Return the estimated q-quantile per time point (NaN where there are no values)."""
        result = np.full(len(self.digests), np.nan)
        for t, digest in enumerate(self.digests):
            below, finite = int(self.negative_inf[t]), digest.n_values
            n = below + finite + int(self.positive_inf[t])
            if n == 0:
                continue
            # numpy's (linear) quantile sits at position q(n-1) of the sorted values.
            position = q * (n - 1)
            if position < below:
                result[t] = -np.inf
            elif position > below + finite - 1:
                result[t] = np.inf
            else:
                result[t] = digest.quantile((position - below) / max(finite - 1, 1))
        return result


@dataclass(frozen=True)
class Partial:
    """Summary of some replicates of one output, per time point."""

    count: np.ndarray
    mean: np.ndarray
    m2: np.ndarray
    minimum: np.ndarray
    maximum: np.ndarray
    replicates: int
    """Replicates summarised, NaN or not (the rows of `values`)."""
    exact: np.ndarray | None
    """Replicate x time point values while `replicates <= EXACT_REPLICATES`, else None."""
    sketch: _Sketch | None
    """Quantile sketches once `replicates > EXACT_REPLICATES`, else None."""

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
        return cls(count, mean, m2, minimum, maximum, values.shape[0], *_exact_or_sketch(values))

    @property
    def length(self) -> int:
        """Return the number of time points (1 for a scalar)."""
        return int(self.count.shape[0])

    @property
    def values(self) -> np.ndarray:
        """Return the replicate x time point values, kept up to `EXACT_REPLICATES` replicates."""
        if self.exact is None:
            raise ValueError(
                f"a partial of {self.replicates} replicates keeps quantile sketches, not its "
                f"values (kept up to {EXACT_REPLICATES}): use summarize() for its statistics"
            )
        return self.exact

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
        if self.exact is not None and other.exact is not None:
            exact, sketch = _exact_or_sketch(np.concatenate([self.exact, other.exact], axis=0))
        else:
            exact, sketch = None, self._sketched().merge(other._sketched())
        return Partial(
            count=n,
            mean=mean,
            m2=m2,
            minimum=np.fmin(self.minimum, other.minimum),
            maximum=np.fmax(self.maximum, other.maximum),
            replicates=self.replicates + other.replicates,
            exact=exact,
            sketch=sketch,
        )

    def _sketched(self) -> _Sketch:
        return self.sketch if self.sketch is not None else _Sketch.from_values(self.values)

    def quantile(self, q: float) -> np.ndarray:
        """Return the q-quantile per time point: exact, or from the sketch beyond the threshold."""
        return self.quantiles([q])[0]

    def quantiles(self, qs: list[float]) -> np.ndarray:
        """Return the qs-quantiles per time point, one row per q (exact values sorted once)."""
        if self.exact is not None:
            return _nan_quantiles(self.exact, qs)
        sketch = self._sketched()
        return np.array([sketch.quantile(q) for q in qs]).reshape(len(qs), -1)


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
    for q, values in zip(quantiles, partial.quantiles(quantiles), strict=True):
        result[quantile_column(q)] = values
    return result


def quantile_column(q: float) -> str:
    """Return the column name of a quantile, e.g. q0.05."""
    return f"q{q:g}"


def _exact_or_sketch(values: np.ndarray) -> tuple[np.ndarray | None, _Sketch | None]:
    # Past the threshold the values go: memory must not grow with replicates (issue 12).
    if values.shape[0] <= EXACT_REPLICATES:
        return values, None
    return None, _Sketch.from_values(values)


def _nan_quantiles(values: np.ndarray, qs: list[float]) -> np.ndarray:
    """Return numpy's nanquantile of each q per column, as one (len(qs) x columns) array."""
    result = np.full((len(qs), values.shape[1]), np.nan)
    if values.shape[0] == 0 or not qs:
        return result
    # np.nanquantile runs a Python-level loop over columns; columns without NaN (nearly
    # all) are one vectorised np.quantile instead: measured on a calibration's 100-point
    # series, it was a quarter of the workers' CPU. The same numbers either way.
    has_nan = np.isnan(values).any(axis=0)
    if not has_nan.all():
        with np.errstate(invalid="ignore"):  # inf - inf between two infinite values: NaN
            result[:, ~has_nan] = np.quantile(values[:, ~has_nan], qs, axis=0)
    if has_nan.any():
        # An all-NaN time point is simply NaN; numpy's warning about it is noise here.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            result[:, has_nan] = np.nanquantile(values[:, has_nan], qs, axis=0)
    return result
