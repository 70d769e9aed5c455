"""Process runner: warm child processes that import the model once and can be killed.

```python
>>> from simstudy.runners.process import ProcessRunner
>>> runner = ProcessRunner("simstudy.models.seir:simulate", log_dir="results/logs")
>>> result = runner.attempt({"beta": 0.3, ...}, seed=1, timeout_seconds=60, log_name="x")
```

Children are plain `subprocess.Popen` processes, each in its own session (so its own
process group), not `multiprocessing` workers: Dask worker processes are daemonic and
multiprocessing refuses to start children from them, and a timed-out replicate must be
killed together with anything it started (`os.killpg`), which multiprocessing-based pools
do not do.
"""

from __future__ import annotations

import atexit
import contextlib
import itertools
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from simstudy.records import AttemptResult, Status
from simstudy.runners._wire import WireClosed, WireTimeout, read_frame, write_frame
from simstudy.runners.base import file_tail, timeout_message, with_stderr_tail

STARTUP_TIMEOUT_SECONDS = 120.0
"""Time a child has to import the model, separate from the per-replicate timeout."""


class ChildStartError(RuntimeError):
    """The model could not be imported in a child process."""


def exit_description(returncode: int) -> str:
    """Return a readable reason for a child's exit status, with the shell-style code."""
    if returncode < 0:
        number = -returncode
        try:
            name = signal.Signals(number).name
        except ValueError:
            name = f"signal {number}"
        return f"killed by {name} (exit code {128 + number})"
    return f"exited with code {returncode}"


def kill_process_group(process: subprocess.Popen[bytes]) -> None:
    """SIGKILL the process group led by `process` and reap the leader."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def child_environment() -> dict[str, str]:
    """Return the environment of a child: ours, with our import path."""
    env = dict(os.environ)
    # Children import the model the way this process would (Dask's spawned workers get
    # their parent's sys.path the same way).
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
    return env


class WarmProcess:
    """One child process serving replicate requests over pipes."""

    _counter = itertools.count()

    def __init__(self, model_ref: str, log_dir: Path):
        log_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = log_dir / f"process-{os.getpid()}-{next(self._counter)}.stderr.log"
        with self.log_path.open("ab") as log:
            # stderr goes to a file, never to a pipe: a chatty model can never block on it.
            self.process = subprocess.Popen(
                [sys.executable, "-m", "simstudy.runners._child", model_ref],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
                start_new_session=True,
                env=child_environment(),
            )
        assert self.process.stdin is not None and self.process.stdout is not None
        self._request_fd = self.process.stdin.fileno()
        self._reply_fd = self.process.stdout.fileno()
        self._await_ready()

    def _await_ready(self) -> None:
        try:
            kind, detail = read_frame(self._reply_fd, time.monotonic() + STARTUP_TIMEOUT_SECONDS)
        except (WireTimeout, WireClosed) as exc:
            self.kill()
            reason = (
                "timed out importing the model"
                if isinstance(exc, WireTimeout)
                else (exit_description(self.process.returncode))
            )
            raise ChildStartError(
                with_stderr_tail(f"model process {reason}", file_tail(self.log_path))
            ) from None
        if kind != "ready":
            self.kill()
            raise ChildStartError(f"cannot import the model: {detail}")

    def run(self, params: dict[str, Any], seed: int, timeout_seconds: float) -> AttemptResult:
        """Run one replicate; a timeout or crash kills this child (it must then be dropped)."""
        started = time.perf_counter()
        log_offset = self.log_path.stat().st_size

        def unsuccessful(status: Status, message: str) -> AttemptResult:
            tail = file_tail(self.log_path, log_offset)
            return AttemptResult(
                status=status,
                error=with_stderr_tail(message, tail),
                duration_s=time.perf_counter() - started,
            )

        try:
            write_frame(self._request_fd, (params, seed))
            kind, value = read_frame(self._reply_fd, time.monotonic() + timeout_seconds)
        except WireTimeout:
            self.kill()
            return unsuccessful("timed_out", timeout_message(timeout_seconds))
        except (WireClosed, BrokenPipeError):
            self.kill()
            return unsuccessful(
                "failed", f"model process {exit_description(self.process.returncode)}"
            )
        if kind == "ok":
            return AttemptResult(
                status="ok", outputs=value, duration_s=time.perf_counter() - started
            )
        return unsuccessful("failed", value)

    @property
    def alive(self) -> bool:
        """Return True while the child runs."""
        return self.process.poll() is None

    def kill(self) -> None:
        """Kill the child's whole process group and close its pipes."""
        kill_process_group(self.process)
        for pipe in (self.process.stdin, self.process.stdout):
            if pipe is not None:
                pipe.close()


class ProcessRunner:
    """Run replicates in warm, killable child processes, one per concurrent caller."""

    def __init__(self, model_ref: str, log_dir: str | Path):
        self.model_ref = model_ref
        self.log_dir = Path(log_dir)
        self._idle: list[WarmProcess] = []
        self._lock = threading.Lock()
        self._closed = False

    def warm(self, count: int = 1) -> None:
        """Start `count` children ahead of use (raises `ChildStartError` if the model fails)."""
        started = [WarmProcess(self.model_ref, self.log_dir) for _ in range(count)]
        with self._lock:
            self._idle.extend(started)

    def attempt(
        self, params: dict[str, Any], seed: int, timeout_seconds: float, log_name: str
    ) -> AttemptResult:
        """Run one replicate in an idle child (started if none is idle)."""
        started = time.perf_counter()
        try:
            child = self._checkout()
        except ChildStartError as exc:
            return AttemptResult(
                status="failed", error=str(exc), duration_s=time.perf_counter() - started
            )
        result = child.run(params, seed, timeout_seconds)
        self._checkin(child)
        return result

    def _checkout(self) -> WarmProcess:
        with self._lock:
            while self._idle:
                child = self._idle.pop()
                if child.alive:
                    return child
                child.kill()
        return WarmProcess(self.model_ref, self.log_dir)

    def _checkin(self, child: WarmProcess) -> None:
        with self._lock:
            if child.alive and not self._closed:
                self._idle.append(child)
                return
        child.kill()

    def close(self) -> None:
        """Kill every idle child."""
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for child in idle:
            child.kill()


_shared: dict[tuple[str, str], ProcessRunner] = {}
_shared_lock = threading.Lock()


def shared_process_runner(model_ref: str, log_dir: str | Path) -> ProcessRunner:
    """Return this process's runner for a model, so children stay warm across batches."""
    key = (model_ref, str(log_dir))
    with _shared_lock:
        runner = _shared.get(key)
        if runner is None or runner._closed:
            runner = _shared[key] = ProcessRunner(model_ref, log_dir)
        return runner


def close_shared_runners() -> None:
    """Kill the children of every shared runner of this process."""
    with _shared_lock:
        runners = list(_shared.values())
        _shared.clear()
    for runner in runners:
        runner.close()


atexit.register(close_shared_runners)
