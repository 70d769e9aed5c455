"""The subprocess runner: external programs that can neither block nor outlive a timeout."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from simstudy.run.runners import command
from simstudy.run.runners.base import REPLICATE_LOG_BYTES
from simstudy.run.runners.command import MAX_RESULT_LINE_BYTES, CommandRunner, ResultLineTooLong
from tests.simstudy.run.runners.test_process import assert_gone_soon

pytestmark = [pytest.mark.timeout(60), pytest.mark.usefixtures("no_leftover_processes")]

REPO = Path(__file__).parents[4]


@pytest.fixture
def runner(tmp_path: Path) -> CommandRunner:
    return CommandRunner([sys.executable, "-m", "tests.support.command_model"], REPO, tmp_path)


def test_last_stdout_line_is_the_result(runner: CommandRunner) -> None:
    result = runner.attempt({"a": 1.0}, 10, 20, "p/r0")
    assert result.status == "ok"
    assert result.outputs["y"] == 2.0


@pytest.mark.parametrize("behavior", ["stderr_flood", "stdout_flood"])
def test_ten_megabytes_on_a_stream_do_not_block(runner: CommandRunner, behavior: str) -> None:
    result = runner.attempt({"behavior": behavior}, 1, 30, "p/r0")
    assert result.status == "ok", result.error


def test_stderr_goes_to_a_log_file_cut_to_its_head_and_tail(
    runner: CommandRunner, tmp_path: Path
) -> None:
    runner.attempt({"behavior": "stderr_flood"}, 1, 30, "p/r0")
    log = tmp_path / "p" / "r0.stderr.log"
    assert log.stat().st_size < REPLICATE_LOG_BYTES + 100
    text = log.read_text()
    assert (
        text.startswith("x" * 1023) and text.endswith("flood done\n") and "bytes of model" in text
    )


def test_hanging_program_is_killed_within_timeout_plus_two_seconds(runner: CommandRunner) -> None:
    started = time.monotonic()
    result = runner.attempt({"behavior": "spawn_and_hang"}, 1, 1.5, "p/r0")
    assert result.status == "timed_out"
    assert time.monotonic() - started < 3.5


def test_non_zero_exit_fails_with_stderr_tail(runner: CommandRunner) -> None:
    result = runner.attempt({"behavior": "fail"}, 1, 20, "p/r0")
    assert result.status == "failed"
    assert "exited with code 4" in (result.error or "")
    assert "failing on purpose" in (result.error or "")


def test_non_json_output_fails_clearly(runner: CommandRunner) -> None:
    result = runner.attempt({"behavior": "not_json"}, 1, 20, "p/r0")
    assert result.status == "failed"
    assert "not a JSON object" in (result.error or "")
    assert "this is not json" in (result.error or "")


def test_wrong_output_names_fail(runner: CommandRunner) -> None:
    result = runner.attempt({"behavior": "bad_output"}, 1, 20, "p/r0")
    assert result.status == "failed"
    assert "reserved" in (result.error or "")


def test_missing_program_fails_clearly(tmp_path: Path) -> None:
    result = CommandRunner(["/no/such/program"], tmp_path, tmp_path).attempt({}, 1, 5, "p/r0")
    assert result.status == "failed"
    assert "cannot start '/no/such/program'" in (result.error or "")


@pytest.mark.parametrize(
    ("behavior", "status"),
    [("daemon_and_hang", "timed_out"), ("daemon", "ok"), ("daemon_and_exit", "failed")],
)
def test_a_setsid_daemon_dies_with_its_program(
    runner: CommandRunner, tmp_path: Path, behavior: str, status: str
) -> None:
    pid_file = tmp_path / "daemon.pid"
    result = runner.attempt({"behavior": behavior, "pid_file": str(pid_file)}, 1, 3.0, "p/r0")
    assert result.status == status, result.error
    assert_gone_soon(pid_file)


def test_program_over_its_memory_limit_is_a_failed_replicate_saying_so(tmp_path: Path) -> None:
    command = [sys.executable, "-m", "tests.support.command_model"]
    runner = CommandRunner(command, REPO, tmp_path, memory_limit_bytes=1024 * 2**20)
    result = runner.attempt({"behavior": "allocate", "alloc_mb": 2048}, 1, 20, "p/r0")
    assert result.status == "failed"
    assert "program exceeded its memory limit of 1024 MiB" in (result.error or "")
    assert runner.attempt({"behavior": "allocate", "alloc_mb": 64}, 1, 20, "p/r1").status == "ok"


LONG_LINE_SCRIPT = """
import json, sys
size = json.load(sys.stdin)["params"]["size"]
print("a log line")
out = sys.stdout.buffer
out.write(b'{"x": 1.0, "pad": "')
for _ in range(size // 2**20):
    out.write(b"p" * 2**20)
out.write(b'"}\\n')
"""


def test_result_line_over_the_limit_is_a_failed_replicate_naming_it(tmp_path: Path) -> None:
    runner = CommandRunner([sys.executable, "-c", LONG_LINE_SCRIPT], tmp_path, tmp_path)
    result = runner.attempt({"size": MAX_RESULT_LINE_BYTES}, 1, 30, "p/r0")
    assert result.status == "failed"
    assert f"longer than {MAX_RESULT_LINE_BYTES:,} bytes (64 MiB)" in (result.error or "")
    assert "last line of stdout" in (result.error or "")


def test_result_line_of_several_megabytes_is_read_whole(tmp_path: Path) -> None:
    runner = CommandRunner([sys.executable, "-c", LONG_LINE_SCRIPT], tmp_path, tmp_path)
    result = runner.attempt({"size": 3 * 2**20}, 1, 30, "p/r0")
    assert result.status == "failed"  # read and parsed whole: the string output is refused
    assert "output 'pad' has type str" in (result.error or "")


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"", ""),
        (b"log\n" * 5 + b'{"a": 1}', '{"a": 1}'),
        (b'log\r\n{"a": 1}\r\n\n  \n', '{"a": 1}'),
        (b"x" * 10, "x" * 10),  # no newline at all: exactly at the limit
        (b"y" * 50 + b"\n" + b"x" * 10 + b" " * 30, "x" * 10),
    ],
)
def test_last_line_is_found_across_chunks(
    monkeypatch: pytest.MonkeyPatch, data: bytes, expected: str
) -> None:
    monkeypatch.setattr(command, "READ_CHUNK_BYTES", 3)
    assert command._read_last_line(io.BytesIO(data), limit=10) == expected


@pytest.mark.parametrize("data", [b"x" * 11, b"log\n" + b"x" * 11 + b"\n\n"])
def test_last_line_over_the_limit_is_refused(monkeypatch: pytest.MonkeyPatch, data: bytes) -> None:
    monkeypatch.setattr(command, "READ_CHUNK_BYTES", 3)
    assert isinstance(command._read_last_line(io.BytesIO(data), limit=10), ResultLineTooLong)


class CountingFile(io.BytesIO):
    """A file that counts the bytes read from it."""

    read_bytes = 0

    def read(self, size: int | None = -1) -> bytes:
        data = super().read(size)
        self.read_bytes += len(data)
        return data


def test_a_huge_last_line_is_refused_after_reading_little_more_than_the_limit() -> None:
    file = CountingFile(b"z" * (200 * 2**20))
    assert isinstance(command._read_last_line(file, limit=8 * 2**20), ResultLineTooLong)
    assert file.read_bytes <= 8 * 2**20 + command.READ_CHUNK_BYTES


PARENT_SCRIPT = """
import sys
from simstudy.run.runners.command import CommandRunner
command = [sys.executable, "-m", "tests.support.command_model"]
runner = CommandRunner(command, sys.argv[1], sys.argv[2])
runner.attempt({"behavior": "daemon_and_hang", "pid_file": sys.argv[3]}, 1, 3600, "p/r0")
"""


def test_program_and_its_daemons_die_when_the_runner_process_is_killed(tmp_path: Path) -> None:
    pid_file = tmp_path / "daemon.pid"
    parent = subprocess.Popen(
        [sys.executable, "-c", PARENT_SCRIPT, str(REPO), str(tmp_path), str(pid_file)],
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    deadline = time.monotonic() + 20
    while not pid_file.exists():
        assert time.monotonic() < deadline
        time.sleep(0.05)
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    assert_gone_soon(pid_file)
