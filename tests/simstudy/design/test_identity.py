"""Parameter ids and replicate seeds: pinned golden values and canonicalisation rules."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from simstudy.design.identity import ParameterValueError, canonical_json, param_id, replicate_seed

GOLDEN_PARAMS = {"population": 100000, "gamma": 0.1, "beta": 0.3}
GOLDEN_JSON = '{"beta":0.3,"gamma":0.1,"population":100000}'
GOLDEN_ID = "a79b0d46abd38b3b48a7802aed9e13bae91f683ee2477e5a9b6db2271a75f939"
GOLDEN_SEEDS = [6786560636320847119, 1109485743750782183, 7382012569259927904]


def test_param_id_golden_value() -> None:
    assert canonical_json(GOLDEN_PARAMS) == GOLDEN_JSON
    assert param_id(GOLDEN_PARAMS) == GOLDEN_ID
    assert hashlib.blake2b(GOLDEN_JSON.encode(), digest_size=32).hexdigest() == GOLDEN_ID


def test_replicate_seed_golden_values() -> None:
    assert [replicate_seed(20261127, GOLDEN_ID, r) for r in range(3)] == GOLDEN_SEEDS


def test_seeds_come_from_seed_sequence_spawn_keys() -> None:
    words = tuple(int(GOLDEN_ID[i : i + 8], 16) for i in range(0, 64, 8))
    expected = np.random.SeedSequence(20261127, spawn_key=(*words, 2)).generate_state(1, np.uint64)[
        0
    ]
    assert replicate_seed(20261127, GOLDEN_ID, 2) == int(expected) >> 1


def test_seeds_are_not_consecutive_and_fit_int64() -> None:
    seeds = [replicate_seed(1, GOLDEN_ID, r) for r in range(1000)]
    assert len(set(seeds)) == 1000
    assert all(0 <= s < 2**63 for s in seeds)
    assert not any(b - a == 1 for a, b in zip(seeds, seeds[1:], strict=False))


def test_key_order_does_not_matter() -> None:
    assert param_id({"a": 1, "b": 2}) == param_id({"b": 2, "a": 1})


@pytest.mark.parametrize(("left", "right"), [(1, 1.0), (0.0, -0.0), (2, 2.0), (1e20, 10**20)])
def test_equal_numbers_give_equal_ids(left: float, right: float) -> None:
    assert param_id({"x": left}) == param_id({"x": right})


def test_bool_string_and_number_are_distinct() -> None:
    ids = {param_id({"x": v}) for v in (True, 1, "1", 1.5)}
    assert len(ids) == 4


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_values_are_rejected_by_name(bad: float) -> None:
    with pytest.raises(ParameterValueError, match="parameter 'beta'"):
        param_id({"beta": bad})


def test_id_is_never_truncated() -> None:
    assert len(param_id({"a": 1})) == 64
