"""Text values are labels: long ones are refused naming the field, before anything is decoded."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from simstudy.design.expand import expand_parameters
from simstudy.errors import StudyError
from simstudy.run.records import OutputError, normalize_outputs
from simstudy.spec.loading import load_study
from simstudy.spec.text import MAX_TEXT_VALUE_CHARS

LONG = "x" * (MAX_TEXT_VALUE_CHARS + 1)


def study_file(tmp_path: Path, **overrides: Any) -> Path:
    document = {
        "name": "text", "model": "simstudy.models.seir:simulate",
        "parameters": {"grid": {"beta": [0.1, 0.2]}}, "replicates": 1, "seed": 1,
        **overrides,
    }  # fmt: skip
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


def refusal(path: Path) -> str:
    with pytest.raises(StudyError) as caught:
        expand_parameters(load_study(str(path)))
    return str(caught.value)


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"fixed": {"note": LONG}}, "fixed.note"),
        ({"parameters": {"grid": {"beta": [0.1, LONG]}}}, "parameters.grid.beta.1"),
        ({"parameters": {"list": [{"beta": LONG}]}}, "parameters.list.0.beta"),
    ],
)
def test_a_long_text_in_the_study_file_is_one_error_naming_its_field(
    tmp_path: Path, overrides: dict[str, Any], field: str
) -> None:
    text = refusal(study_file(tmp_path, **overrides))
    assert f"{field}: a text value of {len(LONG):,} characters, more than 1,000" in text
    assert "put long data in a file and give its path" in text
    assert "valid boolean" not in text  # not one error per type the value is not


def test_a_long_text_in_a_parameter_file_is_refused_before_it_is_decoded(tmp_path: Path) -> None:
    # 100 kB repeated 2,000 times: a 16 kB file, 200 MB of text once decoded.
    table = pa.table({"beta": [0.1] * 2000, "label": pa.array(["y" * 100_000] * 2000)})
    pq.write_table(table.set_column(1, "label", table.column("label").dictionary_encode()),
                   tmp_path / "sets.parquet")  # fmt: skip
    (tmp_path / "sets.csv").write_text(f"beta,label\n0.1,{LONG}\n")
    for name in ("sets.parquet", "sets.csv"):
        text = refusal(study_file(tmp_path, parameters={"file": name}))
        assert "column 'label' holds a text of" in text and "more than 1,000" in text


@pytest.mark.parametrize(
    "overrides",
    [
        {"name": "text\n"},
        {"model": "simstudy.models.seir:simulate\n"},
        {"parameters": {"grid": {"beta\n": [0.1]}}},
    ],
)
def test_a_name_with_a_trailing_newline_is_refused(tmp_path: Path, overrides: dict) -> None:
    with pytest.raises(StudyError):
        expand_parameters(load_study(str(study_file(tmp_path, **overrides))))


def test_an_output_name_with_a_trailing_newline_is_refused() -> None:
    with pytest.raises(OutputError):
        normalize_outputs({"x\n": 1.0})
