"""What the report reads from a finished study's output folder, and only what it needs.

Small files (study.json, aggregates, ranking, targets, sensitivity) are read whole; the
replicate and series files are read later, per output, a row group at a time and only the
columns and parameter sets a plot draws, so memory does not grow with replicates.

```python
>>> data = load_report_data(OutputStore("results/seir-demo"))
>>> data.varied, len(data.order)
(['beta', 'gamma'], 6)
```
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from simstudy.display import split_parameters
from simstudy.errors import OutputDirError
from simstudy.output.location import OutputStore
from simstudy.output.reading import (
    check_schema,
    checked_schema,
    read_finished_study,
    read_result_table,
)
from simstudy.output.results import (
    AGGREGATES_FILE,
    RANKING_FILE,
    REPLICATES_FILE,
    SENSITIVITY_FILE,
    STUDY_FILE,
    TARGETS_FILE,
    TIMESERIES_AGGREGATES_FILE,
)

MAX_REPLICATES_READ = 10_000
"""Replicates per drawn set read for a distribution plot: enough for its box and dots.

Replicates are independent draws, so the first ones in the file are a fair sample."""


@dataclass
class ReportData:
    """A finished study's small files, and where to read its large ones."""

    store: OutputStore
    study: dict[str, Any]
    aggregates: pa.Table | None
    ranking: pa.Table | None
    targets: pa.Table | None
    sensitivity: pa.Table | None
    varied: list[str]
    fixed: dict[str, Any]
    params: dict[str, dict[str, Any]] = field(default_factory=dict)
    order: list[str] = field(default_factory=list)
    ranks: dict[str, int] = field(default_factory=dict)

    @property
    def scalar_outputs(self) -> list[str]:
        """Return the scalar output names, sorted."""
        if self.aggregates is None:
            return []
        return sorted(set(self.aggregates.column("output").to_pylist()))

    @property
    def series_outputs(self) -> list[str]:
        """Return the series output names, sorted (none without timeseries_aggregates)."""
        if not self.store.exists(TIMESERIES_AGGREGATES_FILE):
            return []
        names: set[str] = set()
        batches = _batches(
            self.store, TIMESERIES_AGGREGATES_FILE, ["output"], dictionaries=("output",)
        )
        for batch in batches:
            names.update(pc.unique(batch.column("output").dictionary_decode()).to_pylist())
        return sorted(names)

    @property
    def ordered_by_loss(self) -> bool:
        """Return True when `order` is the ranking's (best first), not the design's."""
        return bool(self.ranks)

    def loss(self) -> dict[str, float]:
        """Return the finite loss of each ranked parameter set."""
        if self.ranking is None or "loss" not in self.ranking.column_names:
            return {}
        ids = self.ranking.column("param_id").to_pylist()
        losses = self.ranking.column("loss").to_pylist()
        return {
            pid: float(value)
            for pid, value in zip(ids, losses, strict=True)
            if value is not None and math.isfinite(value)
        }

    def label(self, pid: str) -> str:
        """Return how a parameter set is named in plots: its rank or index, and id prefix."""
        if pid in self.ranks:
            return f"#{self.ranks[pid]} {pid[:8]}"
        return f"{pid[:8]}"


def load_report_data(store: OutputStore) -> ReportData:
    """Read the small files of a finished study; raise `OutputDirError` if it is not one."""
    if store.is_file_location() or not store.exists(STUDY_FILE):
        raise OutputDirError(
            f"{store} is not a simstudy output folder (it has no {STUDY_FILE}): "
            "give the output folder of a finished study"
        )
    study = read_finished_study(store)
    sets = study["parameter_sets"]
    varied, fixed = split_parameters([ps.get("params", {}) for ps in sets])
    data = ReportData(
        store=store,
        study=study,
        aggregates=_optional(store, AGGREGATES_FILE),
        ranking=_optional(store, RANKING_FILE),
        targets=_optional(store, TARGETS_FILE),
        sensitivity=_optional(store, SENSITIVITY_FILE),
        varied=varied,
        fixed=fixed,
        params={ps["param_id"]: ps.get("params", {}) for ps in sets},
    )
    data.order = [ps["param_id"] for ps in sorted(sets, key=lambda ps: ps.get("index", 0))]
    if data.ranking is not None and {"param_id", "rank"} <= set(data.ranking.column_names):
        ids = data.ranking.column("param_id").to_pylist()
        ranks = data.ranking.column("rank").to_pylist()
        data.ranks = {pid: int(r) for pid, r in zip(ids, ranks, strict=True) if r is not None}
        ranked = sorted(data.ranks, key=data.ranks.__getitem__)
        data.order = ranked + [pid for pid in data.order if pid not in data.ranks]
    return data


