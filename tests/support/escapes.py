"""Model behaviours that escape or damage the process running them.

`python -m tests.support.escapes PID_FILE` forks, starts a new session, forks again and
runs `sleep 300`, writing the daemon's pid (and its start time) to PID_FILE, the way a
model that starts a server in the background would. `BEHAVIORS` are the faulty model's
behaviours built on it (the daemon's pid file is the `pid_file` parameter).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil

DAEMON_SECONDS = 300


def start_daemon(pid_file: str | Path) -> int:
    """Start a setsid'd, double-forked `sleep`; return its pid once it is recorded."""
    path = Path(pid_file)
    subprocess.run([sys.executable, "-m", "tests.support.escapes", str(path)], check=True)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if path.exists() and path.read_text().endswith("\n"):
            return int(path.read_text().split()[0])
        time.sleep(0.01)
    raise RuntimeError(f"the daemon did not write {path}")


def daemon_alive(pid_file: str | Path) -> bool:
    """Return True if the daemon recorded in `pid_file` still runs (pid reuse excluded)."""
    pid, started = Path(pid_file).read_text().split()
    try:
        process = psutil.Process(int(pid))
        return (
            abs(process.create_time() - float(started)) < 1.0
            and process.status() != psutil.STATUS_ZOMBIE
        )
    except psutil.NoSuchProcess:
        return False


def runner_host_pid() -> int:
    """Return the pid of the process that runs the runner (the Dask worker), not a supervisor."""
    parent = psutil.Process().parent()
    assert parent is not None
    if "simstudy.run.runners._child" in " ".join(parent.cmdline()):
        grandparent = parent.parent()
        assert grandparent is not None
        return grandparent.pid
    return parent.pid


def _daemon(params: dict[str, Any]) -> None:
    start_daemon(params["pid_file"])


def _daemon_and_hang(params: dict[str, Any]) -> None:
    start_daemon(params["pid_file"])
    time.sleep(3600)


def _daemon_and_exit(params: dict[str, Any]) -> None:
    start_daemon(params["pid_file"])
    os._exit(3)


def _close_stdio(params: dict[str, Any]) -> None:
    for fd in (0, 1, 2):
        os.close(fd)


def _close_all_fds(params: dict[str, Any]) -> None:
    os.closerange(0, 1024)


def _allocate(params: dict[str, Any]) -> None:
    block = bytearray(int(params["alloc_mb"]) * 2**20)
    block[::4096] = b"x" * len(block[::4096])


BEHAVIORS: dict[str, Callable[[dict[str, Any]], None]] = {
    "daemon": _daemon,
    "daemon_and_hang": _daemon_and_hang,
    "daemon_and_exit": _daemon_and_exit,
    "close_stdio": _close_stdio,
    "close_all_fds": _close_all_fds,
    "allocate": _allocate,
}


def _daemonize(pid_file: str) -> None:
    if os.fork():
        os._exit(0)  # the first child exits: the daemon is orphaned
    os.setsid()
    if os.fork():
        os._exit(0)
    pid = os.getpid()
    started = psutil.Process(pid).create_time()
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    Path(pid_file).write_text(f"{pid} {started}\n")
    os.execvp("sleep", ["sleep", str(DAEMON_SECONDS)])


if __name__ == "__main__":
    _daemonize(sys.argv[1])
