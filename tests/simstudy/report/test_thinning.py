"""Series thinned for drawing: every value's range is kept, the point count is bounded."""

from __future__ import annotations

import numpy as np

from simstudy.report.thinning import thin_band, thin_line


def test_a_short_series_is_drawn_as_it_is() -> None:
    t, y = np.arange(100.0), np.sin(np.arange(100.0))
    thinned_t, thinned_y = thin_line(t, y, buckets=50)
    assert thinned_t is t and thinned_y is y


def test_a_long_line_keeps_every_runs_range_and_a_one_point_spike() -> None:
    rng = np.random.default_rng(1)
    y = rng.normal(size=1_000_000)
    y[777_777] = 50.0
    t = np.arange(y.size, dtype=float)
    thinned_t, thinned_y = thin_line(t, y, buckets=1000)
    assert len(thinned_t) == len(thinned_y) == 2000
    assert thinned_y.max() == 50.0 and thinned_y.min() == y.min()
    assert (np.diff(thinned_t) >= 0).all()  # still in time order
    # Each run of 1,000 points is drawn from its lowest to its highest value.
    runs = y.reshape(1000, 1000)
    np.testing.assert_array_equal(thinned_y[0::2], runs.min(axis=1))
    np.testing.assert_array_equal(thinned_y[1::2], runs.max(axis=1))


def test_a_thinned_band_contains_every_points_band_and_keeps_gaps() -> None:
    centre = np.sin(np.linspace(0, 20, 10_000))
    low, high = centre - 1, centre + 1
    low[:100] = high[:100] = np.nan  # a gap: no replicate there
    low[150] = np.nan  # a missing point inside a run with values
    t, thinned_low, thinned_high = thin_band(np.arange(10_000.0), low, high, buckets=100)
    assert len(t) == 100
    assert np.isnan(thinned_low[0]) and np.isnan(thinned_high[0])
    runs_low, runs_high = low.reshape(100, 100), high.reshape(100, 100)
    np.testing.assert_array_equal(thinned_low[1:], np.nanmin(runs_low[1:], axis=1))
    np.testing.assert_array_equal(thinned_high[1:], np.nanmax(runs_high[1:], axis=1))
