"""The built-in SEIR model: deterministic per seed, unbiased final size."""

from __future__ import annotations

import numpy as np
import pytest

from simstudy.models.seir import simulate


def final_size(r0: float) -> float:
    """Solve z = 1 - exp(-R0 z) by fixed-point iteration."""
    z = 0.9
    for _ in range(500):
        z = 1 - np.exp(-r0 * z)
    return z


def test_same_seed_same_epidemic() -> None:
    params = {"beta": 0.3, "gamma": 0.1, "population": 5000, "days": 60}
    a, b = simulate(params, 11), simulate(params, 11)
    assert a["attack_rate"] == b["attack_rate"]
    np.testing.assert_array_equal(a["incidence"], b["incidence"])
    assert simulate(params, 12)["attack_rate"] != a["attack_rate"]


@pytest.mark.parametrize(("beta", "gamma"), [(0.3, 0.1), (0.5, 0.2)])
def test_time_step_does_not_bias_the_epidemic_size(beta: float, gamma: float) -> None:
    params = {
        "beta": beta,
        "gamma": gamma,
        "population": 100_000,
        "initial_infected": 50,
        "days": 400,
    }
    sizes = [simulate(params, seed)["attack_rate"] for seed in range(8)]
    assert np.mean(sizes) == pytest.approx(final_size(beta / gamma), rel=0.005)


def test_outputs_are_consistent() -> None:
    out = simulate({"beta": 0.4, "gamma": 0.1, "population": 10_000, "days": 120}, 3)
    assert len(out["incidence"]) == 120
    assert out["attack_rate"] == pytest.approx((sum(out["incidence"]) + 10) / 10_000)
    assert 0 <= out["peak_day"] < 120 and out["peak_infected"] > 0
