"""Mergeable statistics agree with numpy on the pooled values, whatever the split."""

from __future__ import annotations

import numpy as np
import pytest

from simstudy.stats import Partial, quantile_column, summarize


@pytest.mark.parametrize("cuts", [[], [1], [10, 11, 50], [0, 99]])
def test_merged_partials_equal_pooled_statistics(cuts: list[int]) -> None:
    values = np.random.default_rng(3).normal(5, 2, size=(100, 4))
    values[7, 2] = np.nan
    parts = np.split(values, cuts)
    merged = Partial.from_values(parts[0])
    for part in parts[1:]:
        merged = merged.merge(Partial.from_values(part))
    stats = summarize(merged, [0.05, 0.5])
    np.testing.assert_array_equal(stats["count"], [100, 100, 99, 100])
    np.testing.assert_allclose(stats["mean"], np.nanmean(values, axis=0), rtol=1e-12)
    np.testing.assert_allclose(stats["std"], np.nanstd(values, axis=0, ddof=1), rtol=1e-12)
    np.testing.assert_array_equal(stats["min"], np.nanmin(values, axis=0))
    np.testing.assert_array_equal(stats["max"], np.nanmax(values, axis=0))
    np.testing.assert_allclose(stats["q0.05"], np.nanquantile(values, 0.05, axis=0))


def test_empty_partials_merge_to_nan_statistics() -> None:
    empty = Partial.from_values(np.empty((0, 2)))
    stats = summarize(empty.merge(empty), [0.5])
    assert stats["count"].tolist() == [0, 0]
    assert np.isnan(stats["mean"]).all() and np.isnan(stats["q0.5"]).all()


def test_single_value_has_no_standard_deviation() -> None:
    stats = summarize(Partial.from_values(np.array([[4.0]])), [])
    assert stats["mean"].tolist() == [4.0] and np.isnan(stats["std"][0])


def test_series_of_different_lengths_do_not_merge() -> None:
    with pytest.raises(ValueError, match="length 2 and 3"):
        Partial.from_values(np.ones((1, 2))).merge(Partial.from_values(np.ones((1, 3))))


def test_quantile_column_names() -> None:
    assert [quantile_column(q) for q in (0.05, 0.5, 0.95, 1.0)] == ["q0.05", "q0.5", "q0.95", "q1"]
