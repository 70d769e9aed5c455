"""Flow parameters: a study file or model, plus validated overrides."""

from __future__ import annotations

from pathlib import Path

import pytest

from flows.study import resolve_study
from simstudy.errors import StudyError

EXAMPLE = str(Path(__file__).parents[2] / "examples" / "seir.yaml")


def test_overrides_replace_fields_and_merge_execution() -> None:
    study = resolve_study(
        EXAMPLE, None, {"replicates": 5, "seed": 9, "execution": {"retries": 0}, "output": None}
    )
    assert (study.replicates, study.seed, study.output) == (5, 9, None)
    assert study.execution.retries == 0
    assert study.execution.timeout_seconds == 60  # kept from the study file
    assert Path(study.base_dir) == Path(EXAMPLE).parent


def test_invalid_override_names_the_field() -> None:
    with pytest.raises(StudyError, match="replicates: Input should be greater than or equal to 1"):
        resolve_study(EXAMPLE, None, {"replicates": 0})


def test_exactly_one_study_source() -> None:
    with pytest.raises(StudyError, match="exactly one of study_path or study"):
        resolve_study(None, None)
