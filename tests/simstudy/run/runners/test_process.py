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

from simstudy.run.runners.base import REPLICATE_LOG_BYTES
from simstudy.run.runners.process import ProcessRunner
from tests.conftest import FAULTY_MODEL, DescendantWatcher
from tests.support.escapes import daemon_alive

pytestmark = [pytest.mark.timeout(60), pytest.mark.usefixtures("no_leftover_processes")]


def alive(pid: int) -> bool:
    """Return True if `pid` runs and is not a zombie."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def assert_gone_soon(pid_file: Path, seconds: float = 3.0) -> None:
    """Fail unless the daemon recorded (while alive) in `pid_file` is gone within `seconds`."""
    deadline = time.monotonic() + seconds
    while daemon_alive(pid_file) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not daemon_alive(pid_file), f"daemon {pid_file.read_text().split()[0]} survived"


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
    assert "process tree was killed" in (result.error or "")
    assert runner.attempt({}, 1, 10, "x").status == "ok"  # a fresh child took over


def test_timeout_kills_grandchildren_too(runner: ProcessRunner) -> None:
    seen: set[int] = set()
    watcher = DescendantWatcher(seen)
    with watcher:
        result = runner.attempt({"behavior": "spawn_and_hang"}, 1, 2.0, "x")
    assert result.status == "timed_out"
    grandchildren = [p for p in seen if "time.sleep(3600)" in watcher.cmdlines.get(p, "")]
    assert grandchildren, "the model's child was never seen alive"
    assert not [p for p in grandchildren if alive(p)]


@pytest.mark.parametrize(
    ("behavior", "status"),
    [("daemon_and_hang", "timed_out"), ("daemon", "ok"), ("daemon_and_exit", "failed")],
)
def test_a_setsid_daemon_dies_with_its_replicate(
    runner: ProcessRunner, tmp_path: Path, behavior: str, status: str
) -> None:
    pid_file = tmp_path / "daemon.pid"
    result = runner.attempt({"behavior": behavior, "pid_file": str(pid_file)}, 1, 3.0, "x")
    assert result.status == status, result.error
    assert_gone_soon(pid_file)
    assert runner.attempt({}, 2, 10, "x").status == "ok"


def test_closing_stdio_fails_that_replicate_not_the_next(runner: ProcessRunner) -> None:
    result = runner.attempt({"behavior": "close_stdio"}, 1, 10, "x")
    assert result.status == "failed"
    assert "closed file descriptor(s) 0 (stdin), 1 (stdout), 2 (stderr)" in (result.error or "")
    assert runner.attempt({}, 2, 10, "x").status == "ok"


def test_closing_every_descriptor_fails_that_replicate_not_the_next(runner: ProcessRunner) -> None:
    result = runner.attempt({"behavior": "close_all_fds"}, 1, 10, "x")
    assert result.status == "failed"
    assert "closed the pipe its process replies on" in (result.error or "")
    assert runner.attempt({}, 2, 10, "x").status == "ok"


def test_child_lost_between_replicates_is_replaced_without_charge(runner: ProcessRunner) -> None:
    runner.warm()
    idle = runner._idle[0]
    os.kill(idle.model_pid, signal.SIGKILL)
    while alive(idle.model_pid):
        time.sleep(0.001)
    # The supervisor follows its model process; until then the child still looks alive.
    result = runner.attempt({}, 1, 10, "x")
    assert result.status == "ok", result.error


def test_model_over_its_memory_limit_is_a_failed_replicate_saying_so(tmp_path: Path) -> None:
    runner = ProcessRunner(FAULTY_MODEL, tmp_path, memory_limit_bytes=1024 * 2**20)
    try:
        result = runner.attempt({"behavior": "allocate", "alloc_mb": 2048}, 1, 20, "x")
        assert result.status == "failed"
        assert "exceeded its memory limit of 1024 MiB" in (result.error or "")
        assert "MemoryError" in (result.error or "")
        assert runner.attempt({"behavior": "allocate", "alloc_mb": 64}, 2, 20, "x").status == "ok"
    finally:
        runner.close()


def test_ten_megabytes_of_stderr_do_not_block_and_the_log_keeps_head_and_tail(
    runner: ProcessRunner, tmp_path: Path
) -> None:
    for seed in (1, 2):  # the same warm process: each replicate's output is cut on its own
        result = runner.attempt({"behavior": "stderr_flood"}, seed, 20, "x")
        assert result.status == "ok"
    (log,) = list((tmp_path / "logs").glob("process-*.stderr.log"))
    text = log.read_text()
    assert log.stat().st_size < 2 * REPLICATE_LOG_BYTES + 200
    assert text.count("flood done") == 2 and text.startswith("x" * 1023 + "\n")
    assert text.count(f"[... {10 * 1024 * 1024 + 11 - REPLICATE_LOG_BYTES:,} bytes of model") == 2


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
from simstudy.run.runners.process import ProcessRunner
runner = ProcessRunner("tests.support.faulty:simulate", sys.argv[1])
runner.warm()
print(runner._idle[0].process.pid, runner._idle[0].model_pid, flush=True)
runner.attempt({"behavior": sys.argv[2], "pid_file": sys.argv[3]}, 1, 3600, "x")
"""


@pytest.mark.parametrize("behavior", ["hang", "daemon_and_hang"])
def test_child_and_its_daemons_die_when_the_runner_process_is_killed(
    tmp_path: Path, behavior: str
) -> None:
    pid_file = tmp_path / "daemon.pid"
    parent = subprocess.Popen(
        [sys.executable, "-c", PARENT_SCRIPT, str(tmp_path), behavior, str(pid_file)],
        stdout=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    assert parent.stdout is not None
    pids = [int(p) for p in parent.stdout.readline().split()]
    deadline = time.monotonic() + 10
    while behavior.startswith("daemon") and not pid_file.exists():
        assert time.monotonic() < deadline
        time.sleep(0.05)
    time.sleep(0.5)
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    parent.stdout.close()
    deadline = time.monotonic() + 5
    while any(alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [p for p in pids if alive(p)]
    if behavior.startswith("daemon"):
        assert_gone_soon(pid_file)
