"""The calibrate section: every invalid field is named, and a calibration study's rules."""

from __future__ import annotations

import importlib.util
import json
from typing import Any

import pytest

from simstudy.calibrate.spec import CalibrateSettings, nearest_doubling
from simstudy.design.expand import expand_parameters
from simstudy.errors import StudyError
from simstudy.spec.loading import validate_study

CALIBRATION: dict[str, Any] = {
    "name": "calibrate-demo",
    "model": "simstudy.models.seir:simulate",
    "parameters": {"sample": {"bounds": {"beta": [0.1, 0.6], "gamma": [0.05, 0.5]}}},
    "targets": {"data": "observed.csv", "loss": "poisson"},
    "calibrate": {"trials": 20, "parallel": 8, "replicates": {"min": 4, "max": 32}},
    "seed": 11,
}


def with_change(path: str, value: Any) -> dict[str, Any]:
    """Return CALIBRATION with the dotted `path` set to `value` (None removes it)."""
    document = json.loads(json.dumps(CALIBRATION))
    *parents, last = path.split(".")
    node = document
    for part in parents:
        node = node.setdefault(part, {})
    if value is None:
        node.pop(last, None)
    else:
        node[last] = value
    return document


def test_a_calibration_gets_its_replicates_and_seed_from_the_study() -> None:
    study = validate_study(CALIBRATION)
    assert study.calibrate is not None
    assert (study.replicates, study.calibrate.seed) == (32, 11)
    assert (study.calibrate.min_replicates, study.calibrate.max_replicates) == (4, 32)
    assert (study.calibrate.method, study.calibrate.sampler) == ("optuna", "tpe")


def test_a_dumped_calibration_validates_again_unchanged() -> None:
    study = validate_study(CALIBRATION)
    again = validate_study(study.model_dump(mode="json"))
    assert again == study


def test_a_number_of_replicates_is_min_and_max() -> None:
    study = validate_study(with_change("calibrate.replicates", 8))
    assert study.calibrate is not None
    assert (study.calibrate.min_replicates, study.calibrate.max_replicates) == (8, 8)
    assert study.replicates == 8


def test_a_calibration_seed_of_its_own_is_kept() -> None:
    study = validate_study(with_change("calibrate.seed", 3))
    assert study.calibrate is not None and study.calibrate.seed == 3


@pytest.mark.parametrize(
    ("path", "value", "named"),
    [
        ("calibrate.method", "hyperopt", "calibrate.method"),
        ("calibrate.sampler", "nsga", "calibrate.sampler"),
        ("calibrate.trials", 0, "calibrate.trials"),
        ("calibrate.trials", 10_001, "calibrate.trials"),
        ("calibrate.parallel", 0, "calibrate.parallel"),
        ("calibrate.replicates", 0, "calibrate.replicates"),
        ("calibrate.replicates", {"min": 0, "max": 4}, "calibrate.replicates"),
        ("calibrate.replicates", {"min": 8, "max": 4}, "max (4) is below min (8)"),
        ("calibrate.replicates", {"min": 4, "max": 50}, "must be min x 2^k: use 64"),
        ("calibrate.replicates", {"min": 3, "max": 20}, "must be min x 2^k: use 24"),
        ("calibrate.seed", -1, "calibrate.seed"),
        ("calibrate.colour", "blue", "calibrate.colour"),
        ("targets", None, "calibrate needs targets"),
        ("parameters", {"grid": {"beta": [0.1]}}, "calibrate needs parameters.sample"),
        (
            "parameters.sample",
            {"method": "sobol", "n": 8, "bounds": {"beta": [0.1, 0.6]}},
            "parameters.sample.method does not apply",
        ),
        ("parameters.sample.method", "sobol", "method is given without n"),
        ("parameters.sample.seed", 4, "parameters.sample.seed does not apply"),
        ("replicates", 10, "replicates is 10 but calibrate.replicates' max is 32"),
    ],
)
def test_invalid_calibration_field_is_named(path: str, value: Any, named: str) -> None:
    with pytest.raises(StudyError) as caught:
        validate_study(with_change(path, value))
    assert named in str(caught.value)


def test_a_calibration_of_too_many_simulations_is_refused() -> None:
    document = with_change("calibrate.trials", 10_000)
    document["calibrate"]["replicates"] = {"min": 1024, "max": 2048}
    with pytest.raises(StudyError, match="calibrate: 10,000 trials x 2,048 replicates"):
        validate_study(document)


@pytest.mark.parametrize(("sampler", "package"), [("cmaes", "cmaes"), ("gp", "torch")])
def test_a_sampler_whose_package_is_missing_is_refused(sampler: str, package: str) -> None:
    if importlib.util.find_spec(package) is not None:
        pytest.skip(f"{package} is installed")
    with pytest.raises(StudyError, match="calibrate.sampler: .*needs the Python package"):
        validate_study(with_change("calibrate.sampler", sampler))


def test_a_fixed_sampled_design_still_needs_method_and_n() -> None:
    document = with_change("calibrate", None)
    document["replicates"] = 4
    with pytest.raises(StudyError, match="parameters.sample.method and n are required"):
        validate_study(document)
    document["parameters"]["sample"]["method"] = "sobol"
    with pytest.raises(StudyError, match="method is given without n"):
        validate_study(document)


def test_a_calibration_has_no_design_to_expand() -> None:
    study = validate_study(CALIBRATION)
    with pytest.raises(StudyError, match="a calibration's parameter sets come from its trials"):
        expand_parameters(study)


def test_settings_alone_give_trials_in_flight_and_replicates() -> None:
    settings = CalibrateSettings(trials=17, parallel=16, replicates=4)
    assert (settings.parallel, settings.min_replicates, settings.max_replicates) == (16, 4, 4)
    assert settings.seed is None  # resolved by the Study


@pytest.mark.parametrize(
    ("minimum", "value", "nearest"), [(4, 50, 64), (4, 40, 32), (4, 48, 32), (3, 5, 6), (1, 3, 2)]
)
def test_the_nearest_doubling_is_suggested(minimum: int, value: int, nearest: int) -> None:
    assert nearest_doubling(minimum, value) == nearest
