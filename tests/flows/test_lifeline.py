"""Workers of a local cluster die with the flow process, even while a task holds the GIL."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

FLOW_SCRIPT = """
import re, sys, time
from distributed import Client
from flows.cluster import quiet_local_cluster

def hold_the_gil():
    # Catastrophic backtracking: one C call that never releases the GIL.
    return re.match(r"(a+)+$", "a" * 64 + "b")

cluster = quiet_local_cluster(
    n_workers=2, threads_per_worker=1, host="127.0.0.1", dashboard_address=None
)
client = Client(cluster)
futures = [client.submit(hold_the_gil, pure=False) for _ in range(2)]
time.sleep(2)  # both workers are inside the regex now
print("ready", flush=True)
time.sleep(3600)
"""


def cpu_percent(process: psutil.Process) -> float:
    """Return the process's CPU use since the last call (0 if it is gone)."""
    try:
        return float(process.cpu_percent(None))
    except psutil.Error:
        return 0.0


def alive(process: psutil.Process) -> bool:
    """Return True while `process` (the one recorded, not a reused pid) runs."""
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@pytest.mark.slow
@pytest.mark.timeout(90)
@pytest.mark.usefixtures("no_leftover_processes")
def test_workers_holding_the_gil_die_when_the_flow_process_is_sigkilled(tmp_path: Path) -> None:
    flow = subprocess.Popen(
        [sys.executable, "-c", FLOW_SCRIPT],
        stdout=subprocess.PIPE,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    try:
        _check_workers_die_with(flow)
    finally:
        if flow.poll() is None:
            flow.kill()
            flow.wait()


def _check_workers_die_with(flow: subprocess.Popen[bytes]) -> None:
    assert flow.stdout is not None
    assert flow.stdout.readline().strip() == b"ready"
    # Recorded while they are alive: once the flow is gone they are re-parented away.
    # The tasks reach the workers a moment after "ready"; a loaded machine makes it longer.
    deadline = time.monotonic() + 30
    while True:
        tree = psutil.Process(flow.pid).children(recursive=True)
        for p in tree:
            with contextlib.suppress(psutil.Error):
                p.cpu_percent(None)
        time.sleep(0.5)
        busy = [p for p in tree if alive(p) and cpu_percent(p) > 50]
        if len(busy) >= 2 or time.monotonic() > deadline:
            break
    assert len(busy) >= 2, "the workers should be spinning in the regex"
    killed_at = time.monotonic()
    flow.send_signal(signal.SIGKILL)
    flow.wait()
    flow.stdout.close()
    while any(alive(p) for p in tree) and time.monotonic() - killed_at < 10:
        time.sleep(0.05)
    survivors = [f"{p.pid} {' '.join(p.cmdline())[:100]}" for p in tree if alive(p)]
    assert not survivors, "outlived the flow process:\n" + "\n".join(survivors)
    print(f"workers gone {time.monotonic() - killed_at:.2f} s after the flow was killed")
