"""Benchmark model: burns a fixed CPU time per replicate, returns two outputs."""

from __future__ import annotations

import time
from typing import Any


def simulate(params: dict[str, Any], seed: int) -> dict[str, float]:
    """Spin for params['cost_ms'] of CPU time."""
    deadline = time.process_time() + float(params["cost_ms"]) / 1000.0
    spins = 0
    while time.process_time() < deadline:
        spins += 1
    return {"draw": float(seed % 1000), "spins": float(spins)}
