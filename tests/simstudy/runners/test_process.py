"""The process runner: warm children, hard timeouts, crashes as failed replicates."""

from __future__ import annotations

import multiprocessing
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from simstudy.runners.process import ProcessRunner
from tests.conftest import FAULTY_MODEL

pytestmark = [pytest.mark.timeout(60), pytest.mark.usefixtures("no_leftover_processes")]


@pytest.fixture
def runner(tmp_path: Path):
    runner = ProcessRunner(FAULTY_MODEL, tmp_path / "logs")
    yield runner
    runner.close()


def test_ok_replicate_returns_outputs(runner: ProcessRunner) -> None:
    result = runner.attempt({"a": 2.0}, 1234, 10, "x")
    assert result.status == "ok"
    assert result.outputs == {
        "x": 0.234,
        "y": 4.0,
        "series": [2.0 * t + 1234 % 7 for t in range(5)],
    }


def test_children_stay_warm_across_replicates(runner: ProcessRunner) -> None:
    runner.attempt({}, 1, 10, "x")
    first = runner._idle[0].process.pid
    runner.attempt({}, 2, 10, "x")
    assert runner._idle[0].process.pid == first


def test_hanging_replicate_is_killed_within_timeout_plus_two_seconds(runner: ProcessRunner) -> None:
    started = time.monotonic()
    result = runner.attempt({"behavior": "hang"}, 1, 1.0, "x")
    assert result.status == "timed_out"
    assert time.monotonic() - started < 3.0
    assert "process group was killed" in (result.error or "")
    assert runner.attempt({}, 1, 10, "x").status == "ok"  # a fresh child took over


def test_timeout_kills_grandchildren_too(runner: ProcessRunner) -> None:
    before = {p.pid for p in psutil.Process().children(recursive=True)}
    result = runner.attempt({"behavior": "spawn_and_hang"}, 1, 2.0, "x")
    assert result.status == "timed_out"
    time.sleep(0.5)
    alive = [
        p
        for p in psutil.Process().children(recursive=True)
        if p.pid not in before and p.status() != psutil.STATUS_ZOMBIE
    ]
    assert alive == []


def test_ten_megabytes_of_stderr_do_not_block(runner: ProcessRunner, tmp_path: Path) -> None:
    result = runner.attempt({"behavior": "stderr_flood"}, 1, 20, "x")
    assert result.status == "ok"
    logs = list((tmp_path / "logs").glob("process-*.stderr.log"))
    assert sum(p.stat().st_size for p in logs) > 10 * 1024 * 1024


def test_model_prints_cannot_corrupt_the_protocol(runner: ProcessRunner) -> None:
    assert runner.attempt({"behavior": "stdout_flood"}, 1, 20, "x").status == "ok"


def test_exit_is_a_failed_replicate_with_code_and_stderr_tail(runner: ProcessRunner) -> None:
    result = runner.attempt({"behavior": "exit"}, 1, 10, "x")
    assert result.status == "failed"
    assert "exited with code 3" in (result.error or "")
    assert "about to exit" in (result.error or "")


def test_segfault_is_a_failed_replicate_with_signal(runner: ProcessRunner) -> None:
    result = runner.attempt({"behavior": "segfault"}, 1, 10, "x")
    assert result.status == "failed"
    assert "SIGSEGV (exit code 139)" in (result.error or "")
    assert runner.attempt({}, 1, 10, "x").status == "ok"


def test_exception_is_reported_with_its_message(runner: ProcessRunner) -> None:
    result = runner.attempt({"behavior": "raise"}, 5, 10, "x")
    assert result.status == "failed"
    assert "RuntimeError: model failed on purpose (seed 5)" in (result.error or "")


@pytest.mark.parametrize(
    ("behavior", "message"),
    [("bad_output", "output name 'seed' is reserved"), ("not_a_mapping", "returned list")],
)
def test_wrong_outputs_fail_the_replicate(
    runner: ProcessRunner, behavior: str, message: str
) -> None:
    result = runner.attempt({"behavior": behavior}, 1, 10, "x")
    assert result.status == "failed"
    assert message in (result.error or "")


def test_model_that_cannot_be_imported_fails_clearly(tmp_path: Path) -> None:
    runner = ProcessRunner("tests.support.no_such_module:simulate", tmp_path)
    result = runner.attempt({}, 1, 10, "x")
    assert result.status == "failed"
    assert "cannot import the model" in (result.error or "")
    assert "No module named 'tests.support.no_such_module'" in (result.error or "")


def _run_in_daemon(log_dir: str, results: multiprocessing.Queue) -> None:
    runner = ProcessRunner(FAULTY_MODEL, log_dir)
    results.put(runner.attempt({}, 1, 10, "x").status)
    runner.close()


def test_works_inside_a_daemonic_process(tmp_path: Path) -> None:
    # Dask worker processes are daemonic; multiprocessing-based pools refuse to start there.
    results: multiprocessing.Queue = multiprocessing.get_context("spawn").Queue()
    process = multiprocessing.get_context("spawn").Process(
        target=_run_in_daemon, args=(str(tmp_path), results), daemon=True
    )
    process.start()
    assert results.get(timeout=30) == "ok"
    process.join(10)


PARENT_SCRIPT = """
import sys, threading
from simstudy.runners.process import ProcessRunner
runner = ProcessRunner("tests.support.faulty:simulate", sys.argv[1])
runner.warm()
print(runner._idle[0].process.pid, flush=True)
runner.attempt({"behavior": "hang"}, 1, 3600, "x")
"""


def test_child_dies_when_its_parent_is_killed(tmp_path: Path) -> None:
    parent = subprocess.Popen(
        [sys.executable, "-c", PARENT_SCRIPT, str(tmp_path)],
        stdout=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    assert parent.stdout is not None
    child_pid = int(parent.stdout.readline())
    time.sleep(0.5)
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    parent.stdout.close()
    deadline = time.monotonic() + 5
    while psutil.pid_exists(child_pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert (
        not psutil.pid_exists(child_pid)
        or psutil.Process(child_pid).status() == psutil.STATUS_ZOMBIE
    )
