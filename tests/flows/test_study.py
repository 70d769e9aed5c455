"""The simulation-study flow on real Dask clusters and a real Prefect API."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

from flows.api import free_port
from flows.study import simulation_study
from simstudy.design.expand import expand_parameters
from simstudy.design.identity import replicate_seed
from simstudy.design.plan import plan_batches
from simstudy.spec.study import Study
from tests.support.faulty import FAULTS_ENV

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_api_url", "no_leftover_processes")]


def replicate_rows(output: str) -> list[dict]:
    return pq.read_table(Path(output) / "replicates.parquet").to_pylist()


@pytest.mark.timeout(120)
def test_study_completes_with_every_file(make_study: Callable[..., Study]) -> None:
    study = make_study()
    state = simulation_study(study=study, return_state=True)
    assert state.is_completed(), state.message
    out = Path(study.output_dir)
    rows = replicate_rows(study.output_dir)
    assert len(rows) == 6
    assert len({(r["param_id"], r["replicate"]) for r in rows}) == 6
    assert all(r["seed"] == replicate_seed(7, r["param_id"], r["replicate"]) for r in rows)
    assert {r["status"] for r in rows} == {"ok"}
    aggregates = pq.read_table(out / "aggregates.parquet").to_pylist()
    assert {(a["a"], a["output"]) for a in aggregates} == {(a, o) for a in (1.0, 2.0) for o in "xy"}
    assert pq.read_table(out / "timeseries.parquet").num_rows == 6 * 5
    assert pq.read_table(out / "timeseries_aggregates.parquet").num_rows == 2 * 5
    document = json.loads((out / "study.json").read_text())
    assert document["status"] == "ok" and document["counts"] == {"ok": 6}
    assert {"python", "prefect", "dask"} <= set(document["versions"])
    with get_client(sync_client=True) as api:
        flow_run_id = state.state_details.flow_run_id
        assert f"study:{study.name}" in api.read_flow_run(flow_run_id).tags
        task_runs = api.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))
        )
    # Named by parameter set and replicate range; untagged (tags cost an API write each).
    assert {run.name[:4] for run in task_runs} == {"sim-", "agg-", "summ"}
    assert all(not run.tags for run in task_runs)
    # A finished task run whose Completed state is still on its way to the API is not
    # mistaken for an abandoned one.
    assert not [run.name for run in task_runs if run.state is not None and run.state.is_crashed()]


@pytest.mark.timeout(180)
def test_aggregations_never_starve_a_single_worker_thread(make_study: Callable[..., Study]) -> None:
    # 1 worker x 1 thread, 20 parameter sets, every batch and aggregation submitted up
    # front: if an aggregation held the only thread while waiting, this would never end.
    study = make_study(
        parameters={"grid": {"a": [float(i) for i in range(20)]}},
        replicates=2,
        execution={"batch_size": 1, "dask": {"n_workers": 1, "threads_per_worker": 1}},
    )
    state = simulation_study(study=study, return_state=True)
    assert state.is_completed(), state.message
    assert len(replicate_rows(study.output_dir)) == 40


@pytest.mark.timeout(120)
def test_hung_and_chatty_replicates_cannot_freeze_the_study(
    make_study: Callable[..., Study], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    study = make_study(
        replicates=4,
        execution={"timeout_seconds": 2, "retries": 1, "dask": {"n_workers": 2}},
    )
    sets = expand_parameters(study)
    hang_seed = replicate_seed(study.seed, sets[0].param_id, 1)
    flood_seed = replicate_seed(study.seed, sets[1].param_id, 2)
    faults = tmp_path / "faults.json"
    faults.write_text(json.dumps({str(hang_seed): "hang", str(flood_seed): "stderr_flood"}))
    monkeypatch.setenv(FAULTS_ENV, str(faults))

    started = time.monotonic()
    state = simulation_study(study=study, return_state=True)
    elapsed = time.monotonic() - started

    assert elapsed < 2 * (1 + 1) + 30
    assert state.is_failed()
    assert sets[0].param_id[:12] in (state.message or "")
    assert "timed out after 2 s" in (state.message or "")
    rows = {(r["param_id"], r["replicate"]): r for r in replicate_rows(study.output_dir)}
    hung = rows[(sets[0].param_id, 1)]
    assert (hung["status"], hung["attempts"]) == ("timed_out", 2)
    assert rows[(sets[1].param_id, 2)]["status"] == "ok"
    assert sum(r["status"] == "ok" for r in rows.values()) == 7


@pytest.mark.timeout(240)
def test_same_study_same_results_on_any_layout_and_batch_size(
    make_study: Callable[..., Study], tmp_path: Path
) -> None:
    layouts = [
        {"batch_size": 1, "dask": {"n_workers": 1}},
        # Runs of 3 over sets of 5 replicates: two of the four runs hold two sets each.
        {"batch_size": 3, "dask": {"n_workers": 2, "threads_per_worker": 2}},
        {"batch_size": "auto", "dask": {"n_workers": 2}},  # one run holds the whole study
        # Workers write their runs' parts; the flow gets statistics and record fields.
        {"batch_size": 3, "part_files": "workers", "dask": {"n_workers": 2}},
    ]
    files = []
    for i, execution in enumerate(layouts):
        study = make_study(replicates=5, execution=execution, output=str(tmp_path / f"run{i}"))
        assert simulation_study(study=study, return_state=True).is_completed()
        out = Path(study.output_dir)
        files.append(
            {
                name: pq.read_table(out / name).to_pylist()
                for name in ("replicates.parquet", "timeseries.parquet", "aggregates.parquet")
            }
        )
    kept = ("param_id", "replicate", "seed", "status", "x", "y")
    for found in files[1:]:
        # Same rows in the same order (design order), same values, whatever the layout.
        assert [{k: r[k] for k in kept} for r in found["replicates.parquet"]] == [
            {k: r[k] for k in kept} for r in files[0]["replicates.parquet"]
        ]
        assert found["timeseries.parquet"] == files[0]["timeseries.parquet"]
        # Statistics merged from other batches agree to rounding (Chan's merges).
        for row, expected in zip(
            found["aggregates.parquet"], files[0]["aggregates.parquet"], strict=True
        ):
            assert row.keys() == expected.keys()
            for key, value in row.items():
                if isinstance(value, float):
                    assert value == pytest.approx(expected[key], rel=1e-12, nan_ok=True), key
                else:
                    assert value == expected[key], key


def wait_until_listening(port: int, seconds: float = 60.0) -> None:
    """Return once something accepts connections on 127.0.0.1:port (as a user would wait)."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


