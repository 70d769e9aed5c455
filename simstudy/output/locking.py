"""One run per output folder at a time (an advisory lock file)."""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager

from simstudy.errors import OutputDirError
from simstudy.output.location import OutputStore
from simstudy.output.results import LOCK_FILE


@contextmanager
def output_lock(store: OutputStore) -> Iterator[None]:
    """Hold a local output folder's lock, or raise `OutputDirError` naming the holder.

    Remote outputs (fsspec URLs) have no lock: object stores offer no advisory locks.
    """
    if store.local is None:
        yield
        return
    output = store.local
    output.mkdir(parents=True, exist_ok=True)
    path = output / LOCK_FILE
    handle = path.open("a+")
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            raise OutputDirError(
                f"output {output} is in use by another simstudy run ({holder}); wait for it "
                "to finish or choose another output"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()}\n")
        handle.flush()
        yield
    finally:
        # Closing the file releases the lock; the file stays (removing it would race).
        handle.close()
