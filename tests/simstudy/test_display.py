"""How numbers, parameters and spreads are shown."""

from __future__ import annotations

import math

import pytest

from simstudy.display import Spread, format_number, format_parameters, split_parameters


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        (0.32116600000000006, "0.3212"),
        (177.01999999999998, "177"),
        (101823.4, "1.018e+05"),
        (-0.0, "0"),
        (1e-7, "1e-07"),
        (math.nan, "nan"),
        (math.inf, "inf"),
        (None, "-"),
        (True, "True"),
        (123456789, "123456789"),
        ("fast", "fast"),
    ],
)
def test_numbers_are_shown_to_four_significant_digits(value: object, shown: str) -> None:
    assert format_number(value) == shown


def test_only_parameters_that_differ_are_varied() -> None:
    sets = [
        {"beta": 0.1, "gamma": 0.2, "flag": 1},
        {"beta": 0.30000000000000004, "gamma": 0.2, "flag": 1.0},
    ]
    varied, fixed = split_parameters(sets)
    assert varied == ["beta", "flag"]  # 1 and 1.0 are different inputs to a model
    assert fixed == {"gamma": 0.2}
    assert format_parameters(sets[1], varied) == "beta=0.3, flag=1"


def test_a_parameter_missing_from_a_set_is_varied() -> None:
    assert split_parameters([{"a": 1, "b": 2}, {"a": 1}]) == (["b"], {"a": 1})


def test_the_quantile_band_is_used_when_both_quantiles_exist() -> None:
    row = {"mean": 0.5, "std": 0.1, "n_ok": 100, "q0.05": 0.30000000000000004, "q0.95": 0.7}
    spread = Spread.for_rows([row])
    assert spread.label == "5-95% of replicates"
    assert spread.format(row) == "[0.3, 0.7]"


def test_without_both_quantiles_a_confidence_interval_of_the_mean_is_used() -> None:
    row = {"mean": 10.0, "std": 2.0, "n_ok": 16, "q0.5": 10.0}
    spread = Spread.for_rows([row])
    assert spread.label == "95% CI of mean"
    lower, upper = spread.bounds(row) or (0, 0)
    assert lower == pytest.approx(10 - 1.96 * 0.5, abs=1e-3)
    assert upper == pytest.approx(10 + 1.96 * 0.5, abs=1e-3)
    assert spread.format(row) == "[9.02, 10.98]"


@pytest.mark.parametrize(
    "row",
    [
        {"mean": 1.0, "std": math.nan, "n_ok": 1},
        {"mean": 1.0, "std": 0.5, "n_ok": 1},
        {"mean": None, "std": None, "n_ok": 0},
    ],
)
def test_no_interval_from_fewer_than_two_replicates(row: dict[str, object]) -> None:
    assert Spread(quantile_band=False).format(row) == "-"
    assert Spread(quantile_band=False).format(None) == "-"
