"""Optuna's journal file, written by one process: no lock, no re-read, one fsync per step.

```python
>>> from optuna.storages import JournalStorage
>>> storage = JournalStorage(JournalFile(path))  # path: the calibration's optuna.journal
```

Same format as Optuna's `JournalFileBackend` (one JSON operation per line), so either reads
the other's journals. Optuna's backend takes a symlink lock, re-opens and re-reads the
file's new lines on every storage read, and fsyncs every line; a calibration asks and tells
a trial in about ten journal lines, and the search's own loop spent a third of its time
there, measured (benchmarks/calibration_loop.py). Here the calibration's output lock already
makes its flow the only writer, so the lines are read once, kept, and appended and
flushed to the operating system (a killed process loses none); `sync` fsyncs them, which
the search does before its trial log records what they hold (`simstudy/calibrate/search.py`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from optuna.storages.journal import BaseJournalBackend


class JournalFile(BaseJournalBackend):
    """An Optuna journal file that this process alone writes (see the module's docstring)."""

    def __init__(self, path: Path):
        self.path = path
        self._logs: list[dict[str, Any]] = []
        if path.exists():
            # Checked before (`optimizer.check_journal_lines`): every line is JSON.
            with path.open("rb") as journal:
                self._logs = [json.loads(line) for line in journal if line.strip()]
        self._handle = path.open("ab")
        self._unsynced = False

    def read_logs(self, log_number_from: int) -> Iterable[dict[str, Any]]:
        """Return the operations from number `log_number_from` on."""
        return self._logs[log_number_from:]

    def append_logs(self, logs: list[dict[str, Any]]) -> None:
        """Append operations, flushed to the operating system."""
        text = "".join(json.dumps(log, separators=(",", ":")) + "\n" for log in logs)
        self._handle.write(text.encode())
        self._handle.flush()
        self._logs.extend(logs)
        self._unsynced = True

    def sync(self) -> None:
        """Write the appended operations through to the disk."""
        if self._unsynced:
            os.fsync(self._handle.fileno())
            self._unsynced = False

    def close(self) -> None:
        """Sync and close the file."""
        if not self._handle.closed:
            self.sync()
            self._handle.close()
