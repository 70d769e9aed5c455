"""Posterior predictive draws: fresh replicates of the final population, and their bands.

```python
>>> from simstudy.calibrate.predictive import PREDICTIVE_TABLE
>>> PREDICTIVE_TABLE
'predictive.parquet'
```

Once ABC-SMC stops, every particle of its last population gets `predictive_replicates`
more replicates: the replicates after those its distance used, so each is a draw of the
model at a posterior parameter that no acceptance has selected (the accepted replicate
itself is conditioned on being within epsilon of the data, and its band would be too
narrow). Replicate r of a set always has the same seed: a resumed or rerun posterior
reuses them from the cache. Each output's band at each target point is the weighted
quantiles of those draws, a particle's draws sharing its weight.

`WithPredictive` wraps the driver: it keeps the sets that may enter the population open
in the engine (a closed set cannot be extended), and once the driver stops it extends
them. Imports nothing from Prefect or Dask.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa

from simstudy.analysis.targets import Targets
from simstudy.calibrate.abc_smc import AbcSmc, weighted_quantiles
from simstudy.design.expand import ParameterSet
from simstudy.run.engine import Engine, SetOutcome

PREDICTIVE_TABLE = "predictive.parquet"
BAND_LEVELS = (0.025, 0.25, 0.5, 0.75, 0.975)
BAND_COLUMNS = ("q2_5", "q25", "q50", "q75", "q97_5")


class _Holding:
    """The engine as the driver sees it: a close is held while the set may be extended."""

    def __init__(self, outer: WithPredictive, engine: Engine):
        self._outer, self._engine = outer, engine

    def add_sets(self, sets: Sequence[ParameterSet], replicates: int) -> None:
        """Add sets, remembering that this engine has them."""
        self._outer.added.update(s.param_id for s in sets)
        self._engine.add_sets(sets, replicates)

    def extend(self, param_id: str, replicates: int) -> None:
        """Give a set more replicates."""
        self._engine.extend(param_id, replicates)

    def close(self, param_id: str) -> None:
        """Close a set now, or hold it open while it is, or may enter, the population."""
        if self._outer.driver.may_use(param_id):
            self._outer.held.add(param_id)
        else:
            self._engine.close(param_id)

    def capacity(self) -> int:
        """Return the engine's capacity."""
        return self._engine.capacity()

    def in_flight(self) -> int:
        """Return the sets in flight."""
        return self._engine.in_flight()


class WithPredictive:
    """An ABC-SMC driver, then `replicates` fresh replicates of each final particle."""

    def __init__(self, driver: AbcSmc, replicates: int):
        self.driver = driver
        self.replicates = replicates
        self.added: set[str] = set()  # sets this engine has had
        self.held: set[str] = set()  # closed by the driver, kept open here
        self.waiting: set[str] = set()  # predictive sets without their outcome
        self.missing: list[str] = []  # particles that could not be extended (closed)
        self._generations = 0
        self._started = False

    def start(self, engine: Engine) -> None:
        """Start the driver; a posterior that ended already draws its predictions now."""
        self.driver.start(_Holding(self, engine))
        self._after(engine)

    def on_outcomes(self, engine: Engine, outcomes: list[SetOutcome]) -> None:
        """Give the driver its outcomes; note the predictive ones."""
        self.waiting.difference_update(o.param_id for o in outcomes)
        self.driver.on_outcomes(_Holding(self, engine), outcomes)
        self._after(engine)

    def finished(self) -> bool:
        """Return whether the driver stopped and every predictive draw has come."""
        return (
            self.driver.finished() and (self._started or not self._wanted()) and (not self.waiting)
        )

    def draws(self) -> list[tuple[str, float, range]]:
        """Return each final particle's set, weight and predictive replicates."""
        population = self.driver.population
        if population is None or not self.replicates:
            return []
        first = self.driver.settings.replicates
        span = range(first, first + self.replicates)
        return [
            (pid, float(weight), span)
            for pid, weight in zip(population.param_ids, population.weights, strict=True)
        ]

    def _wanted(self) -> bool:
        return self.replicates > 0 and self.driver.population is not None

    def _after(self, engine: Engine) -> None:
        if len(self.driver.generations) != self._generations:
            self._generations = len(self.driver.generations)
            released = {pid for pid in self.held if not self.driver.may_use(pid)}
            self.held -= released
            for pid in sorted(released):
                engine.close(pid)
        if self.driver.finished() and not self._started and self._wanted():
            self._started = True
            self._predict(engine)

    def _predict(self, engine: Engine) -> None:
        total = self.driver.settings.replicates + self.replicates
        new = []
        for parameter_set in self.driver.population_sets():
            pid = parameter_set.param_id
            if pid in self.waiting:
                continue  # a particle twice in the population: extended once
            if pid in self.held:
                engine.extend(pid, total)
            elif pid in self.added:
                self.missing.append(pid)  # closed by this engine before: cannot be extended
                continue
            else:
                new.append(parameter_set)  # a resumed run: the cache has its first replicates
            self.waiting.add(pid)
        if new:
            self.added.update(s.param_id for s in new)
            engine.add_sets(new, total)


