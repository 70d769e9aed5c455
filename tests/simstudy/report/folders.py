"""Output folders of finished studies written by hand, following docs/concepts/outputs.md.

Fast enough for 1,000 sets x 4 replicates or 100 sets x 1,000 replicates with a
365-point series: columns are built with numpy, never row by row.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa

from simstudy.design.identity import param_id
from simstudy.output.location import OutputStore
from simstudy.output.results import (
    AGGREGATES_FILE,
    RANKING_FILE,
    REPLICATES_FILE,
    SENSITIVITY_FILE,
    STUDY_FILE,
    TARGETS_FILE,
    TIMESERIES_AGGREGATES_FILE,
    write_json,
    write_table,
)
from simstudy.run.columns import RECORD_SCHEMA

SCALARS = ("attack_rate", "peak_day")
SERIES = "incidence"
QUANTILES = {"q0.05": -1.645, "q0.5": 0.0, "q0.95": 1.645}


def write_folder(
    store: OutputStore,
    sets: int = 4,
    replicates: int = 3,
    series_points: int = 0,
    quantiles: bool = True,
    ranking: bool = False,
    targets: bool = False,
    sensitivity: str | None = None,
    failed: int = 0,
    name: str = "demo",
    scalars: tuple[str, ...] = SCALARS,
    extra_params: dict[str, list[Any]] | None = None,
    error: str = "2/3 replicates ok, below min_success_fraction 1",
) -> list[dict[str, Any]]:
    """Write a finished study's files; return its parameter sets (param_id, index, params)."""
    rng = np.random.default_rng(1)
    parameter_sets = []
    for index in range(sets):
        params: dict[str, Any] = {
            "beta": round(0.1 + 0.5 * index / max(sets - 1, 1), 6),
            "gamma": round(float(rng.uniform(0.05, 0.3)), 6),
            "population": 1000,
        }
        for extra, values in (extra_params or {}).items():
            params[extra] = values[index % len(values)]
        parameter_sets.append({"param_id": param_id(params), "index": index, "params": params})
    ok = parameter_sets[: sets - failed]
    failed_sets = {ps["param_id"]: [error] for ps in parameter_sets[sets - failed :]}
    _replicates(store, parameter_sets, replicates, scalars, failed_sets)
    _aggregates(store, ok, replicates, scalars, quantiles)
    if series_points:
        _series(store, ok, replicates, series_points, quantiles)
    if ranking:
        _ranking(store, parameter_sets, failed_sets, scalars)
    if targets:
        rows = [{"output": scalars[0], "t": None, "value": 0.5, "weight": 1.0, "denominator": None}]
        rows += [
            {"output": SERIES, "t": t, "value": float(10 * t), "weight": 1.0, "denominator": None}
            for t in range(0, max(series_points, 1), 7)
        ]
        write_table(store, TARGETS_FILE, pa.Table.from_pylist(rows, schema=TARGETS_SCHEMA))
    if sensitivity:
        write_table(store, SENSITIVITY_FILE, _sensitivity(sensitivity, [*scalars, "loss"]))
    write_json(
        store,
        STUDY_FILE,
        {
            "name": name,
            "study_id": "0" * 32,
            "study": {
                "name": name,
                "model": "simstudy.models.seir:simulate",
                "parameters": {"grid": None, "list": [ps["params"] for ps in parameter_sets]},
                "replicates": replicates,
                "seed": 7,
                "targets": {"data": "observed.csv", "loss": "poisson"} if targets else None,
            },
            "parameter_sets": parameter_sets,
            "versions": {"python": "3.11", "simstudy": "0.1.0"},
            "started_at": "2026-11-28T05:00:00+00:00",
            "finished_at": "2026-11-28T05:01:30+00:00",
            "status": "failed" if failed else "ok",
            "counts": {"ok": len(ok) * replicates, "failed": failed * replicates},
            "reused_replicates": 0,
            "failed_parameter_sets": failed_sets,
        },
    )
    return parameter_sets


TARGETS_SCHEMA = pa.schema(
    [
        ("output", pa.string()),
        ("t", pa.int64()),
        ("value", pa.float64()),
        ("weight", pa.float64()),
        ("denominator", pa.float64()),
    ]
)


def _means(ps: dict[str, Any], output: str) -> float:
    return float(ps["params"]["beta"] * (10 if output != "attack_rate" else 1) + len(output) / 100)


def _param_columns(sets: list[dict[str, Any]], repeat: int) -> dict[str, Any]:
    names = list(sets[0]["params"]) if sets else []
    return {n: np.repeat(np.array([ps["params"][n] for ps in sets]), repeat) for n in names}


def _replicates(
    store: OutputStore,
    sets: list[dict[str, Any]],
    replicates: int,
    scalars: tuple[str, ...],
    failed: dict[str, list[str]],
) -> None:
    n = len(sets) * replicates
    ids = np.repeat(np.array([ps["param_id"] for ps in sets]), replicates)
    bad = np.isin(ids, list(failed))
    rng = np.random.default_rng(2)
    columns: dict[str, Any] = {
        "param_id": ids,
        "replicate": np.tile(np.arange(replicates), len(sets)),
        "seed": np.arange(n),
        "status": np.where(bad, "failed", "ok"),
        "attempts": np.ones(n, dtype=np.int64),
        "duration_s": np.full(n, 0.01),
        "error": pa.array([None] * n, pa.string()),
        "worker": np.full(n, "w"),
    }
    for output in scalars:
        centre = np.repeat([_means(ps, output) for ps in sets], replicates)
        values = centre + 0.05 * rng.standard_normal(n)
        columns[output] = pa.array(values, mask=bad)
    schema = pa.schema([*RECORD_SCHEMA, *[(o, pa.float64()) for o in scalars]])
    write_table(store, REPLICATES_FILE, pa.table(columns, schema=schema))


