"""Error messages: they name the field and the fix, never dump what a file holds."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from simstudy.errors import SHOWN_VALUE_CHARS, StudyError
from simstudy.spec.loading import load_study, validate_study

SECRET = "hunter2-correct-horse-battery-staple"


def study_document(**fields: Any) -> dict[str, Any]:
    return {
        "name": "demo",
        "model": "simstudy.models.seir:simulate",
        "parameters": {"grid": {"beta": [0.2]}},
        "replicates": 1,
        "seed": 1,
        **fields,
    }


def problems_of(document: dict[str, Any]) -> str:
    with pytest.raises(StudyError) as caught:
        validate_study(document)
    return str(caught.value)


def test_a_secrets_file_given_as_study_names_its_keys_never_their_values(
    tmp_path: Path,
) -> None:
    secrets = tmp_path / "secrets.json"
    secrets.write_text(json.dumps({"db_password": SECRET, "api": {"token": SECRET}}))
    with pytest.raises(StudyError) as caught:
        load_study(secrets)
    message = str(caught.value)
    assert "db_password: Extra inputs are not permitted" in message
    assert "api: Extra inputs are not permitted" in message
    assert "name: Field required" in message
    assert "hunter2" not in message


def test_a_field_outside_the_schema_is_named_without_its_value() -> None:
    message = problems_of(study_document(execution={"runner": "process", "colour": SECRET}))
    assert "execution.colour: Extra inputs are not permitted\n" in message + "\n"
    assert SECRET not in message


def test_a_wrong_value_of_a_known_field_is_shown_to_help_fix_it() -> None:
    message = problems_of(study_document(replicates="many"))
    assert "replicates: Input should be a valid integer" in message
    assert "(got 'many')" in message


def test_a_long_value_is_cut_so_a_file_cannot_be_dumped() -> None:
    content = "line of a private file\n" * 1000
    message = problems_of(study_document(seed=content))
    assert "seed: Input should be a valid integer" in message
    shown = message.split("(got ", 1)[1]
    assert shown.startswith(repr(content)[: SHOWN_VALUE_CHARS - 3] + "...")
    assert f"({len(repr(content)):,} characters)" in shown
    assert message.count("line of a private file") <= 3
