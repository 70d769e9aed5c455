"""Priors: bounds and scipy.stats distributions, refused with a clear reason when unbuildable."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
import scipy.stats
from pydantic import BaseModel, ValidationError

from simstudy.calibrate.priors import Prior, PriorSpec
from simstudy.errors import validation_problems


class Calibrate(BaseModel):
    """A stand-in for the study file's calibrate section, so errors carry its path."""

    priors: dict[str, PriorSpec]


def problems(priors: dict[str, Any]) -> list[str]:
    try:
        Calibrate.model_validate({"priors": priors})
    except ValidationError as exc:
        return validation_problems(exc)
    return []


@pytest.mark.parametrize(
    ("prior", "expected"),
    [
        (
            {"dist": "gama", "a": 2.0},
            "scipy.stats has no distribution 'gama' (did you mean 'gamma'?)",
        ),
        ({"dist": "gamma", "a": -2.0}, "scipy.stats.gamma(a=-2.0) is not a distribution"),
        ({"dist": "norm", "scale": 0}, "scipy.stats.norm(scale=0) is not a distribution"),
        ({"dist": "gamma", "shape": 2.0}, "no parameter shape; missing a (it takes a, loc, scale)"),
        ({"dist": "beta", "a": 2.0}, "missing b (it takes a, b, loc, scale)"),
        ({"dist": "gamma", "a": "two"}, "gamma parameter a is 'two': give a number"),
        ({"dist": "gamma", "a": True}, "gamma parameter a is True: give a number"),
        ({"dist": "poisson", "mu": 3.0}, "scipy.stats.poisson is discrete"),
        (
            {"dist": "norm", "low": 0.0},
            "low belongs to a prior given by bounds, not to dist 'norm'",
        ),
        ([1.0, 0.5], "low (1.0) is not below high (0.5)"),
        ([0.0, 1.0, 2.0], "bounds are [low, high], got 3 values"),
        ({"low": 0.0, "high": 1.0, "log": True}, "log-uniform needs low > 0"),
        ({"low": 0.1, "hihg": 1.0}, "hihg: not a field of a prior given by bounds"),
        ({"high": 1.0}, "give [low, high], {low, high, log}, or {dist, <parameters>}"),
    ],
)
def test_a_prior_scipy_cannot_build_is_refused_naming_the_parameter_and_why(
    prior: Any, expected: str
) -> None:
    found = problems({"beta": prior})
    assert len(found) == 1
    assert found[0].startswith("priors.beta: ")
    assert expected in found[0]


def test_priors_given_three_ways_build_their_scipy_distributions() -> None:
    prior = Prior.from_mapping({
        "beta": [0.1, 0.6],
        "gamma": {"low": 0.05, "high": 0.5, "log": True},
        "delay": {"dist": "gamma", "a": 2.0, "scale": 0.5},
    })  # fmt: skip
    assert prior.names == ["beta", "gamma", "delay"]
    np.testing.assert_array_equal(prior.low, [0.1, 0.05, 0.0])
    np.testing.assert_array_equal(prior.high, [0.6, 0.5, math.inf])
    point = np.array([0.3, 0.1, 1.5])
    expected = (
        scipy.stats.uniform(0.1, 0.5).logpdf(0.3)
        + scipy.stats.loguniform(0.05, 0.5).logpdf(0.1)
        + scipy.stats.gamma(a=2.0, scale=0.5).logpdf(1.5)
    )
    assert prior.logpdf(point)[0] == pytest.approx(expected)
    assert prior.describe()["delay"] == {"dist": "gamma", "a": 2.0, "scale": 0.5}


def test_log_uniform_samples_are_uniform_in_log_within_the_bounds() -> None:
    prior = Prior.from_mapping({"rate": {"low": 0.01, "high": 100.0, "log": True}})
    draws = prior.sample(np.random.default_rng(3), 20_000)[:, 0]
    assert draws.min() >= 0.01 and draws.max() <= 100.0
    logs = (np.log(draws) - np.log(0.01)) / (np.log(100.0) - np.log(0.01))
    assert scipy.stats.kstest(logs, "uniform").pvalue > 0.01
    assert np.mean(draws < 1.0) == pytest.approx(0.5, abs=0.02)  # the geometric midpoint
    density = prior.logpdf(np.array([[0.5], [5.0]]))
    np.testing.assert_allclose(density, -np.log([0.5, 5.0]) - np.log(np.log(1e4)))


def test_density_is_zero_outside_the_support_and_samples_stay_inside() -> None:
    prior = Prior.from_mapping({"p": [0.0, 1.0], "rate": {"dist": "gamma", "a": 2.0}})
    rows = np.array([[0.5, 1.0], [1.5, 1.0], [0.5, -1.0]])
    density = prior.logpdf(rows)
    assert np.isfinite(density[0]) and np.all(density[1:] == -np.inf)
    np.testing.assert_array_equal(prior.inside(rows), [True, False, False])
    assert prior.inside(prior.sample(np.random.default_rng(0), 1_000)).all()


def test_sampling_is_reproducible_from_the_generator() -> None:
    prior = Prior.from_mapping({"a": [0.0, 1.0], "b": {"dist": "norm", "loc": 2.0}})
    first = prior.sample(np.random.default_rng(9), 5)
    assert first.shape == (5, 2)
    np.testing.assert_array_equal(first, prior.sample(np.random.default_rng(9), 5))


def test_a_prior_needs_a_parameter() -> None:
    with pytest.raises(ValueError, match="at least one parameter"):
        Prior({})