@pytest.fixture
def dask_cli_cluster(tmp_path: Path) -> Iterator[str]:
    """A scheduler and two `dask worker` processes (daemonic worker processes, via nannies)."""
    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    logs = (tmp_path / "dask.log").open("wb")
    scheduler = subprocess.Popen(
        [sys.executable, "-m", "distributed.cli.dask_scheduler", "--host", "127.0.0.1",
         "--port", str(port), "--dashboard-address", ":0", "--no-show"],
        env=env, stdout=logs, stderr=logs,
    )  # fmt: skip
    worker = subprocess.Popen(
        [sys.executable, "-m", "distributed.cli.dask_worker", address, "--nworkers", "2",
         "--nthreads", "1", "--host", "127.0.0.1", "--no-dashboard"],
        env=env, stdout=logs, stderr=logs,
    )  # fmt: skip
    try:
        wait_until_listening(port)
        yield address
    finally:
        for process in (worker, scheduler):
            process.terminate()
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        logs.close()


@pytest.mark.timeout(180)
def test_process_runner_on_dask_worker_command_cluster(
    make_study: Callable[..., Study], dask_cli_cluster: str
) -> None:
    study = make_study(execution={"dask": {"address": dask_cli_cluster}})
    state = simulation_study(study=study, return_state=True)
    assert state.is_completed(), state.message
    rows = replicate_rows(study.output_dir)
    assert {r["status"] for r in rows} == {"ok"}
    assert len(rows) == 6


@pytest.mark.timeout(60)
def test_bad_flow_parameters_are_refused(make_study: Callable[..., Study]) -> None:
    state = simulation_study(return_state=True)
    assert state.is_failed()
    assert "exactly one of study_path or study" in (state.message or "")


def test_every_replicate_is_recorded_once(make_study: Callable[..., Study]) -> None:
    study = make_study(replicates=7, execution={"batch_size": 2})
    assert simulation_study(study=study, return_state=True).is_completed()
    rows = replicate_rows(study.output_dir)
    keys = [(r["param_id"], r["replicate"]) for r in rows]
    expected = {(b.param_id, r) for b in plan_batches(study, expand_parameters(study))
                for r in range(b.start, b.stop)}  # fmt: skip
    assert len(keys) == len(set(keys)) and set(keys) == expected


@pytest.mark.timeout(300)
def test_a_million_point_series_completes_with_its_statistics_and_report(
    make_study: Callable[..., Study],
) -> None:
    # The documented longest series, 2 sets x 4 replicates, a 30 s timeout and the default
    # stall timeout: it was taken for a stall (aggregating a million Python rows a set).
    points = 1_000_000
    study = make_study(
        fixed={"series_points": points}, replicates=4,
        execution={"timeout_seconds": 30, "dask": {"n_workers": 2}},
    )  # fmt: skip
    started = time.monotonic()
    state = simulation_study(study=study, return_state=True)
    elapsed = time.monotonic() - started
    assert state.is_completed(), state.message
    out = Path(study.output_dir)
    statistics = pq.ParquetFile(out / "timeseries_aggregates.parquet")
    assert statistics.metadata.num_rows == 2 * points
    tail = statistics.read_row_group(statistics.num_row_groups - 1)
    last = tail.slice(tail.num_rows - 1).to_pylist()[0]
    # series = a t + (seed % 7): the last point of set a = 2.0 is 2 (points - 1) + 0..6
    assert last["t"] == points - 1 and last["n_ok"] == 4
    assert 2.0 * (points - 1) <= last["min"] <= last["max"] <= 2.0 * (points - 1) + 6
    assert (out / "report.html").exists() and (out / "plots" / "series-series.png").exists()
    print(f"2 x 4 replicates of a {points:,}-point series: {elapsed:.1f} s")
