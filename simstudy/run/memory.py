"""Large buffers the flow process frees go back to the system, so its size follows its data.

The flow handles one large buffer after another (a run's outputs, a part, a set's exact
values for quantiles). By default glibc raises its mmap threshold to the largest block
freed (up to 32 MB), so later buffers come from a heap that does not shrink. Fixing the
threshold keeps large blocks mapped on their own and unmapped when freed. Measured on
100 sets x 1,000 replicates with a 365-point series (`benchmarks/overhead.py`), flow
process peak and wall time:

| setting | peak | wall |
| --- | --- | --- |
| defaults | 568 MiB | 38.9 s |
| this threshold | 518 MiB | 39.8 s |
| Arrow's system pool instead of mimalloc | 591 MiB | 37.9 s |
| both | 476 MiB | 44.5 s |

Only the threshold is set: with the system pool too, every Arrow buffer paid a mapping.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

MMAP_THRESHOLD_BYTES = 1 << 20
"""Blocks from this size up are mapped and unmapped on their own."""
_M_MMAP_THRESHOLD = -3  # mallopt's parameter number, from glibc's malloc.h
logger = logging.getLogger(__name__)


def return_freed_memory() -> None:
    """Make large freed blocks go back to the system at once (glibc malloc)."""
    library = ctypes.util.find_library("c")
    if library is None:
        return
    try:
        # Setting the threshold also turns off glibc's raising of it.
        ctypes.CDLL(library).mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)
    except (OSError, AttributeError) as exc:  # not glibc: its allocator's own rules apply
        logger.debug("mallopt is not available: %s", exc)
