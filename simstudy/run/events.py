"""What a run on a worker tells the flow while it runs: one typed definition for both sides.

```python
>>> from simstudy.run.events import RunBegan, parse_event
>>> began = RunBegan(key="sim-1", execution="e1", param_id="3f2a", replicate=0)
>>> parse_event(began.to_message()) == began
True
```

A run's reporter (`tasks/simulate.py`) publishes these as Dask events on the study's
topic, and the engine (`flows/orchestrator.py`) parses what it receives with
`parse_event`: a field renamed on one side cannot go unnoticed on the other. The
messages stay plain dicts of bytes and strings on the wire: the scheduler relays them
without importing simstudy.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class RunBegan:
    """A run began (every replicate's start, for a careful run)."""

    key: str
    """The Dask key of the run's task: which submitted run this is."""
    execution: str
    """This execution of the run (Dask may run a task again after a lost worker)."""
    param_id: str
    replicate: int

    def to_message(self) -> dict[str, Any]:
        """Return the event as sent on the wire."""
        return {
            "key": self.key,
            "execution": self.execution,
            "param_id": self.param_id,
            "started": self.replicate,
        }


@dataclass(frozen=True)
class RecordsReported:
    """Finished replicates' records, as one Arrow buffer (`simstudy.run.columns`)."""

    key: str
    execution: str
    records: bytes
    provisional: bool = False
    """Their outputs are in a part the worker has not written yet: counted, not final."""

    def to_message(self) -> dict[str, Any]:
        """Return the event as sent on the wire."""
        message: dict[str, Any] = {
            "key": self.key,
            "execution": self.execution,
            "records": self.records,
        }
        if self.provisional:
            message["provisional"] = True
        return message


RunEvent = RunBegan | RecordsReported


def parse_event(message: dict[str, Any]) -> RunEvent | None:
    """Return the event a message carries (None: not one of ours, or malformed)."""
    try:
        if "started" in message:
            return RunBegan(
                key=str(message["key"]),
                execution=str(message["execution"]),
                param_id=str(message["param_id"]),
                replicate=int(message["started"]),
            )
        if "records" in message:
            return RecordsReported(
                key=str(message["key"]),
                execution=str(message["execution"]),
                records=bytes(message["records"]),
                provisional=bool(message.get("provisional", False)),
            )
    except (KeyError, TypeError, ValueError):
        return None
    return None
