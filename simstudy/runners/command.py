"""Subprocess runner: one external program per replicate, in its own process group.

The program reads `{"params": {...}, "seed": N}` on stdin and prints one JSON object of
outputs as its last line of stdout. Its stdin and stdout are temporary files and its
stderr a log file, never pipes, so no amount of output can block it.
"""

from __future__ import annotations

import json
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from simstudy.records import AttemptResult, OutputError, normalize_outputs
from simstudy.runners.base import file_tail, timeout_message, with_stderr_tail
from simstudy.runners.process import exit_description, kill_process_group

STDOUT_TAIL_BYTES = 1 << 20
"""Bytes of stdout searched for the last line; a result line longer than this is an error."""


class CommandRunner:
    """Run an external program once per replicate attempt."""

    def __init__(self, command: list[str], cwd: str | Path, log_dir: str | Path):
        self.command = list(command)
        self.cwd = Path(cwd)
        self.log_dir = Path(log_dir)

    def attempt(
        self, params: dict[str, Any], seed: int, timeout_seconds: float, log_name: str
    ) -> AttemptResult:
        """Run the program once; kill its whole process group past `timeout_seconds`."""
        log_path = self.log_dir / f"{log_name}.stderr.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        request = json.dumps({"params": params, "seed": seed}).encode()
        started = time.perf_counter()
        with (
            tempfile.TemporaryFile() as stdin,
            tempfile.TemporaryFile() as stdout,
            log_path.open("wb") as stderr,
        ):
            stdin.write(request)
            stdin.seek(0)
            try:
                process = subprocess.Popen(
                    self.command,
                    cwd=self.cwd,
                    stdin=stdin,
                    stdout=stdout,
                    stderr=stderr,
                    start_new_session=True,
                )
            except OSError as exc:
                return AttemptResult(
                    status="failed",
                    error=f"cannot start {self.command[0]!r} in {self.cwd}: {exc.strerror}",
                    duration_s=time.perf_counter() - started,
                )
            try:
                process.wait(timeout=timeout_seconds)
                timed_out = False
            except subprocess.TimeoutExpired:
                timed_out = True
            # Also on a normal exit: anything the program left running in its group goes too.
            kill_process_group(process)
            duration = time.perf_counter() - started
            stdout.seek(max(0, stdout.seek(0, 2) - STDOUT_TAIL_BYTES))
            last_line = _last_line(stdout.read())
        result = _interpret(timed_out, process.returncode, last_line, timeout_seconds, duration)
        if result.error:
            result.error = with_stderr_tail(result.error, file_tail(log_path))
        if log_path.stat().st_size == 0:
            log_path.unlink()
        return result

    def close(self) -> None:
        """Nothing to release: every program has exited."""


def _last_line(data: bytes) -> str:
    lines = data.decode("utf-8", "replace").strip().splitlines()
    return lines[-1] if lines else ""


def _interpret(
    timed_out: bool, returncode: int, last_line: str, timeout_seconds: float, duration: float
) -> AttemptResult:
    if timed_out:
        return AttemptResult(
            status="timed_out", error=timeout_message(timeout_seconds), duration_s=duration
        )
    if returncode != 0:
        return AttemptResult(
            status="failed", error=f"program {exit_description(returncode)}", duration_s=duration
        )
    try:
        outputs = normalize_outputs(json.loads(last_line))
    except json.JSONDecodeError:
        shown = last_line[:200] or "(no output)"
        return AttemptResult(
            status="failed",
            error=f"last line of stdout is not a JSON object of outputs: {shown!r}",
            duration_s=duration,
        )
    except OutputError as exc:
        return AttemptResult(status="failed", error=str(exc), duration_s=duration)
    return AttemptResult(status="ok", outputs=outputs, duration_s=duration)
