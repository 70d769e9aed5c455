"""What every runner shares: the runner protocol, model loading and the retry loop."""

from __future__ import annotations

import importlib
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from simstudy.run.records import AttemptResult, ReplicateRecord

STDERR_TAIL_LINES = 20
STDERR_TAIL_BYTES = 4096
REPLICATE_LOG_BYTES = 1024 * 1024
"""Most bytes of model output a log keeps per replicate: its first and last half MiB (a
model printing 1 GiB a replicate filled the disk with its logs)."""


class Runner(Protocol):
    """Runs one attempt of one replicate; model faults are results, never exceptions."""

    def attempt(
        self, params: dict[str, Any], seed: int, timeout_seconds: float, log_name: str
    ) -> AttemptResult: ...

    def close(self) -> None: ...


def load_callable(ref: str) -> Callable[..., Any]:
    """Import and return the function named by 'module:function'."""
    module_name, _, function_name = ref.partition(":")
    module = importlib.import_module(module_name)
    try:
        function = getattr(module, function_name)
    except AttributeError:
        raise ImportError(f"module {module_name!r} has no function {function_name!r}") from None
    if not callable(function):
        raise ImportError(f"{ref} is not callable")
    return function


def short_traceback(exc: BaseException) -> str:
    """Return the exception's message first, then the last frames of its traceback."""
    message = "".join(traceback.format_exception_only(exc)).strip()
    frames = "".join(traceback.format_tb(exc.__traceback__)[-3:]).rstrip()
    return f"{message}\nTraceback (most recent call last, innermost 3 frames):\n{frames}"


def file_tail(path: Path, start: int = 0) -> str:
    """Return the last lines of a log file written after byte offset `start`."""
    try:
        with path.open("rb") as handle:
            size = handle.seek(0, 2)
            handle.seek(max(start, size - STDERR_TAIL_BYTES))
            data = handle.read()
    except OSError:
        return ""
    lines = data.decode("utf-8", "replace").splitlines()
    return "\n".join(lines[-STDERR_TAIL_LINES:])


def trim_log(path: Path, start: int = 0, limit: int = REPLICATE_LOG_BYTES) -> int:
    """Keep the head and tail of what a log got after byte `start`, at most `limit` bytes and
    a line saying how much was cut between them; return the bytes cut (0: nothing)."""
    try:
        with path.open("r+b") as handle:
            size = handle.seek(0, 2)
            if size - start <= limit:
                return 0
            half = limit // 2
            handle.seek(size - half)
            tail = handle.read(half)
            cut = size - start - 2 * half
            handle.seek(start + half)
            handle.write(f"\n[... {cut:,} bytes of model output cut ...]\n".encode() + tail)
            handle.truncate()
            return cut
    except OSError:  # the log is gone or unwritable: nothing to keep small
        return 0


def timeout_message(timeout_seconds: float) -> str:
    """Return the error of an attempt killed for running past its timeout."""
    return f"timed out after {timeout_seconds:g} s; its process tree was killed"


def with_stderr_tail(message: str, tail: str) -> str:
    """Return an error message followed by the stderr tail, when there is one."""
    return f"{message}\n--- stderr (last lines) ---\n{tail}" if tail else message


def guarded_attempt(
    runner: Runner, params: dict[str, Any], seed: int, timeout_seconds: float, log_name: str
) -> AttemptResult:
    """Run one attempt; whatever escapes the runner is that attempt's failure, never the batch's."""
    started = time.perf_counter()
    try:
        return runner.attempt(params, seed, timeout_seconds, log_name)
    except BaseException as exc:
        # A runner turns model faults into results; anything that still escapes (an
        # exception type nobody expected, a failure of the runner itself) must not end
        # the batch, or the replicates after it would run again elsewhere.
        return AttemptResult(
            status="failed",
            error=f"the runner failed: {short_traceback(exc)}",
            duration_s=time.perf_counter() - started,
        )


def run_replicate(
    runner: Runner,
    *,
    param_id: str,
    params: dict[str, Any],
    replicate: int,
    seed: int,
    timeout_seconds: float,
    retries: int,
    retry_delay_seconds: float,
    worker: str,
    prior_attempts: int = 0,
) -> ReplicateRecord:
    """Run one replicate with its retries and return its record.

    `prior_attempts` counts executions lost with an earlier run of its batch (a lost
    worker): they count in the record's `attempts`, not against `retries`.
    """
    total = 0.0
    attempt_number = 0
    result: AttemptResult | None = None
    for attempt_number in range(1, retries + 2):
        if attempt_number > 1 and retry_delay_seconds:
            time.sleep(retry_delay_seconds)
        log_name = f"{param_id[:12]}/r{replicate:06d}-a{prior_attempts + attempt_number}"
        result = guarded_attempt(runner, params, seed, timeout_seconds, log_name)
        total += result.duration_s
        if result.status == "ok":
            break
    assert result is not None
    return ReplicateRecord(
        param_id=param_id,
        replicate=replicate,
        seed=seed,
        status=result.status,
        attempts=prior_attempts + attempt_number,
        duration_s=total,
        error=result.error,
        worker=worker,
        outputs=result.outputs,
    )
