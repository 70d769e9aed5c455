"""The model contract on return values: names, kinds and sizes of outputs."""

from __future__ import annotations

import numpy as np
import pytest

from simstudy.run.records import MAX_SERIES_LENGTH, OutputError, normalize_outputs, output_kinds


def test_numbers_and_sequences_become_floats_and_float_lists() -> None:
    outputs = normalize_outputs({"a": 1, "b": True, "s": np.arange(3), "l": [1, 2.5]})
    assert outputs == {"a": 1.0, "b": 1.0, "s": [0.0, 1.0, 2.0], "l": [1.0, 2.5]}
    assert output_kinds(outputs) == {"a": "scalar", "b": "scalar", "s": "series", "l": "series"}


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ([1.0], "expected a mapping"),
        ({}, "no outputs"),
        ({"1x": 1.0}, "is not valid"),
        ({"seed": 1.0}, "reserved"),
        ({"s": [[1.0, 2.0]]}, "1-D sequence"),
        ({"s": []}, "non-empty"),
        ({"s": "text"}, "has type str"),
    ],
)
def test_outputs_that_break_the_contract_are_named(raw: object, expected: str) -> None:
    with pytest.raises(OutputError, match=expected):
        normalize_outputs(raw)


def test_a_series_at_the_length_limit_is_kept() -> None:
    outputs = normalize_outputs({"s": np.zeros(MAX_SERIES_LENGTH)})
    assert len(outputs["s"]) == MAX_SERIES_LENGTH


@pytest.mark.parametrize("container", [np.zeros, lambda n: [0.0] * n])
def test_a_series_over_the_length_limit_names_the_output_and_the_limit(container) -> None:
    with pytest.raises(OutputError) as raised:
        normalize_outputs({"x": 1.0, "incidence": container(MAX_SERIES_LENGTH + 1)})
    message = str(raised.value)
    assert "'incidence'" in message
    assert f"{MAX_SERIES_LENGTH + 1:,} points" in message
    assert f"limit of {MAX_SERIES_LENGTH:,}" in message
