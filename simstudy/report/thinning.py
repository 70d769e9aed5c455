"""Series thinned to what a figure can show: per pixel column, the range of the values.

A figure is ~800 pixels wide; drawing a 1,000,000-point series point by point took
matplotlib ~30 s per figure and showed nothing more. Each curve is cut into at most
`MAX_BUCKETS` runs of consecutive points: a line keeps each run's lowest and highest value
(so a one-point spike still shows), a band its lowest lower edge and highest upper edge
(so the band drawn contains every point's band). Missing values (NaN) stay missing
unless a run has a value.

```python
>>> t, y = thin_line(np.arange(10.0), np.arange(10.0), buckets=2)
>>> t.tolist(), y.tolist()
([0.0, 0.0, 5.0, 5.0], [0.0, 4.0, 5.0, 9.0])
```
"""

from __future__ import annotations

import warnings

import numpy as np

MAX_BUCKETS = 2000
"""Runs a curve is cut into: over twice the pixel columns of a report figure."""


def thin_line(
    t: np.ndarray, y: np.ndarray, buckets: int = MAX_BUCKETS
) -> tuple[np.ndarray, np.ndarray]:
    """Return the line through each run's lowest and highest value, at the run's first t."""
    starts = _starts(len(t), buckets)
    if starts is None:
        return t, y
    pairs = np.stack([_reduce(np.fmin, y, starts), _reduce(np.fmax, y, starts)], axis=1)
    return np.repeat(t[starts], 2), pairs.ravel()


def thin_band(
    t: np.ndarray, low: np.ndarray, high: np.ndarray, buckets: int = MAX_BUCKETS
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return the band from each run's lowest `low` to its highest `high`, at its first t."""
    starts = _starts(len(t), buckets)
    if starts is None:
        return t, low, high
    return t[starts], _reduce(np.fmin, low, starts), _reduce(np.fmax, high, starts)


def _starts(points: int, buckets: int) -> np.ndarray | None:
    if points <= 2 * buckets:
        return None  # already fewer points than the thinned curve would have
    return np.linspace(0, points, buckets, endpoint=False).astype(np.int64)


def _reduce(function: np.ufunc, values: np.ndarray, starts: np.ndarray) -> np.ndarray:
    # fmin/fmax skip NaN; a run of NaN only stays NaN (a gap), without numpy's warning.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return function.reduceat(np.asarray(values, dtype=np.float64), starts)