def _optional(store: OutputStore, name: str) -> pa.Table | None:
    return read_result_table(store, name) if store.exists(name) else None


def _batches(
    store: OutputStore,
    name: str,
    columns: list[str],
    batch_size: int = 65_536,
    dictionaries: tuple[str, ...] = (),
) -> Iterator[pa.RecordBatch]:
    """Yield a Parquet file's columns in batches: memory of one batch, whatever its size."""
    with store.fs.open(store.path(name), "rb") as handle:
        try:
            footer = pq.ParquetFile(handle)
            schema = check_schema(store, name, footer.schema_arrow)
            # Ids as dictionaries: a 64-character param_id per time point would be most of
            # the memory of a series file (1,000 sets x 365 points: 23 MB of ids). The
            # footer parsed above serves again.
            file = pq.ParquetFile(
                handle, metadata=footer.metadata, read_dictionary=list(dictionaries)
            )
            present = [c for c in columns if c in schema.names]
            yield from file.iter_batches(batch_size=batch_size, columns=present, use_threads=False)
        except (OSError, pa.ArrowException) as exc:  # not Parquet, or a damaged row group
            raise OutputDirError(
                f"cannot read {store.path(name)}: {exc}; run the study again to rebuild it"
            ) from exc


def replicate_values(
    data: ReportData, outputs: list[str], ids: list[str], limit: int = MAX_REPLICATES_READ
) -> dict[str, dict[str, np.ndarray]]:
    """Return output -> param_id -> finite replicate values (the first `limit`), in one read."""
    if not data.store.exists(REPLICATES_FILE) or not ids:
        return {}
    schema = checked_schema(data.store, REPLICATES_FILE)
    numeric = {
        f.name for f in schema if pa.types.is_integer(f.type) or pa.types.is_floating(f.type)
    }
    outputs = [name for name in outputs if name in numeric]
    wanted = pa.array(ids, pa.string())
    found: dict[str, dict[str, list[np.ndarray]]] = {name: {} for name in outputs}
    counts = {(name, pid): 0 for name in outputs for pid in ids}
    # Failed replicates have no outputs (null): no need to read the status column.
    for batch in _batches(data.store, REPLICATES_FILE, ["param_id", *outputs]):
        rows = batch.filter(pc.is_in(batch.column("param_id"), wanted))
        if rows.num_rows == 0:
            continue
        pids = rows.column("param_id").to_numpy(zero_copy_only=False)
        for name in outputs:
            values = rows.column(name).to_numpy(zero_copy_only=False).astype(float)
            for pid in np.unique(pids):
                room = limit - counts[(name, pid)]
                if room <= 0:
                    continue
                mine = values[pids == pid]
                mine = mine[np.isfinite(mine)][:room]  # inf has no place on an axis
                if len(mine):
                    found[name].setdefault(str(pid), []).append(mine)
                    counts[(name, pid)] += len(mine)
        if all(n >= limit for n in counts.values()):
            break  # every drawn set has its sample: the rest of a huge file is not read
    return {
        name: {pid: np.concatenate(parts) for pid, parts in by_set.items()}
        for name, by_set in found.items()
    }


@dataclass
class SeriesView:
    """One series output as a plot draws it: some sets whole, the others as an envelope."""

    drawn: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]
    """param_id -> (t, centre, low, high), sorted by t."""
    envelope: tuple[np.ndarray, np.ndarray, np.ndarray] | None
    """(t, lowest, highest) centre line of the other sets at each t, or None."""
    others: int
    """Parameter sets in the envelope."""


