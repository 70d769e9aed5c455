"""The engine's listeners: a failure is logged and the study goes on, but a full disk stops it."""

from __future__ import annotations

import logging
from functools import partial

import pytest

from flows.orchestrator import notify
from simstudy.errors import StorageError


def publish(what: str, *, to: str) -> None:
    raise ConnectionError(f"cannot send {what} to {to}")


def write_part(name: str) -> None:
    raise StorageError(f"cannot write {name}: No space left on device")


def test_a_failing_listener_is_named_with_its_error_and_the_study_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING):
        notify(partial(publish, to="the API"), "progress")
    assert (
        "publish failed (ConnectionError: cannot send progress to the API); the study goes on"
        in caplog.text
    )


def test_a_storage_error_stops_the_study() -> None:
    with pytest.raises(StorageError, match="No space left on device"):
        notify(write_part, "_parts/part-000.parquet")
