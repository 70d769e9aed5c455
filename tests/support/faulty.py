"""A deterministic test model that misbehaves on request.

The behaviour of a replicate comes from its `behavior` parameter, or, for chosen
replicates of a study, from a JSON file mapping a seed to a behaviour, named by the
`faults_file` parameter or the SIMSTUDY_FAULTS variable (seeds are known only once the
parameter ids are, so the file's path is a parameter and its content is written after). A behaviour
ending in `_once` misbehaves on the first attempt only (a marker file remembers it).
"""

from __future__ import annotations

import asyncio
import ctypes
import json
import os
import re
import signal
import sys
import time
from pathlib import Path
from typing import Any

from tests.support import escapes

FAULTS_ENV = "SIMSTUDY_FAULTS"


class CustomBaseException(BaseException):
    """Not an Exception: escapes every `except Exception`."""


BASE_EXCEPTIONS: dict[str, type[BaseException]] = {
    "raise_base_exception": CustomBaseException,
    "raise_generator_exit": GeneratorExit,
    "raise_keyboard_interrupt": KeyboardInterrupt,
    "raise_cancelled": asyncio.CancelledError,
    "raise_system_exit": SystemExit,
}


def behavior_for(params: dict[str, Any], seed: int) -> str:
    """Return what this replicate should do."""
    path = params.get("faults_file") or os.environ.get(FAULTS_ENV)
    if path:
        faults = json.loads(Path(path).read_text())
        behavior = faults.get(str(seed))
        if behavior:
            if behavior.endswith("_once"):
                marker = Path(path).with_name(f"attempted-{seed}")
                if marker.exists():
                    return "ok"
                marker.touch()
                return behavior.removesuffix("_once")
            return str(behavior)
    return str(params.get("behavior", "ok"))


def dask_worker_pid() -> int:
    """Return the pid of the Dask worker process this model runs under (a spawned process)."""
    import psutil

    for parent in psutil.Process().parents():
        if "spawn_main" in " ".join(parent.cmdline()):
            return parent.pid
    raise RuntimeError("not running under a spawned Dask worker process")


def count_execution(params: dict[str, Any], seed: int) -> None:
    """Append the seed to `<faults_file>.executions`, so tests can count every execution."""
    path = params.get("faults_file")
    if path:
        with open(f"{path}.executions", "a") as log:
            log.write(f"{seed}\n")


def executions(faults_file: str | Path) -> dict[int, int]:
    """Return how many times each seed ran (from `count_execution`)."""
    path = Path(f"{faults_file}.executions")
    counts: dict[int, int] = {}
    if path.exists():
        for line in path.read_text().split():
            counts[int(line)] = counts.get(int(line), 0) + 1
    return counts


def simulate(params: dict[str, Any], seed: int) -> dict[str, Any]:
    """Return deterministic outputs, or hang, crash, flood stderr as asked."""
    count_execution(params, seed)
    behavior = behavior_for(params, seed)
    if behavior == "hang":
        time.sleep(3600)
    elif behavior == "hungry":  # 2 GB touched (resident): more than a test worker may use
        import numpy as np

        block = np.ones(250_000_000)
        time.sleep(30)
        return {"y": float(block[0])}
    elif behavior in ("stderr_flood", "stderr_1mb"):
        chunk = "x" * 1023 + "\n"
        for _ in range(10 * 1024 if behavior == "stderr_flood" else 1024):  # 10 MiB or 1 MiB
            sys.stderr.write(chunk)
        sys.stderr.write("flood done\n")
    elif behavior == "stdout_flood":
        chunk = "y" * 1023 + "\n"
        for _ in range(10 * 1024):
            sys.stdout.write(chunk)
    elif behavior == "exit":
        sys.stderr.write("about to exit\n")
        sys.stderr.flush()
        os._exit(3)
    elif behavior == "segfault":
        ctypes.string_at(0)
    elif behavior == "raise":
        raise RuntimeError(f"model failed on purpose (seed {seed})")
    elif behavior == "raise_text":  # an error quoting user text: markup, controls
        raise RuntimeError(str(params.get("error_text")))
    elif behavior == "bad_output":
        return {"seed": 1.0}
    elif behavior == "not_a_mapping":
        return [1, 2, 3]  # type: ignore[return-value]
    elif behavior in BASE_EXCEPTIONS:
        raise BASE_EXCEPTIONS[behavior]()
    elif behavior == "kill_worker":  # a model in a child process kills its Dask worker
        os.kill(dask_worker_pid(), signal.SIGKILL)
        time.sleep(3600)
    elif behavior == "stop_worker":  # a model in a child process stops its Dask worker
        os.kill(dask_worker_pid(), signal.SIGSTOP)
        time.sleep(3600)
    elif behavior == "hold_gil":  # catastrophic backtracking: one C call that keeps the GIL
        re.match(r"(a+)+$", "a" * 64 + "b")
    elif behavior == "spawn_and_hang":
        import subprocess

        subprocess.Popen([sys.executable, "-c", "import time; time.sleep(3600)"])
        time.sleep(3600)
    elif behavior in escapes.BEHAVIORS:  # daemons, closed descriptors, big allocations
        escapes.BEHAVIORS[behavior](params)
    time.sleep(float(params.get("sleep_s", 0.0)))
    a = float(params.get("a", 1.0))
    return {
        "x": (seed % 1000) / 1000.0,
        "y": a * 2.0,
        "series": [a * t + (seed % 7) for t in range(int(params.get("series_points", 5)))],
    }