def _aggregates(
    store: OutputStore,
    sets: list[dict[str, Any]],
    replicates: int,
    scalars: tuple[str, ...],
    quantiles: bool,
) -> None:
    if not sets:
        return
    k = len(scalars)
    mean = np.array([_means(ps, o) for ps in sets for o in scalars])
    columns = {
        **_param_columns(sets, k),
        "param_id": np.repeat([ps["param_id"] for ps in sets], k),
        "output": np.tile(np.array(scalars), len(sets)),
        "n_failed": np.zeros(len(mean), dtype=np.int64),
        "n_ok": np.full(len(mean), replicates),
        "mean": mean,
        "std": np.full(len(mean), 0.05),
        "min": mean - 0.1,
        "max": mean + 0.1,
    }
    if quantiles:
        columns.update({q: mean + z * 0.05 for q, z in QUANTILES.items()})
    write_table(store, AGGREGATES_FILE, pa.table(columns))


def _series(
    store: OutputStore, sets: list[dict[str, Any]], replicates: int, points: int, quantiles: bool
) -> None:
    t = np.arange(points)
    peak = np.array([ps["params"]["beta"] for ps in sets])
    curve = 1000 * peak[:, None] * np.exp(-(((t[None, :] - 100 * peak[:, None]) / 20) ** 2))
    mean = curve.ravel()
    columns = {
        **_param_columns(sets, points),
        "param_id": np.repeat([ps["param_id"] for ps in sets], points),
        "output": np.full(len(mean), SERIES),
        "n_failed": np.zeros(len(mean), dtype=np.int64),
        "t": np.tile(t, len(sets)),
        "n_ok": np.full(len(mean), replicates),
        "mean": mean,
        "std": 0.1 * mean + 1,
        "min": mean * 0.5,
        "max": mean * 1.5,
    }
    if quantiles:
        columns.update({q: mean + z * (0.1 * mean + 1) for q, z in QUANTILES.items()})
    write_table(store, TIMESERIES_AGGREGATES_FILE, pa.table(columns))


def _ranking(
    store: OutputStore,
    sets: list[dict[str, Any]],
    failed: dict[str, list[str]],
    scalars: tuple[str, ...],
) -> None:
    # Loss is smallest for the set whose beta is closest to 0.3.
    scored = [
        (abs(ps["params"]["beta"] - 0.3) + 0.01, ps) for ps in sets if ps["param_id"] not in failed
    ]
    scored.sort(key=lambda pair: pair[0])
    rows = []
    for rank, (loss, ps) in enumerate(scored, start=1):
        rows.append({"rank": rank, "param_id": ps["param_id"], "index": ps["index"], "status": "ok",
                     "loss": loss, "loss_se": loss / 10, f"loss_{scalars[0]}": loss})  # fmt: skip
    for ps in sets:
        if ps["param_id"] in failed:
            rows.append({"rank": None, "param_id": ps["param_id"], "index": ps["index"],
                         "status": "failed", "loss": None, "loss_se": None,
                         f"loss_{scalars[0]}": None})  # fmt: skip
    for row in rows:
        params = next(ps["params"] for ps in sets if ps["param_id"] == row["param_id"])
        row.update({n: params[n] for n in ("beta", "gamma")})
    schema = pa.schema(
        [("rank", pa.int64()), ("param_id", pa.string()), ("index", pa.int64()),
         ("status", pa.string()), ("loss", pa.float64()), ("loss_se", pa.float64()),
         (f"loss_{scalars[0]}", pa.float64()), ("beta", pa.float64()), ("gamma", pa.float64())]
    )  # fmt: skip
    write_table(store, RANKING_FILE, pa.Table.from_pylist(rows, schema=schema))


def _sensitivity(method: str, outputs: list[str]) -> pa.Table:
    rows = []
    indices = ("S1", "ST") if method == "sobol" else ("mu", "mu_star", "sigma")
    for output in outputs:
        for k, parameter in enumerate(("beta", "gamma")):
            for index in indices:
                rows.append({"output": output, "method": method, "index": index,
                             "parameter": parameter, "parameter_2": None,
                             "value": 0.6 - 0.4 * k, "conf": 0.05})  # fmt: skip
        if method == "sobol":
            rows.append({"output": output, "method": method, "index": "S2", "parameter": "beta",
                         "parameter_2": "gamma", "value": 0.01, "conf": None})  # fmt: skip
    schema = pa.schema(
        [("output", pa.string()), ("method", pa.string()), ("index", pa.string()),
         ("parameter", pa.string()), ("parameter_2", pa.string()), ("value", pa.float64()),
         ("conf", pa.float64())]
    )  # fmt: skip
    return pa.Table.from_pylist(rows, schema=schema)
