"""The thread runner and the retry loop shared by all runners."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from simstudy.run.runners import run_replicate
from simstudy.run.runners.thread import ThreadRunner
from tests.conftest import FAULTY_MODEL
from tests.support.faulty import FAULTS_ENV


def test_thread_runner_returns_outputs_and_errors() -> None:
    runner = ThreadRunner(FAULTY_MODEL)
    assert runner.attempt({"a": 3.0}, 1, 1, "x").outputs["y"] == 6.0
    failed = runner.attempt({"behavior": "raise"}, 1, 1, "x")
    assert failed.status == "failed"
    assert "model failed on purpose" in (failed.error or "")
    bad = runner.attempt({"behavior": "bad_output"}, 1, 1, "x")
    assert "reserved" in (bad.error or "")


def test_retry_succeeds_on_the_second_attempt(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    faults = tmp_path / "faults.json"
    faults.write_text(json.dumps({"42": "raise_once"}))
    monkeypatch.setenv(FAULTS_ENV, str(faults))
    record = run_replicate(
        ThreadRunner(FAULTY_MODEL), param_id="p" * 64, params={}, replicate=3, seed=42,
        timeout_seconds=5, retries=2, retry_delay_seconds=0, worker="w",
    )  # fmt: skip
    assert (record.status, record.attempts, record.error) == ("ok", 2, None)


def test_retries_are_bounded() -> None:
    record = run_replicate(
        ThreadRunner(FAULTY_MODEL), param_id="p" * 64, params={"behavior": "raise"}, replicate=0,
        seed=1, timeout_seconds=5, retries=2, retry_delay_seconds=0, worker="w",
    )  # fmt: skip
    assert (record.status, record.attempts) == ("failed", 3)
