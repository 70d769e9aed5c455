"""Replicate noise against the spread between parameter sets, by hand."""

from __future__ import annotations

import pyarrow as pa
import pytest

from simstudy.analysis.variance import VARIANCE_SCHEMA, replicate_variance_share


def test_between_and_within_variances_match_a_hand_computation() -> None:
    table = pa.table(
        {
            "param_id": ["a", "b", "c", "a"],
            "output": ["y", "y", "y", "z"],
            "n_ok": [2, 4, 0, 3],
            "mean": [0.0, 3.0, None, 5.0],  # set c failed: it weighs nothing
            "std": [1.0, 2.0, None, 0.5],
        }
    )
    result = {row["output"]: row for row in replicate_variance_share(table).to_pylist()}
    # y: grand mean (2*0 + 4*3)/6 = 2; between (2*4 + 4*1)/6 = 2; within (1*1 + 3*4)/4
    assert result["y"]["between_sets_variance"] == pytest.approx(2.0)
    assert result["y"]["within_sets_variance"] == pytest.approx(3.25)
    assert result["y"]["within_share"] == pytest.approx(3.25 / 5.25)
    # z: one set, no spread between sets: all the variance is replicate noise
    assert result["z"]["between_sets_variance"] == 0.0
    assert result["z"]["within_share"] == 1.0


def test_single_replicates_and_constant_outputs_give_nulls_not_nan() -> None:
    table = pa.table(
        {
            "param_id": ["a", "b", "a", "b"],
            "output": ["one", "one", "flat", "flat"],
            "n_ok": [1, 1, 3, 3],
            "mean": [1.0, 2.0, 4.0, 4.0],
            "std": [None, None, 0.0, 0.0],
        }
    )
    result = replicate_variance_share(table)
    assert result.schema == VARIANCE_SCHEMA
    rows = {row["output"]: row for row in result.to_pylist()}
    assert rows["one"] == {
        "output": "one",
        "between_sets_variance": 0.25,
        "within_sets_variance": None,  # no set has two replicates
        "within_share": None,
    }
    assert rows["flat"]["within_share"] is None  # 0 / 0: nothing varies
