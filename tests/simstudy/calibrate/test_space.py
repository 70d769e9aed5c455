"""The search space: each kind of bound becomes the Optuna distribution of that kind."""

from __future__ import annotations

from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from simstudy.calibrate.space import search_space, trial_params
from simstudy.design.identity import param_id
from simstudy.design.sampling import round_significant
from simstudy.spec.sample import SampleDesign


def test_bounds_map_to_float_integer_and_categorical_distributions() -> None:
    design = SampleDesign.model_validate(
        {
            "bounds": {
                "beta": [0.1, 0.6],
                "gamma": {"low": 0.05, "high": 0.5, "log": True},
                "days": {"low": 10, "high": 1000, "integer": True, "log": True},
                "seats": {"low": 1, "high": 9, "integer": True},
                "variant": {"choices": ["alpha", "delta", "omega"]},
            }
        }
    )
    space = search_space(design)
    assert list(space) == ["beta", "gamma", "days", "seats", "variant"]
    assert space["beta"] == FloatDistribution(0.1, 0.6)
    assert space["gamma"] == FloatDistribution(0.05, 0.5, log=True)
    assert space["days"] == IntDistribution(10, 1000, log=True)
    assert space["seats"] == IntDistribution(1, 9)
    days = space["days"]
    assert isinstance(days, IntDistribution) and isinstance(days.low, int)
    assert space["variant"] == CategoricalDistribution(["alpha", "delta", "omega"])


def test_trial_floats_are_rounded_as_sampled_designs_round_them() -> None:
    raw = 0.123456789012345678
    values = trial_params({"beta": raw, "seats": 3, "flag": True, "variant": "alpha"})
    assert values == {"beta": 0.123456789012, "seats": 3, "flag": True, "variant": "alpha"}
    assert values["beta"] == float(round_significant(raw))  # type: ignore[arg-type]
    assert type(values["seats"]) is int and values["flag"] is True


def test_a_last_bit_difference_keeps_the_param_id() -> None:
    a = trial_params({"beta": 0.3})
    b = trial_params({"beta": 0.30000000000000004})
    assert param_id(a) == param_id(b)
