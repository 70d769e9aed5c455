"""Sampled designs: deterministic, within bounds, sized without sampling, clear errors."""

from __future__ import annotations

import math
import re
from typing import Any

import numpy as np
import pytest
from pydantic import ValidationError

from simstudy.design.identity import param_id
from simstudy.design.sampling import discrepancy, round_significant, sample_rows, unit_sample
from simstudy.errors import StudyError
from simstudy.spec.loading import validate_study
from simstudy.spec.sample import SampleDesign


def design(**fields: Any) -> SampleDesign:
    document: dict[str, Any] = {"method": "sobol", "n": 16, "bounds": {"beta": [0.1, 0.6]}}
    document.update(fields)
    return SampleDesign.model_validate(document)


def study(sample: dict[str, Any], **fields: Any) -> Any:
    document: dict[str, Any] = {
        "name": "s",
        "model": "simstudy.models.seir:simulate",
        "parameters": {"sample": sample},
        "replicates": 2,
        "seed": 7,
    }
    document.update(fields)
    return validate_study(document)


MIXED = {
    "beta": [0.1, 0.6],
    "population": {"low": 1000, "high": 100000, "log": True, "integer": True},
    "days": {"low": 10, "high": 12, "integer": True},
    "scale": {"low": 0.001, "high": 10.0, "log": True},
    "contact": {"choices": ["home", "school", "work"]},
}


@pytest.mark.parametrize("method", ["random", "lhs", "sobol", "halton", "saltelli"])
def test_the_same_design_and_seed_give_the_same_rows_and_another_seed_others(method: str) -> None:
    sampled = design(method=method, bounds=MIXED)
    first = sample_rows(sampled, seed=3)
    assert first == sample_rows(sampled, seed=3)
    assert first != sample_rows(sampled, seed=4)


@pytest.mark.parametrize(
    ("method", "extra", "expected"),
    [
        ("random", {}, 16),
        ("lhs", {}, 16),
        ("sobol", {}, 16),
        ("halton", {}, 16),
        ("saltelli", {}, 16 * (3 + 2)),
        ("saltelli", {"second_order": True}, 16 * (2 * 3 + 2)),
        ("morris", {}, 16 * (3 + 1)),
    ],
)
def test_the_size_is_known_without_sampling_and_matches_the_sample(
    method: str, extra: dict[str, Any], expected: int
) -> None:
    bounds = {"a": [0, 1], "b": [0, 1], "c": {"low": 1, "high": 5, "integer": True}}
    sampled = design(method=method, bounds=bounds, **extra)
    assert sampled.size() == expected
    assert unit_sample(sampled, seed=1).shape == (expected, 3)
    assert str(expected) in sampled.size_rule()


def test_values_stay_within_bounds_with_their_kind() -> None:
    rows = sample_rows(design(method="lhs", n=300, bounds=MIXED), seed=1)
    betas = [r["beta"] for r in rows]
    assert all(0.1 <= b <= 0.6 and isinstance(b, float) for b in betas)
    populations = [r["population"] for r in rows]
    assert all(type(p) is int and 1000 <= p <= 100000 for p in populations)
    # log-uniform: the median sits near the geometric mean, not the midpoint (50,500)
    assert 5000 < np.median(populations) < 20000
    assert {r["days"] for r in rows} == {10, 11, 12}  # both bounds included
    assert {r["contact"] for r in rows} == {"home", "school", "work"}
    scales = [r["scale"] for r in rows]
    assert all(0.001 <= s <= 10.0 for s in scales)


def test_morris_grid_points_reach_both_bounds() -> None:
    bounds = {"a": [2.0, 4.0], "k": {"low": 1, "high": 3, "integer": True}}
    rows = sample_rows(design(method="morris", n=20, bounds=bounds), seed=1)
    levels = round_significant(np.array([2.0, 2.0 + 2 / 3, 2.0 + 4 / 3, 4.0])).tolist()
    assert {r["a"] for r in rows} == set(levels)  # 4 levels: both bounds and two between
    assert {r["k"] for r in rows} == {1, 2, 3}


def test_sampled_floats_keep_twelve_significant_digits() -> None:
    rows = sample_rows(design(method="random", n=50, bounds=MIXED), seed=1)
    floats = [r[name] for r in rows for name in ("beta", "scale")]
    assert all(float(f"{v:.12g}") == v for v in floats)
    assert round_significant(np.array([0.0, -123.4567890123456])).tolist() == [0.0, -123.456789012]


def test_a_sampled_parameter_set_id_is_pinned() -> None:
    # The same study file must give the same ids on any machine: a change of sampler,
    # transform or rounding shows here first.
    row = sample_rows(design(method="sobol", n=4, bounds={"beta": [0.1, 0.6]}), seed=1)[0]
    assert row == {"beta": 0.24308458101}
    assert param_id(row) == "11198d4017c5c3a46d5c745d6bcc59a8c6deb9190e4e70beece5b0fbe612692c"


