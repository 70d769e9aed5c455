"""Mergeable statistics agree with numpy on the pooled values, whatever the split."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from simstudy.stats.partial import (
    EXACT_REPLICATES,
    SKETCH_RANK_ERROR,
    Partial,
    quantile_column,
    summarize,
)


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


def sketch_bracket(pooled: np.ndarray, q: float) -> tuple[float, float]:
    """Return numpy's quantiles at q -/+ the documented rank error, widened to adjacent values.

    With ties t-digest interpolates between two distinct values, where numpy never does.
    """
    distinct = np.unique(pooled)
    low, high = np.quantile(pooled, [q - SKETCH_RANK_ERROR, q + SKETCH_RANK_ERROR])
    below = distinct[max(np.searchsorted(distinct, low) - 1, 0)]
    above = distinct[min(np.searchsorted(distinct, high, "right"), len(distinct) - 1)]
    return float(below), float(above)


def test_sketched_quantiles_of_a_million_values_are_within_the_documented_error() -> None:
    rng = np.random.default_rng(12)
    parts = [
        np.column_stack([rng.normal(5, 2, 2500), rng.lognormal(0, 1.5, 2500), rng.poisson(3, 2500)])
        for _ in range(400)
    ]
    merged = Partial.from_values(parts[0])
    for part in parts[1:]:
        merged = merged.merge(Partial.from_values(part))
    assert merged.sketch is not None and merged.replicates == 10**6
    stats = summarize(merged, [0.05, 0.5, 0.95])
    pooled = np.concatenate(parts)
    for t in range(3):
        column = np.sort(pooled[:, t])
        for q in (0.05, 0.5, 0.95):
            low, high = sketch_bracket(column, q)
            assert low <= stats[quantile_column(q)][t] <= high, (t, q)
    np.testing.assert_allclose(stats["mean"], pooled.mean(axis=0), rtol=1e-9)
    np.testing.assert_array_equal(stats["min"], pooled.min(axis=0))


def test_values_are_kept_exact_up_to_the_threshold_then_sketched() -> None:
    values = np.random.default_rng(4).lognormal(size=(EXACT_REPLICATES + 1, 3))
    at_threshold = Partial.from_values(values[:600]).merge(Partial.from_values(values[600:-1]))
    np.testing.assert_array_equal(at_threshold.values, values[:-1])
    np.testing.assert_array_equal(
        summarize(at_threshold, [0.5])["q0.5"], np.nanquantile(values[:-1], 0.5, axis=0)
    )
    beyond = at_threshold.merge(Partial.from_values(values[-1:]))
    assert beyond.replicates == EXACT_REPLICATES + 1 and beyond.sketch is not None
    with pytest.raises(ValueError, match="keeps quantile sketches"):
        _ = beyond.values


def test_sketched_partials_are_deterministic_small_and_survive_pickling() -> None:
    rng = np.random.default_rng(5)
    blocks = [rng.normal(size=(1200 if i == 0 else 25, 365)) for i in range(21)]

    def fold(through_pickle: bool) -> Partial:
        merged = Partial.from_values(blocks[0])
        for block in blocks[1:]:
            merged = merged.merge(Partial.from_values(block))
            if through_pickle:
                merged = pickle.loads(pickle.dumps(merged))
        return merged

    first, again, pickled = fold(False), fold(False), fold(True)
    for other in (again, pickled):
        for key, value in summarize(first, [0.05, 0.5, 0.95]).items():
            np.testing.assert_array_equal(summarize(other, [0.05, 0.5, 0.95])[key], value)
    # A 365-point series' sketches weigh ~0.6 MB whatever the replicates; the values of
    # these 1,700 replicates would weigh 5 MB.
    assert len(pickle.dumps(first)) < 800_000
    assert len(pickle.dumps(first)) < 1.1 * len(pickle.dumps(Partial.from_values(blocks[0])))


def test_sketched_partials_leave_nan_out_and_keep_infinite_values() -> None:
    values = np.random.default_rng(6).normal(size=(EXACT_REPLICATES + 100, 3))
    values[:, 0] = np.nan
    values[:10, 1] = np.nan
    values[:200, 2] = -np.inf
    stats = summarize(Partial.from_values(values), [0.1, 0.5, 1.0])
    assert stats["count"].tolist() == [0, EXACT_REPLICATES + 90, EXACT_REPLICATES + 100]
    assert np.isnan(stats["q0.5"][0]) and np.isnan(stats["mean"][0])
    low, high = sketch_bracket(np.sort(values[10:, 1]), 0.5)
    assert low <= stats["q0.5"][1] <= high
    assert stats["q0.1"][2] == -np.inf and stats["q1"][2] == np.nanmax(values[:, 2])


def test_exact_quantiles_are_numpys_nanquantile_with_nan_and_infinite_values() -> None:
    values = np.random.default_rng(5).poisson(20, size=(6, 12)).astype(float)
    values[0, 3] = np.nan  # a missing value
    values[:, 4] = np.nan  # a time point no replicate reached
    values[1, 5], values[2, 6], values[:, 7] = np.inf, -np.inf, np.inf
    quantiles = [0.05, 0.5, 0.95]
    stats = summarize(Partial.from_values(values), quantiles)
    with np.errstate(invalid="ignore"), pytest.warns(RuntimeWarning):
        expected = [np.nanquantile(values, q, axis=0) for q in quantiles]
    for q, want in zip(quantiles, expected, strict=True):
        np.testing.assert_array_equal(stats[quantile_column(q)], want)
