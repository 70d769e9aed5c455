"""One record per replicate, and the checks a model's outputs must pass."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, Field

from simstudy.errors import SimstudyError

Status = Literal["ok", "failed", "timed_out"]
OutputValue = float | list[float]

MAX_SERIES_LENGTH = 1_000_000
"""Most points of one series output of one replicate."""

OUTPUT_NAME_PATTERN = re.compile(r"^[A-Za-z_][A-Za-z0-9_.]*$")


class OutputError(SimstudyError, ValueError):
    """A model's return value breaks the model contract."""


class AttemptResult(BaseModel):
    """What one attempt of one replicate produced."""

    status: Status = Field(description="ok, failed (error or crash) or timed_out (killed).")
    outputs: dict[str, OutputValue] = Field(default_factory=dict, description="Model outputs.")
    error: str | None = Field(default=None, description="Error message and stderr tail.")
    duration_s: float = Field(description="Wall-clock seconds of the attempt.")


class ReplicateRecord(BaseModel):
    """The final outcome of one replicate after its retries."""

    param_id: str = Field(description="Parameter set identity.")
    replicate: int = Field(description="Replicate index within the parameter set (0-based).")
    seed: int = Field(description="Seed passed to the model.")
    status: Status = Field(description="Status of the last attempt.")
    attempts: int = Field(description="Attempts made (1 + retries used).")
    duration_s: float = Field(description="Wall-clock seconds of all attempts together.")
    error: str | None = Field(default=None, description="Error of the last attempt, if any.")
    worker: str = Field(description="Dask worker (or host) that ran the replicate.")
    outputs: dict[str, OutputValue] = Field(default_factory=dict, description="Model outputs.")


RECORD_FIELDS = frozenset(ReplicateRecord.model_fields) | {"output", "t", "value"}


def normalize_outputs(raw: Any) -> dict[str, OutputValue]:
    """Return the outputs as floats and float lists, or raise `OutputError` saying why."""
    if not isinstance(raw, Mapping):
        raise OutputError(
            f"the model returned {type(raw).__name__}, expected a mapping of output name to "
            "number or 1-D sequence of numbers"
        )
    if not raw:
        raise OutputError("the model returned no outputs")
    outputs: dict[str, OutputValue] = {}
    for name, value in raw.items():
        if not isinstance(name, str) or not OUTPUT_NAME_PATTERN.fullmatch(name):
            raise OutputError(
                f"output name {name!r} is not valid: use letters, digits, '_' and '.', "
                "not starting with a digit"
            )
        if name in RECORD_FIELDS:
            raise OutputError(f"output name {name!r} is reserved for a record column; rename it")
        outputs[name] = _output_value(name, value)
    return outputs


def _output_value(name: str, value: Any) -> OutputValue:
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, int | float | np.integer | np.floating):
        return float(value)
    if isinstance(value, np.ndarray | Sequence) and not isinstance(value, str | bytes):
        _check_series_length(name, len(value))  # before a huge list is copied
        array = np.asarray(value)
        if array.ndim != 1 or array.size == 0 or not np.issubdtype(array.dtype, np.number):
            raise OutputError(
                f"output {name!r} must be a number or a non-empty 1-D sequence of numbers, "
                f"got shape {array.shape} of {array.dtype}"
            )
        _check_series_length(name, array.size)
        return array.astype(np.float64).tolist()
    raise OutputError(
        f"output {name!r} has type {type(value).__name__}; expected a number or a 1-D sequence"
    )


def _check_series_length(name: str, length: int) -> None:
    if length > MAX_SERIES_LENGTH:
        raise OutputError(
            f"output {name!r} is a series of {length:,} points, over the limit of "
            f"{MAX_SERIES_LENGTH:,} points per series: return fewer points (e.g. "
            "aggregate time steps) or split it into several outputs"
        )


def output_kinds(outputs: Mapping[str, OutputValue]) -> dict[str, str]:
    """Return each output's kind: 'scalar' or 'series'."""
    return {name: "series" if is_series(v) else "scalar" for name, v in outputs.items()}


def is_series(value: Any) -> bool:
    """Return whether an output value is a series (a list, or an array in the flow)."""
    return isinstance(value, list | np.ndarray)
