"""Benchmark model: burns a fixed CPU time per replicate, returns two outputs."""

from __future__ import annotations

import time
from typing import Any


def simulate(params: dict[str, Any], seed: int) -> dict[str, float]:
    """Spin for params['cost_ms'] of this thread's CPU time."""
    # Thread time, not process time: in a Dask worker process the event loop's CPU would
    # otherwise count towards the model's burn and hide the orchestration cost.
    deadline = time.thread_time() + float(params["cost_ms"]) / 1000.0
    spins = 0
    while time.thread_time() < deadline:
        spins += 1
    return {"draw": float(seed % 1000), "spins": float(spins)}
