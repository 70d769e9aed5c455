"""Process runner: warm child processes that import the model once and can be killed.

```python
>>> from simstudy.run.runners.process import ProcessRunner
>>> runner = ProcessRunner("simstudy.models.seir:simulate", log_dir="results/logs")
>>> result = runner.attempt({"beta": 0.3, ...}, seed=1, timeout_seconds=60, log_name="x")
```

Children are plain `subprocess.Popen` processes, not `multiprocessing` workers: Dask
worker processes are daemonic and multiprocessing refuses to start children from them,
and a timed-out replicate must be killed together with anything it started, which
multiprocessing-based pools do not do. Each child is a supervisor (a child subreaper, see
`simstudy.run.runners._child` and `simstudy.run.runners.reaper`) in front of the model process, so
even a daemon double-forked with `setsid` stays in the tree that a timeout kills.
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

from simstudy.run.records import AttemptResult, Status
from simstudy.run.runners import reaper
from simstudy.run.runners._wire import (
    PROTOCOL_LOST_EXIT_CODE,
    WireClosed,
    WireTimeout,
    read_frame,
    unread_bytes,
    write_frame,
)
from simstudy.run.runners.base import file_tail, timeout_message, trim_log, with_stderr_tail
from simstudy.run.runners.reaper import exit_description

__all__ = ["ProcessRunner", "exit_description", "shared_process_runner"]

STARTUP_TIMEOUT_SECONDS = 120.0
"""Time a child has to import the model, separate from the per-replicate timeout."""
EXIT_WAIT_SECONDS = 5.0
"""Time a supervisor has to clean up after its model process died, before it is killed."""


class ChildStartError(RuntimeError):
    """The model could not be imported in a child process."""


class ChildLost(RuntimeError):
    """The child died before it read the request: no replicate is to blame."""


def kill_process_tree(process: subprocess.Popen[bytes]) -> None:
    """SIGKILL `process` and every descendant (also those that left its group), and reap it."""
    if process.poll() is None:
        reaper.kill_tree(process.pid)
    # Descendants that were re-parented further up (the leader died first) share its group.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def model_exit_description(returncode: int, memory_limit_bytes: int | None) -> str:
    """Return why a model process ended, naming the memory limit when it may be the cause."""
    if returncode == PROTOCOL_LOST_EXIT_CODE:
        return (
            f"model process exited with code {returncode}: the model closed the pipe its "
            "process replies on (a model must leave descriptors it did not open alone)"
        )
    description = f"model process {exit_description(returncode)}"
    if returncode < 0 and memory_limit_bytes:
        # Allocation failures under RLIMIT_AS often end in SIGSEGV or SIGABRT in C code.
        description += f"; it may have {reaper.memory_limit_message(memory_limit_bytes)}"
    return description


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

    def __init__(self, model_ref: str, log_dir: Path, memory_limit_bytes: int | None = None):
        log_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = log_dir / f"process-{os.getpid()}-{next(self._counter)}.stderr.log"
        self.memory_limit_bytes = memory_limit_bytes
        limit = ["--memory-limit", str(memory_limit_bytes)] if memory_limit_bytes else []
        with self.log_path.open("ab") as log:
            # stderr goes to a file, never to a pipe: a chatty model can never block on it.
            self.process = subprocess.Popen(
                [sys.executable, "-m", "simstudy.run.runners._child", model_ref, *limit],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
                start_new_session=True,
                env=child_environment(),
            )
        assert self.process.stdin is not None and self.process.stdout is not None
        self._request_fd = self.process.stdin.fileno()
        self._reply_fd = self.process.stdout.fileno()
        self.model_pid = 0
        self._spared: set[int] = set()
        self._await_ready()

    def _await_ready(self) -> None:
        try:
            kind, detail = read_frame(self._reply_fd, time.monotonic() + STARTUP_TIMEOUT_SECONDS)
        except (WireTimeout, WireClosed) as exc:
            self.kill()
            reason = (
                "model process timed out importing the model"
                if isinstance(exc, WireTimeout)
                else model_exit_description(self.process.returncode, self.memory_limit_bytes)
            )
            raise ChildStartError(with_stderr_tail(reason, file_tail(self.log_path))) from None
        if kind != "ready":
            self.kill()
            raise ChildStartError(f"cannot import the model: {detail}")
        self.model_pid = detail
        # Processes the model started while it was imported serve all its replicates.
        self._spared = set(reaper.direct_children(self.process.pid))

    def run(self, params: dict[str, Any], seed: int, timeout_seconds: float) -> AttemptResult:
        """Run one replicate; a timeout or crash kills this child (it must then be dropped)."""
        log_offset = self.log_path.stat().st_size
        try:
            return self._run(params, seed, timeout_seconds, log_offset)
        finally:
            # The model is between replicates now (or dead): its output is cut to size.
            trim_log(self.log_path, log_offset)

    def _run(
        self, params: dict[str, Any], seed: int, timeout_seconds: float, log_offset: int
    ) -> AttemptResult:
        started = time.perf_counter()

        def unsuccessful(status: Status, message: str) -> AttemptResult:
            tail = file_tail(self.log_path, log_offset)
            return AttemptResult(
                status=status,
                error=with_stderr_tail(message, tail),
                duration_s=time.perf_counter() - started,
            )

        try:
            size = write_frame(self._request_fd, (params, seed))
        except BrokenPipeError:
            self.kill()
            raise ChildLost() from None
        try:
            kind, value = read_frame(self._reply_fd, time.monotonic() + timeout_seconds)
        except WireTimeout:
            self.kill()
            return unsuccessful("timed_out", timeout_message(timeout_seconds))
        except WireClosed:
            # A model process that died after its previous reply never read this request.
            never_read = unread_bytes(self._request_fd) >= size
            self._await_exit()
            if never_read:
                raise ChildLost() from None
            return unsuccessful(
                "failed", model_exit_description(self.process.returncode, self.memory_limit_bytes)
            )
        self._kill_detached()
        if kind == "ok":
            return AttemptResult(
                status="ok", outputs=value, duration_s=time.perf_counter() - started
            )
        if kind == "retire":
            self.kill()
        return unsuccessful("failed", value)

    def _kill_detached(self) -> None:
        """Kill what the replicate detached (daemons are re-parented to the supervisor)."""
        for pid in reaper.direct_children(self.process.pid):
            if pid != self.model_pid and pid not in self._spared:
                reaper.kill_tree(pid)

    def _await_exit(self) -> None:
        """Let the supervisor clean up and exit like its model process; kill it if it does not."""
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(EXIT_WAIT_SECONDS)
        self.kill()

    @property
    def alive(self) -> bool:
        """Return True while the child runs."""
        return self.process.poll() is None

    def kill(self) -> None:
        """Kill the child with every process it started and close its pipes."""
        kill_process_tree(self.process)
        for pipe in (self.process.stdin, self.process.stdout):
            if pipe is not None:
                pipe.close()


class ProcessRunner:
    """Run replicates in warm, killable child processes, one per concurrent caller."""

    def __init__(self, model_ref: str, log_dir: str | Path, memory_limit_bytes: int | None = None):
        self.model_ref = model_ref
        self.log_dir = Path(log_dir)
        self.memory_limit_bytes = memory_limit_bytes
        self._idle: list[WarmProcess] = []
        self._lock = threading.Lock()
        self._closed = False

    def warm(self, count: int = 1) -> None:
        """Start `count` children ahead of use (raises `ChildStartError` if the model fails)."""
        started = [self._start() for _ in range(count)]
        with self._lock:
            self._idle.extend(started)

    def attempt(
        self, params: dict[str, Any], seed: int, timeout_seconds: float, log_name: str
    ) -> AttemptResult:
        """Run one replicate in an idle child (started if none is idle)."""
        started = time.perf_counter()
        # A child that died between replicates is replaced once, uncharged; a second loss
        # in a row is this replicate's failure.
        for fresh in (False, True):
            try:
                child = self._start() if fresh else self._checkout()
                result = child.run(params, seed, timeout_seconds)
            except ChildStartError as exc:
                return AttemptResult(
                    status="failed", error=str(exc), duration_s=time.perf_counter() - started
                )
            except ChildLost:
                continue
            self._checkin(child)
            return result
        return AttemptResult(
            status="failed",
            error="model process died before it could read the replicate (twice in a row)",
            duration_s=time.perf_counter() - started,
        )

    def _start(self) -> WarmProcess:
        return WarmProcess(self.model_ref, self.log_dir, self.memory_limit_bytes)

    def _checkout(self) -> WarmProcess:
        with self._lock:
            while self._idle:
                child = self._idle.pop()
                if child.alive:
                    return child
                child.kill()
        return self._start()

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


_shared: dict[tuple[str, str, int | None], ProcessRunner] = {}
_shared_lock = threading.Lock()


def shared_process_runner(
    model_ref: str, log_dir: str | Path, memory_limit_bytes: int | None = None
) -> ProcessRunner:
    """Return this process's runner for a model, so children stay warm across batches."""
    key = (model_ref, str(log_dir), memory_limit_bytes)
    with _shared_lock:
        runner = _shared.get(key)
        if runner is None or runner._closed:
            runner = _shared[key] = ProcessRunner(model_ref, log_dir, memory_limit_bytes)
        return runner


def close_shared_runners() -> None:
    """Kill the children of every shared runner of this process."""
    with _shared_lock:
        runners = list(_shared.values())
        _shared.clear()
    for runner in runners:
        runner.close()


atexit.register(close_shared_runners)
