"""The `calibrate: {method: abc-smc}` section: validated, its prior, its identity."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pydantic import ValidationError

from simstudy.calibrate.folder import calibration_id
from simstudy.calibrate.posterior import (
    POSTERIOR_FILE,
    posterior_summary,
    study_prior,
    weighted_correlations,
)
from simstudy.calibrate.spec import PosteriorSettings
from simstudy.output.location import OutputStore
from simstudy.output.results import write_json
from simstudy.spec.study import Study


def posterior_study(
    tmp_path: Path, bounds: dict[str, Any] | None = None, **calibrate: Any
) -> Study:
    (tmp_path / "observed.csv").write_text("output,value\ntotal,52\n")
    return Study.model_validate({
        "name": "p", "model": "simstudy.models.counts:simulate", "seed": 4,
        "parameters": {"sample": {"bounds": bounds or {"rate": [0.0, 20.0]}}},
        "calibrate": {"method": "abc-smc", "population_size": 50, **calibrate},
        "targets": {"data": "observed.csv", "loss": "mse_of_mean"},
        "base_dir": str(tmp_path),
    })  # fmt: skip


def test_a_posterior_takes_one_replicate_and_the_study_seed_by_default(tmp_path: Path) -> None:
    study = posterior_study(tmp_path)
    assert isinstance(study.calibrate, PosteriorSettings)
    assert study.replicates == 1 and study.calibrate.seed == 4


def test_priors_default_to_the_bounds_and_may_be_a_scipy_distribution(tmp_path: Path) -> None:
    bounds = {"rate": [0.0, 20.0], "scale": {"low": 0.1, "high": 10.0, "log": True}}
    study = posterior_study(tmp_path, bounds, priors={"rate": {"dist": "gamma", "a": 2.0}})
    assert isinstance(study.calibrate, PosteriorSettings)
    assert study.parameters.sample is not None
    prior = study_prior(study.parameters.sample, study.calibrate).describe()
    assert prior == {"rate": {"dist": "gamma", "a": 2.0},
                     "scale": {"low": 0.1, "high": 10.0, "log": True}}  # fmt: skip


@pytest.mark.parametrize(
    ("bounds", "calibrate", "named"),
    [
        (None, {"priors": {"beta": [0, 1]}}, "calibrate.priors.beta: beta is not in"),
        (None, {"priors": {"rate": {"dist": "gamam", "a": 2}}}, "did you mean 'gamma'"),
        ({"kind": {"choices": ["a", "b"]}}, {}, "parameters.sample.bounds.kind is choices"),
        ({"n": {"low": 1, "high": 5, "integer": True}}, {}, "bounds.n is integer"),
        (None, {"population_size": 1}, "population_size"),
    ],
)
def test_what_a_posterior_cannot_take_is_refused_naming_the_field(
    tmp_path: Path, bounds: Any, calibrate: dict[str, Any], named: str
) -> None:
    with pytest.raises(ValidationError, match=named.replace(".", r"\.").replace("'", ".")):
        posterior_study(tmp_path, bounds, **calibrate)


def test_when_to_stop_is_not_part_of_a_posteriors_identity(tmp_path: Path) -> None:
    first = calibration_id(posterior_study(tmp_path, generations=3))
    assert first == calibration_id(posterior_study(tmp_path, generations=8, max_simulations=10))
    assert first != calibration_id(posterior_study(tmp_path, generations=3, epsilon_quantile=0.3))
    assert first == calibration_id(
        posterior_study(tmp_path, generations=3, predictive_replicates=5)
    )


def test_correlations_are_weighted_and_the_summary_shows_them_with_the_coverage(
    tmp_path: Path,
) -> None:
    x = np.array([0.0, 1.0, 2.0, 3.0])
    found = weighted_correlations({"a": x, "b": 2 * x, "c": np.array([1.0, 0.0, 1.0, 100.0])},
                                  np.array([1.0, 1.0, 1.0, 0.0]) / 3)  # fmt: skip
    assert found["a/b"] == pytest.approx(1.0) and found["b/c"] == found["a/c"]
    assert found["a/c"] == pytest.approx(0.0, abs=1e-9)  # c's one outlier weighs nothing
    store = OutputStore(str(tmp_path))
    write_json(store, POSTERIOR_FILE, {
        "stop_reason": "8 generations", "simulations": 10, "failures": 0, "failure_reasons": [],
        "generations": [{"epsilon": 1.0, "ess": 3.0, "acceptance_rate": 0.5}],
        "parameters": {"a": {"mean": 1.0, "sd": 0.5, "q2_5": 0.1, "q97_5": 2.0}},
        "correlations": {"a/b": 0.98},
        "predictive": {"draws": 4, "outputs": {"incidence": {"points": 100, "inside_95": 0.93}}},
    })  # fmt: skip
    shown = posterior_summary(store)
    assert "weighted correlations: a/b +0.98" in shown
    assert "predictive: 93 % of 100 observed incidence value(s) inside the 95 % band" in shown