def predictive_table(
    targets: Targets, draws: Sequence[tuple[str, float, range]], outputs: dict[tuple[str, int], Any]
) -> pa.Table:
    """Return each target point's observed value and weighted predictive quantiles.

    `outputs` maps (param_id, replicate) to that replicate's value of each output (a dict);
    a draw whose replicate is missing (failed) is left out and the others reweighted.
    """
    rows: dict[str, list[Any]] = {
        "output": [], "t": [], "observed": [], "draws": [], **{c: [] for c in BAND_COLUMNS}
    }  # fmt: skip
    for target in targets.outputs:
        values: list[np.ndarray] = []
        weights: list[float] = []
        for pid, weight, replicates in draws:
            found = [
                output[target.output]
                for output in (outputs.get((pid, r)) for r in replicates)
                if output is not None and target.output in output
            ]
            for value in found:
                values.append(np.atleast_1d(np.asarray(value, dtype=np.float64)))
                weights.append(weight / len(found))
        for point, observed in zip(target.points.tolist(), target.value.tolist(), strict=True):
            at = np.array([v[point] if point < len(v) else np.nan for v in values])
            keep = np.isfinite(at)
            rows["output"].append(target.output)
            rows["t"].append(None if target.t is None else point)
            rows["observed"].append(float(observed))
            rows["draws"].append(int(keep.sum()))
            quantiles = (
                weighted_quantiles(at[keep], np.asarray(weights)[keep], list(BAND_LEVELS))
                if keep.any() else [float("nan")] * len(BAND_LEVELS)
            )  # fmt: skip
            for column, value in zip(BAND_COLUMNS, quantiles, strict=True):
                rows[column].append(float(value))
    return pa.table(rows, schema=PREDICTIVE_SCHEMA)


PREDICTIVE_SCHEMA = pa.schema(
    [("output", pa.string()), ("t", pa.int64()), ("observed", pa.float64()),
     ("draws", pa.int64()), *((column, pa.float64()) for column in BAND_COLUMNS)]
)  # fmt: skip


def coverage(table: pa.Table) -> dict[str, dict[str, float | int]]:
    """Return per output: its target points and the share of observed values in the 95 % band."""
    found: dict[str, dict[str, float | int]] = {}
    columns = table.to_pydict()
    for output in dict.fromkeys(columns["output"]):
        rows = [i for i, name in enumerate(columns["output"]) if name == output]
        inside = [columns["q2_5"][i] <= columns["observed"][i] <= columns["q97_5"][i] for i in rows]
        found[output] = {"points": len(rows), "inside_95": round(sum(inside) / len(rows), 4)}
    return found