def series_view(
    data: ReportData, output: str, drawn: list[str], quantiles: bool
) -> SeriesView | None:
    """Return the chosen sets' series of an output whole, and the others' envelope.

    Read a batch at a time, so memory holds the drawn sets' arrays and one batch, whatever
    the number of sets. The centre is q0.5 with `quantiles` (band q0.05-q0.95), else the
    mean (band mean +- 2 std).
    """
    if not data.store.exists(TIMESERIES_AGGREGATES_FILE):
        return None
    wanted = ["q0.05", "q0.5", "q0.95"] if quantiles else ["mean", "std"]
    chosen = set(drawn)
    pieces: dict[str, list[tuple[np.ndarray, ...]]] = {}
    others: set[str] = set()
    low = np.full(0, np.nan)
    high = np.full(0, np.nan)
    batches = _batches(
        data.store,
        TIMESERIES_AGGREGATES_FILE,
        ["output", "param_id", "t", *wanted],
        dictionaries=("output", "param_id"),
    )
    for batch in batches:
        outputs = batch.column("output")
        found = outputs.dictionary.index(output).as_py()
        if found < 0:
            continue
        rows = batch.filter(pc.equal(outputs.indices, found))
        if rows.num_rows == 0:
            continue
        ids = rows.column("param_id")
        names = ids.dictionary.to_pylist()
        codes = ids.indices.to_numpy(zero_copy_only=False)
        t = rows.column("t").to_numpy(zero_copy_only=False)
        centre, low_edge, high_edge = _centre_and_band(rows, quantiles)
        mine = np.zeros(len(codes), dtype=bool)
        for code, name in enumerate(names):
            if name in chosen:
                here = codes == code
                if here.any():
                    mine |= here
                    pieces.setdefault(name, []).append(
                        (t[here], centre[here], low_edge[here], high_edge[here])
                    )
        rest = ~mine & (t >= 0)  # time points are positions in the series: never negative
        if not rest.any():
            continue
        others.update(names[i] for i in np.unique(codes[rest]))
        if t[rest].max() >= len(low):
            grown = int(t[rest].max()) + 1
            low = np.r_[low, np.full(grown - len(low), np.nan)]
            high = np.r_[high, np.full(grown - len(high), np.nan)]
        # fmin/fmax: a missing (NaN) centre does not erase the rest
        np.fmin.at(low, t[rest], centre[rest])
        np.fmax.at(high, t[rest], centre[rest])
    if not pieces and not others:
        return None
    series = {name: _joined(parts) for name, parts in pieces.items()}
    envelope = None
    if others:
        points = np.flatnonzero(~np.isnan(low))
        envelope = (points.astype(float), low[points], high[points])
    return SeriesView(drawn=series, envelope=envelope, others=len(others))


def _centre_and_band(
    rows: pa.RecordBatch, quantiles: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    def column(name: str) -> np.ndarray:
        return rows.column(name).to_numpy(zero_copy_only=False).astype(float)

    if quantiles:
        return column("q0.5"), column("q0.05"), column("q0.95")
    centre = column("mean")
    spread = 2 * np.nan_to_num(column("std"))
    return centre, centre - spread, centre + spread


def _joined(
    parts: list[tuple[np.ndarray, ...]],
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Return one set's (t, centre, low, high) from its batches' pieces, sorted by t."""
    t, centre, low, high = (np.concatenate(column) for column in zip(*parts, strict=True))
    if len(t) > 1 and (np.diff(t) < 0).any():  # written in order: sorting is rarely needed
        order = np.argsort(t, kind="stable")
        t, centre, low, high = t[order], centre[order], low[order], high[order]
    return t.astype(float), centre, low, high


def series_quantiles(data: ReportData) -> bool:
    """Return True when the series aggregates have the 5%, 50% and 95% quantiles."""
    if not data.store.exists(TIMESERIES_AGGREGATES_FILE):
        return False
    names = set(checked_schema(data.store, TIMESERIES_AGGREGATES_FILE).names)
    return {"q0.05", "q0.5", "q0.95"} <= names
