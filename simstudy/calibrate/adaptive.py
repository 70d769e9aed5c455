"""Adaptive replicates: as trials complete, those still competitive with the best double theirs.

```python
>>> from simstudy.calibrate.adaptive import TrialScore, allocate
>>> scores = [TrialScore(0, 405.0, 12.0, 4), TrialScore(1, 412.0, 31.0, 4),
...           TrialScore(2, 900.0, 20.0, 4)]
>>> {n: a.replicates for n, a in allocate(scores, minimum=4, maximum=64).items()}
{0: 8, 1: 8, 2: 4}
```

The rule (docs/guides/calibration.md): a trial is competitive when the lower end of
its interval is below the upper end of the best trial's, loss - loss_se < best.loss +
best.loss_se; the best is the complete trial of lowest loss (the lower number on a tie). A
competitive trial below `maximum` replicates gets twice its replicates (at most
`maximum`); the best is doubled too while another trial overlaps it, since the ranking
then hangs on its uncertainty as much as on theirs. A trial without loss_se (one replicate,
or a loss without one) is competitive until it reaches `maximum`: nothing says it is not.
Everything else keeps its replicates. Pure and deterministic: the same scores give the
same allocation, so a resumed calibration allocates as the first run did.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TrialScore:
    """A told trial: its loss and loss_se over its replicates (None when it failed)."""

    number: int
    loss: float | None
    loss_se: float | None
    replicates: int


@dataclass(frozen=True)
class Allocation:
    """The replicates a trial gets next, and why (shown in trials.parquet and the report)."""

    replicates: int
    reason: str


def allocate(trials: list[TrialScore], minimum: int, maximum: int) -> dict[int, Allocation]:
    """Return each trial's next replicates and the reason, by trial number."""
    if not 1 <= minimum <= maximum:
        raise ValueError(f"replicates: min ({minimum}) must be from 1 to max ({maximum})")
    scored = [t for t in trials if t.loss is not None]
    if not scored:
        return {t.number: Allocation(t.replicates, "failed") for t in trials}
    best = min(scored, key=lambda t: (t.loss, t.number))
    best_upper = _upper(best)
    rivals = [t for t in scored if t.number != best.number and _overlaps(t, best_upper)]
    rival_numbers = {t.number for t in rivals}
    allocations = {}
    for trial in trials:
        if trial.loss is None:
            allocations[trial.number] = Allocation(trial.replicates, "failed")
        elif trial.replicates >= maximum:
            allocations[trial.number] = Allocation(trial.replicates, "at max")
        elif trial.number == best.number:
            allocations[trial.number] = _best_allocation(trial, rivals, maximum)
        elif trial.number in rival_numbers:
            allocations[trial.number] = Allocation(
                min(2 * trial.replicates, maximum),
                f"competitive: {_interval(trial)} overlaps best {_interval(best)}",
            )
        else:
            allocations[trial.number] = Allocation(
                trial.replicates, f"resolved: {_interval(trial)} above best {_interval(best)}"
            )
    return allocations


def simulations_saved(allocations: dict[int, Allocation], maximum: int) -> int:
    """Return the simulations saved against giving every trial `maximum` replicates."""
    return sum(maximum - allocation.replicates for allocation in allocations.values())


def _best_allocation(best: TrialScore, rivals: list[TrialScore], maximum: int) -> Allocation:
    if not rivals:
        return Allocation(best.replicates, f"best {_interval(best)}, no other trial overlaps")
    return Allocation(
        min(2 * best.replicates, maximum),
        f"best {_interval(best)}, overlapped by {len(rivals)} trial(s)",
    )


def _upper(trial: TrialScore) -> float:
    assert trial.loss is not None
    # No standard error: the interval is unbounded, everything overlaps it.
    return float("inf") if trial.loss_se is None else trial.loss + trial.loss_se


def _overlaps(trial: TrialScore, best_upper: float) -> bool:
    assert trial.loss is not None
    if trial.loss_se is None:
        return True
    return trial.loss - trial.loss_se < best_upper


def _interval(trial: TrialScore) -> str:
    se = "?" if trial.loss_se is None else f"{trial.loss_se:.3g}"
    return f"{trial.loss:.4g}+-{se}"