def test_space_filling_designs_report_their_discrepancy() -> None:
    bounds = {"a": [0, 1], "b": [0, 1]}
    sobol = design(method="sobol", n=256, bounds=bounds)
    random = design(method="random", n=256, bounds=bounds)
    low = discrepancy(sobol, unit_sample(sobol, seed=1))
    high = discrepancy(random, unit_sample(random, seed=1))
    assert low is not None and high is not None and low < high
    saltelli = design(method="saltelli", n=8, bounds=bounds)
    assert discrepancy(saltelli, unit_sample(saltelli, seed=1)) is None


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"n": 60}, "n is 60, but sobol needs a power of two: use 32 or 64"),
        ({"method": "saltelli", "n": 100}, "use 64 or 128"),
        ({"bounds": {"beta": [0.6, 0.1]}}, "bounds.beta: low (0.6) must be below high (0.1)"),
        ({"bounds": {"b": {"low": 0, "high": 1, "log": True}}}, "bounds.b: log needs low > 0"),
        (
            {"bounds": {"b": [-1e308, 1e308]}},
            "bounds.b: high - low (1e+308 - -1e+308) is beyond the largest float",
        ),
        (
            {"bounds": {"k": {"low": 1.5, "high": 4, "integer": True}}},
            "bounds.k: integer needs whole-number bounds (got low=1.5)",
        ),
        (
            {"method": "morris", "bounds": {"c": {"choices": ["a", "b"]}}},
            "bounds.c is categorical (choices), which morris cannot vary",
        ),
        ({"second_order": True}, "second_order applies to saltelli only, not sobol"),
        ({"levels": 6}, "levels applies to morris only"),
        ({"method": "morris", "levels": 5}, "morris needs an even number of levels"),
        ({"bounds": {"c": {"choices": ["a", "a"]}}}, "choice 'a' appears more than once"),
        ({"bounds": {"c": {"choices": ["a"]}}}, "at least 2"),
        ({"bounds": {"c": {"choices": [True, 1, 1.0]}}}, "choice 1.0 appears more than once"),
        ({"bounds": {"b": [0.1, 0.2, 0.3]}}, "bounds.b"),
        ({"bounds": {}}, "at least 1"),
        ({"method": "grid"}, "method"),
    ],
)
def test_invalid_designs_are_refused_naming_the_field(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=re.escape(message)):
        design(**fields)


def test_sampled_names_are_checked_and_may_not_be_fixed_as_well() -> None:
    with pytest.raises(StudyError, match=r"parameters.sample.bounds and fixed both set \['beta'\]"):
        study({"method": "sobol", "n": 4, "bounds": {"beta": [0, 1]}}, fixed={"beta": 0.2})
    with pytest.raises(StudyError, match="parameter name 'output' is reserved"):
        study({"method": "sobol", "n": 4, "bounds": {"output": [0, 1]}})


def test_exactly_one_design_is_given() -> None:
    with pytest.raises(StudyError, match="got grid, sample"):
        validate_study(
            {
                "name": "s",
                "model": "simstudy.models.seir:simulate",
                "parameters": {
                    "grid": {"a": [1]},
                    "sample": {"method": "sobol", "n": 4, "bounds": {"b": [0, 1]}},
                },
                "replicates": 1,
                "seed": 1,
            }
        )


def test_log_integers_are_spread_by_magnitude() -> None:
    bounds = {"k": {"low": 1, "high": 1000, "log": True, "integer": True}}
    rows = sample_rows(design(method="sobol", n=1024, bounds=bounds), seed=2)
    counts = np.bincount([int(math.log10(r["k"])) for r in rows if r["k"] < 1000])
    # about a third of the draws in each decade 1-9, 10-99, 100-999
    assert all(abs(c / 1024 - 1 / 3) < 0.05 for c in counts)


@pytest.mark.parametrize("method", ["lhs", "saltelli", "morris"])
def test_a_dumped_study_validates_again(method: str) -> None:
    # A study travels as a Prefect flow parameter: dumped with every default, then validated.
    sample = {"method": method, "n": 4, "bounds": MIXED if method != "morris" else {"a": [0, 1]}}
    original = study(sample)
    assert type(original).model_validate_json(original.model_dump_json()) == original
    assert type(original).model_validate(original.model_dump(mode="json")) == original


@pytest.mark.parametrize("choices", [[1, "a"], [True, 2], ["x", False]])
def test_choices_of_mixed_types_are_refused(choices: list[Any]) -> None:
    with pytest.raises(ValidationError, match="give choices of one type"):
        SampleDesign.model_validate(
            {"method": "random", "n": 4, "bounds": {"k": {"choices": choices}}}
        )
