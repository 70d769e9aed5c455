"""Subprocess runner: one external program per replicate, in a tree that dies with it.

The program reads `{"params": {...}, "seed": N}` on stdin and prints one JSON object of
outputs as its last line of stdout (at most `MAX_RESULT_LINE_BYTES`). Its stdin and
stdout are temporary files and its stderr a log file, never pipes, so no amount of output
can block it, and only the tail of stdout is read.

The program runs under `simstudy.run.runners.reaper` (a small child subreaper started with
`python -I -S`, about 30 ms): when the program ends, anything it left running (even a
daemon double-forked with `setsid`) is killed; on a timeout the whole tree is; and if the
runner's process dies, the reaper kills the tree itself.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, BinaryIO

from simstudy.run.records import AttemptResult, OutputError, normalize_outputs
from simstudy.run.runners import reaper
from simstudy.run.runners.base import file_tail, timeout_message, trim_log, with_stderr_tail
from simstudy.run.runners.process import kill_process_tree

MAX_RESULT_LINE_BYTES = 64 * 2**20
"""Longest result line (the last line of stdout): room for a series of `MAX_SERIES_LENGTH`
points at full float precision (~20 bytes each) and more; only this much of stdout's tail
is ever read, however much the program printed."""
READ_CHUNK_BYTES = 2**20
"""Stdout is read backwards from its end in chunks of this size."""


class ResultLineTooLong(ValueError):
    """The last line of a program's stdout is over `MAX_RESULT_LINE_BYTES`."""


class CommandRunner:
    """Run an external program once per replicate attempt."""

    def __init__(
        self,
        command: list[str],
        cwd: str | Path,
        log_dir: str | Path,
        memory_limit_bytes: int | None = None,
    ):
        self.command = list(command)
        self.cwd = Path(cwd)
        self.log_dir = Path(log_dir)
        self.memory_limit_bytes = memory_limit_bytes

    def attempt(
        self, params: dict[str, Any], seed: int, timeout_seconds: float, log_name: str
    ) -> AttemptResult:
        """Run the program once; kill it and all it started past `timeout_seconds`."""
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
                    self._reaped_command(),
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
            # The reaper killed what a finished program left; a timeout kills the whole tree.
            kill_process_tree(process)
            duration = time.perf_counter() - started
            last_line = _read_last_line(stdout, MAX_RESULT_LINE_BYTES)
        trim_log(log_path)
        tail = file_tail(log_path)
        result = _interpret(timed_out, process.returncode, last_line, timeout_seconds, duration)
        if process.returncode == reaper.EXEC_FAILED_EXIT_CODE and tail.startswith("cannot start"):
            result.error = tail.splitlines()[0]
        elif result.error:
            result.error = _name_memory_limit(
                result.error, process.returncode, tail, self.memory_limit_bytes
            )
            result.error = with_stderr_tail(result.error, tail)
        if log_path.stat().st_size == 0:
            log_path.unlink()
        return result

    def _reaped_command(self) -> list[str]:
        """Return the command line that runs the program under the reaper."""
        limit = self.memory_limit_bytes
        options = ["--memory-limit", str(limit)] if limit else []
        # -I -S: the reaper needs the standard library only, and starts twice as fast.
        return [sys.executable, "-I", "-S", reaper.SCRIPT, "run", *options, "--", *self.command]

    def close(self) -> None:
        """Nothing to release: every program has exited."""


OUT_OF_MEMORY_SIGNS = ("MemoryError", "Cannot allocate memory", "std::bad_alloc", "out of memory")


def _name_memory_limit(error: str, returncode: int, tail: str, limit: int | None) -> str:
    """Say so when a failed program probably ran into its memory limit."""
    if not limit or returncode == 0:
        return error
    if any(sign in tail for sign in OUT_OF_MEMORY_SIGNS):
        return f"program {reaper.memory_limit_message(limit)}; {error}"
    if returncode < 0:
        return f"{error}; it may have {reaper.memory_limit_message(limit)}"
    return error


def _read_last_line(file: BinaryIO, limit: int) -> str | ResultLineTooLong:
    """Return the last non-blank line of a file, reading no more of it than that line.

    A line over `limit` bytes is returned as a `ResultLineTooLong` error, found without
    reading more of it than the limit: a program may print gigabytes.
    """
    position = file.seek(0, 2)
    pieces: list[bytes] = []  # of the last line, from its end backwards
    length = 0
    while position > 0:
        size = min(READ_CHUNK_BYTES, position)
        position -= size
        file.seek(position)
        chunk = file.read(size)
        if not pieces:
            chunk = chunk.rstrip()  # trailing blanks are not the result
            if not chunk:
                continue
        start = max(chunk.rfind(b"\n"), chunk.rfind(b"\r")) + 1
        pieces.append(chunk[start:])
        length += len(chunk) - start
        if length > limit:
            return ResultLineTooLong(
                f"the last line of stdout (the result) is longer than {limit:,} bytes "
                f"({limit / 2**20:g} MiB), the most a command model may print as its result: "
                "return fewer or shorter "
                "outputs (e.g. aggregate time steps), or write large data to a file of its own"
            )
        if start > 0:
            break
    tail = b"".join(reversed(pieces))
    lines = tail.decode("utf-8", "replace").strip().splitlines()
    return lines[-1] if lines else ""


def _interpret(
    timed_out: bool,
    returncode: int,
    last_line: str | ResultLineTooLong,
    timeout_seconds: float,
    duration: float,
) -> AttemptResult:
    if timed_out:
        return AttemptResult(
            status="timed_out", error=timeout_message(timeout_seconds), duration_s=duration
        )
    if returncode != 0:
        return AttemptResult(
            status="failed",
            error=f"program {reaper.exit_description(returncode)}",
            duration_s=duration,
        )
    if isinstance(last_line, ResultLineTooLong):
        return AttemptResult(status="failed", error=str(last_line), duration_s=duration)
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
