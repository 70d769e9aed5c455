"""Study progress: counted by the flow, shown by listeners (a progress bar, the log)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class StudyProgress:
    """How far a study has come."""

    total_replicates: int
    total_sets: int
    replicates: dict[str, int] = field(default_factory=dict)
    sets_aggregated: int = 0
    sets_failed: int = 0

    @property
    def replicates_done(self) -> int:
        """Return replicates finished in any status."""
        return sum(self.replicates.values())


ProgressListener = Callable[[StudyProgress], None]
_listeners: list[ProgressListener] = []


def add_listener(listener: ProgressListener) -> None:
    """Call `listener` with every progress update of studies run in this process."""
    _listeners.append(listener)


def remove_listener(listener: ProgressListener) -> None:
    """Stop calling `listener`."""
    _listeners.remove(listener)


def publish(progress: StudyProgress) -> None:
    """Send a progress update to every listener."""
    for listener in list(_listeners):
        listener(progress)
