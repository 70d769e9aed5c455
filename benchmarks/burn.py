"""Benchmark model: burns a fixed CPU time per replicate, returns two outputs and a series."""

from __future__ import annotations

import time
from typing import Any

import numpy as np

SERIES_MEAN = 5.0
"""Mean of the Poisson draws of the series output."""


def simulate(params: dict[str, Any], seed: int) -> dict[str, Any]:
    """Spin for params['cost_ms'] of this thread's CPU time.

    With params['series'] = N > 0, also returns `counts`: N Poisson draws seeded by the
    replicate's seed (~0.2 ms for 10,000 points), so studies with
    large series outputs can be measured.
    """
    # Thread time, not process time: in a Dask worker process the event loop's CPU would
    # otherwise count towards the model's burn and hide the orchestration cost.
    deadline = time.thread_time() + float(params["cost_ms"]) / 1000.0
    spins = 0
    while time.thread_time() < deadline:
        spins += 1
    outputs: dict[str, Any] = {"draw": float(seed % 1000), "spins": float(spins)}
    points = int(params.get("series", 0))
    if points > 0:
        rng = np.random.default_rng(seed)
        outputs["counts"] = rng.poisson(SERIES_MEAN, points).astype(np.float64)
    return outputs
