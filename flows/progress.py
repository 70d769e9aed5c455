"""Study progress listeners: a progress bar, the run log, anything in this process."""

from __future__ import annotations

from collections.abc import Callable

from simstudy.run.tracking import TrackerSnapshot

ProgressListener = Callable[[TrackerSnapshot], None]
_listeners: list[ProgressListener] = []


def add_listener(listener: ProgressListener) -> None:
    """Call `listener` with every progress update of studies run in this process."""
    _listeners.append(listener)


def remove_listener(listener: ProgressListener) -> None:
    """Stop calling `listener`."""
    _listeners.remove(listener)


def publish(snapshot: TrackerSnapshot) -> None:
    """Send a progress update to every listener."""
    for listener in list(_listeners):
        listener(snapshot)
