"""A deterministic test model that misbehaves on request.

The behaviour of a replicate comes from its `behavior` parameter, or, for chosen
replicates of a study, from a JSON file mapping a seed to a behaviour, named by the
`faults_file` parameter or the SIMSTUDY_FAULTS variable (seeds are known only once the
parameter ids are, so the file's path is a parameter and its content is written after). A behaviour
ending in `_once` misbehaves on the first attempt only (a marker file remembers it).
"""

from __future__ import annotations

import ctypes
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

FAULTS_ENV = "SIMSTUDY_FAULTS"


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


def simulate(params: dict[str, Any], seed: int) -> dict[str, Any]:
    """Return deterministic outputs, or hang, crash, flood stderr as asked."""
    behavior = behavior_for(params, seed)
    if behavior == "hang":
        time.sleep(3600)
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
    elif behavior == "bad_output":
        return {"seed": 1.0}
    elif behavior == "not_a_mapping":
        return [1, 2, 3]  # type: ignore[return-value]
    elif behavior == "spawn_and_hang":
        import subprocess

        subprocess.Popen([sys.executable, "-c", "import time; time.sleep(3600)"])
        time.sleep(3600)
    time.sleep(float(params.get("sleep_s", 0.0)))
    a = float(params.get("a", 1.0))
    return {
        "x": (seed % 1000) / 1000.0,
        "y": a * 2.0,
        "series": [a * t + (seed % 7) for t in range(5)],
    }
