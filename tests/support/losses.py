"""User losses that take their time: an aggregation computing, and one waiting."""

from __future__ import annotations

import time
from typing import Any

COMPUTING_SECONDS = 8.0
"""Longer than the stall timeout of the tests that use it (3 s), shorter than their limit."""


def computing(summary: dict[str, Any], observed: dict[str, Any]) -> float:
    """Return the absolute error of the mean after computing for COMPUTING_SECONDS."""
    deadline = time.monotonic() + COMPUTING_SECONDS
    spins = 0
    while time.monotonic() < deadline:
        spins += sum(range(1000)) % 7  # pure Python: holds the GIL, as a slow loss would
    return float(abs(summary["mean"] - observed["value"]).sum())


def waiting(summary: dict[str, Any], observed: dict[str, Any]) -> float:
    """Wait for an hour without computing (a loss blocked on something), then return 0."""
    time.sleep(3600)
    return 0.0


def exiting(summary: dict[str, Any], observed: dict[str, Any]) -> float:
    """Call sys.exit, as a script's loss might."""
    raise SystemExit(3)


def interrupting(summary: dict[str, Any], observed: dict[str, Any]) -> float:
    """Raise KeyboardInterrupt."""
    raise KeyboardInterrupt


def not_a_number(summary: dict[str, Any], observed: dict[str, Any]) -> float:
    """Return NaN whatever the replicates."""
    return float("nan")


def hungry(summary: dict[str, Any], observed: dict[str, Any]) -> float:
    """Hold 2 GB (touched, so resident) for a while: more than a test worker may use."""
    import numpy as np

    block = np.ones(250_000_000)
    time.sleep(30)
    return float(block[0])
