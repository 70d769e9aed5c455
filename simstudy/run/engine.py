"""The engine protocol: work submitted while a run goes on, outcomes as each set completes.

```python
>>> from simstudy.run.engine import FixedDesign, SetOutcome
>>> driver = FixedDesign()
>>> driver.finished()
False
```

One engine runs on one cluster in one flow run (`flows/orchestrator.py`). A *driver*
decides what to run: it adds parameter sets, adds replicates to a set it already added
(replicate r of a set always has the same seed, so more replicates extend the earlier
ones), closes sets it will not extend, and receives each set's `SetOutcome` as soon as
the set's replicates are all recorded and aggregated. A fixed design is one submission;
a calibration asks new trials whenever capacity frees (`simstudy/calibrate/search.py`).

As Optuna's optimize loop is separate from its study and a Hydra sweeper from its
launcher, drivers import nothing of Prefect or Dask: they see only this protocol, so a
test drives them with an engine of its own.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

from simstudy.design.expand import ParameterSet


@dataclass(frozen=True)
class SetOutcome:
    """A parameter set's result once all its replicates so far are recorded and aggregated."""

    param_id: str
    status: Literal["ok", "failed"]
    replicates: int
    """Replicates the outcome is over (all of the set's, in any status)."""
    loss: float | None = None
    loss_se: float | None = None
    loss_bias: float | None = None
    """The part of the loss due to the finite replicates (None: unknown for the loss)."""
    reasons: list[str] = field(default_factory=list)
    """Why the set failed (empty when ok). A stall gives no outcome: the run ends, and the
    sets in flight are run again by the next run."""


class Engine(Protocol):
    """What a driver may ask of the engine that runs its work."""

    def add_sets(self, sets: Sequence[ParameterSet], replicates: int) -> None:
        """Run `replicates` replicates of each new set."""

    def extend(self, param_id: str, replicates: int) -> None:
        """Give a set added earlier `replicates` replicates in all (more than it has)."""

    def close(self, param_id: str) -> None:
        """Say a set gets no more replicates: the engine may forget its statistics."""

    def capacity(self) -> int:
        """Return how many sets may run at once to keep every worker busy."""

    def in_flight(self) -> int:
        """Return the sets added or extended whose outcome has not come yet."""


class Driver(Protocol):
    """What decides the work of a run: a fixed design, a search, a sequential method."""

    def start(self, engine: Engine) -> None:
        """Submit the first work."""

    def on_outcomes(self, engine: Engine, outcomes: list[SetOutcome]) -> None:
        """Take sets' outcomes as they come; submit more work if wanted."""

    def finished(self) -> bool:
        """Return whether the driver wants nothing more (the run ends once idle)."""


class FixedDesign:
    """The driver of a fixed design: its sets were given to the engine up front."""

    def __init__(self) -> None:
        self._done = False

    def start(self, engine: Engine) -> None:
        """Nothing to add: the design is the engine's first submission."""
        self._done = True

    def on_outcomes(self, engine: Engine, outcomes: list[SetOutcome]) -> None:
        """A fixed design adds nothing."""

    def finished(self) -> bool:
        """Return True once started: the run ends when its sets are done."""
        return self._done
