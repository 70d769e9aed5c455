"""Fault injection: every classic cause of a silent freeze, reproduced and survived.

Every test is bounded by pytest-timeout and checks that no process is left behind.
The measured detection times go to the issue notes.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from distributed import Client, LocalCluster
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

from flows.study import simulation_study
from simstudy.spec.study import Study
from tests.support.faulty import executions
from tests.support.outputs import FaultyStudy, rows_by_replicate

pytestmark = [
    pytest.mark.slow,
    pytest.mark.usefixtures("prefect_api_url", "no_leftover_processes"),
]


@pytest.mark.timeout(240)
def test_field_report_scaled_down(faulty_study: FaultyStudy) -> None:
    # 20 sets x 20 replicates; 2 write 1 MB to stderr, 2 hang on their first attempt.
    study, ids = faulty_study(
        {(3, 5): "stderr_1mb", (17, 19): "stderr_1mb", (8, 0): "hang_once", (12, 11): "hang_once"},
        parameters={"grid": {"a": [float(i) for i in range(20)]}},
        replicates=20,
        execution={"timeout_seconds": 3, "retries": 1, "dask": {"n_workers": 2}},
    )
    started = time.monotonic()
    state = simulation_study(study=study, return_state=True)
    elapsed = time.monotonic() - started
    assert state.is_completed(), state.message
    assert "20/20 parameter sets aggregated" in (state.message or "")
    rows = rows_by_replicate(study)
    assert len(rows) == 400 and {r["status"] for r in rows.values()} == {"ok"}
    for s, r in [(8, 0), (12, 11)]:
        assert rows[(ids[s], r)]["attempts"] == 2
    for s, r in [(3, 5), (17, 19)]:
        assert rows[(ids[s], r)]["attempts"] == 1
    print(f"field report scaled down: {elapsed:.1f} s")


@pytest.mark.timeout(120)
def test_always_hanging_replicate_fails_its_set_by_name(faulty_study: FaultyStudy) -> None:
    study, ids = faulty_study(
        {(1, 2): "hang"}, replicates=4, execution={"timeout_seconds": 2, "retries": 1}
    )
    started = time.monotonic()
    state = simulation_study(study=study, return_state=True)
    elapsed = time.monotonic() - started
    assert state.is_failed()
    assert ids[1][:12] in (state.message or "") and "timed out after 2 s" in (state.message or "")
    assert rows_by_replicate(study)[(ids[1], 2)]["status"] == "timed_out"
    assert elapsed < 2 * 2 + 30
    print(f"always hanging replicate: study ended after {elapsed:.1f} s")


@pytest.mark.timeout(120)
def test_always_hanging_replicate_is_tolerated_below_min_success(faulty_study: FaultyStudy) -> None:
    study, ids = faulty_study(
        {(1, 2): "hang"},
        replicates=4,
        execution={"timeout_seconds": 2, "retries": 0, "min_success_fraction": 0.75},
    )
    state = simulation_study(study=study, return_state=True)
    assert state.is_completed(), state.message
    aggregates = pq.read_table(Path(study.output_dir) / "aggregates.parquet").to_pylist()
    row = next(a for a in aggregates if a["param_id"] == ids[1] and a["output"] == "x")
    assert (row["n_ok"], row["n_failed"]) == (3, 1)


@pytest.mark.timeout(240)
@pytest.mark.parametrize("part_files", ["flow", "workers"])
def test_sigkilled_worker_loses_and_duplicates_nothing(
    faulty_study: FaultyStudy, cluster: tuple[LocalCluster, Client], part_files: str
) -> None:
    local, client = cluster
    study, ids = faulty_study(
        {},
        parameters={"grid": {"a": [1.0, 2.0, 3.0, 4.0]}},
        replicates=12,
        fixed={"sleep_s": 0.25},
        execution={
            "batch_size": 3,
            "part_files": part_files,
            "dask": {"address": local.scheduler_address},
        },
    )
    killed: list[float] = []

    def kill_a_worker_mid_study() -> None:
        # Wait until some batches are done, then SIGKILL the process of one worker.
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            done = client.run_on_scheduler(
                lambda dask_scheduler: sum(
                    1 for ts in dask_scheduler.tasks.values() if ts.state == "memory"
                )
            )
            if done >= 3:
                break
            time.sleep(0.2)
        pid = next(iter(client.run(os.getpid).values()))
        os.kill(pid, signal.SIGKILL)
        killed.append(time.monotonic())

    killer = threading.Thread(target=kill_a_worker_mid_study)
    killer.start()
    state = simulation_study(study=study, return_state=True)
    killer.join()
    assert killed, "no worker was killed"
    assert state.is_completed(), state.message
    print(f"worker SIGKILL: study completed {time.monotonic() - killed[0]:.1f} s after the kill")
    rows = rows_by_replicate(study)
    assert set(rows) == {(pid, r) for pid in ids for r in range(12)}
    assert {r["status"] for r in rows.values()} == {"ok"}
    # Each replicate's attempts count its executions: with parts written by the workers,
    # those the killed run had finished ran again (their part was lost with it).
    ran = executions(study.fixed["faults_file"])
    assert {key: row["attempts"] for key, row in rows.items()} == {
        key: ran[row["seed"]] for key, row in rows.items()
    }
    # Every replicate has its own outputs, in design order.
    in_order = sorted(rows, key=lambda key: (ids.index(key[0]), key[1]))
    table = pq.read_table(Path(study.output_dir) / "replicates.parquet")
    assert table.column("x").to_pylist() == [(rows[k]["seed"] % 1000) / 1000.0 for k in in_order]


@pytest.mark.timeout(120)
def test_exit_and_segfault_are_recorded_with_their_codes(faulty_study: FaultyStudy) -> None:
    study, ids = faulty_study(
        {(0, 1): "exit", (1, 0): "segfault"},
        replicates=3,
        execution={"retries": 1, "min_success_fraction": 0.6},
    )
    state = simulation_study(study=study, return_state=True)
    assert state.is_completed(), state.message
    rows = rows_by_replicate(study)
    exited, crashed = rows[(ids[0], 1)], rows[(ids[1], 0)]
    assert (exited["status"], exited["attempts"]) == ("failed", 2)
    assert "exited with code 3" in exited["error"] and "about to exit" in exited["error"]
    assert (crashed["status"], crashed["attempts"]) == ("failed", 2)
    assert "killed by SIGSEGV (exit code 139)" in crashed["error"]


@pytest.mark.timeout(60)
def test_unsatisfiable_resources_fail_in_preflight(
    make_study: Callable[..., Study], cluster: tuple[LocalCluster, Client]
) -> None:
    local, _ = cluster
    study = make_study(
        execution={
            "aggregation_resources": {"aggregation": 1},
            "dask": {"address": local.scheduler_address},
        }
    )
    started = time.monotonic()
    state = simulation_study(study=study, return_state=True)
    elapsed = time.monotonic() - started
    assert state.is_failed()
    assert "aggregation=1, but no worker offers it" in (state.message or "")
    assert elapsed < 10
    assert not (Path(study.output_dir) / "replicates.parquet").exists()
    print(f"unsatisfiable resources: failed after {elapsed:.1f} s")


@pytest.mark.timeout(120)
def test_unkillable_stall_is_reported_and_fails_the_study(faulty_study: FaultyStudy) -> None:
    with pytest.warns(UserWarning, match="cannot enforce timeout_seconds"):
        study, ids = faulty_study(
            {(1, 1): "hang"},
            replicates=3,
            execution={
                "runner": "thread",
                "batch_size": 1,
                "stall_timeout_seconds": 4,
                "on_stall": "fail",
                "dask": {"n_workers": 1, "threads_per_worker": 2},
            },
        )
    started = time.monotonic()
    state = simulation_study(study=study, return_state=True)
    elapsed = time.monotonic() - started
    assert state.is_failed()
    assert "stalled" in (state.message or "")
    stuck = f"sim-{ids[1][:12]}-r001-001"
    assert stuck in (state.message or "")
    report = json.loads((Path(study.output_dir) / "stall-report.json").read_text())
    task = next(t for t in report["tasks"] if t["name"] == stuck)
    assert task["state"] == "processing" and task["worker"].startswith("tcp://127.0.0.1:")
    assert any("faulty.py" in line and "sleep" in line for line in task["call_stack"])
    assert report["missing_replicates"] == [[ids[1], 1]]
    assert "## Unfinished tasks" in (Path(study.output_dir) / "stall-report.md").read_text()
    # The stall is detected after 4 s without progress and fails after a second interval.
    assert elapsed < 2 * 4 + 20
    with get_client(sync_client=True) as api:
        runs = api.read_task_runs(
            flow_run_filter=FlowRunFilter(
                id=FlowRunFilterId(any_=[state.state_details.flow_run_id])
            )
        )
    assert runs and all(run.state is not None and run.state.is_final() for run in runs)
    print(f"unkillable stall: flow failed after {elapsed:.1f} s")


def slow_loss_study(make_study: Callable[..., Study], tmp_path: Path, loss: str) -> Study:
    """One set of 2 replicates whose aggregation runs a slow user loss; stall timeout 3 s."""
    (tmp_path / "observed.csv").write_text("output,value\ny,2\n")
    return make_study(
        parameters={"list": [{"a": 1.0}]},
        replicates=2,
        targets={"data": str(tmp_path / "observed.csv"), "loss": loss, "bootstrap": 0},
        execution={"stall_timeout_seconds": 3, "on_stall": "fail"},
    )


@pytest.mark.timeout(120)
def test_an_aggregation_computing_past_the_stall_timeout_is_progress(
    make_study: Callable[..., Study], tmp_path: Path
) -> None:
    study = slow_loss_study(make_study, tmp_path, "tests.support.losses:computing")
    started = time.monotonic()
    state = simulation_study(study=study, return_state=True)
    elapsed = time.monotonic() - started
    assert state.is_completed(), state.message
    assert not (Path(study.output_dir) / "stall-report.json").exists()
    ranking = pq.read_table(Path(study.output_dir) / "ranking.parquet").to_pylist()
    assert [row["loss"] for row in ranking] == [0.0]  # y = 2a = 2, observed 2
    print(f"aggregation computing for 8 s with a 3 s stall timeout: completed in {elapsed:.1f} s")


@pytest.mark.timeout(120)
def test_an_aggregation_waiting_past_the_stall_timeout_is_a_stall_naming_it(
    make_study: Callable[..., Study], tmp_path: Path
) -> None:
    study = slow_loss_study(make_study, tmp_path, "tests.support.losses:waiting")
    started = time.monotonic()
    state = simulation_study(study=study, return_state=True)
    elapsed = time.monotonic() - started
    assert state.is_failed() and "stalled" in (state.message or "")
    report = json.loads((Path(study.output_dir) / "stall-report.json").read_text())
    (task,) = report["tasks"]
    assert task["name"].startswith("agg-") and task["state"] == "processing"
    assert any("losses.py" in line and "sleep" in line for line in task["call_stack"])
    assert elapsed < 2 * 3 + 30
    print(f"aggregation waiting: stalled and failed after {elapsed:.1f} s")


@pytest.mark.timeout(180)
def test_an_aggregation_over_the_workers_memory_is_named_as_memory(
    make_study: Callable[..., Study], tmp_path: Path
) -> None:
    (tmp_path / "observed.csv").write_text("output,value\ny,2\n")
    study = make_study(
        parameters={"list": [{"a": 1.0}]},
        replicates=2,
        targets={"data": str(tmp_path / "observed.csv"), "loss": "tests.support.losses:hungry",
                 "bootstrap": 0},
        execution={"max_resubmits": 0, "dask": {"n_workers": 1, "memory_limit": "600MB"}},
    )  # fmt: skip
    started = time.monotonic()
    state = simulation_study(study=study, return_state=True)
    elapsed = time.monotonic() - started
    assert state.is_failed()
    assert "out of memory: a worker used" in (state.message or "")
    assert "execution.dask.memory_limit" in (state.message or "")
    print(f"aggregation over the worker's memory: failed, named as memory, after {elapsed:.1f} s")


@pytest.mark.timeout(180)
def test_a_thread_runner_model_over_the_workers_memory_is_named_as_memory(
    make_study: Callable[..., Study],
) -> None:
    study = make_study(
        parameters={"list": [{"a": 1.0}]},
        fixed={"behavior": "hungry"},
        replicates=1,
        execution={"runner": "thread", "max_resubmits": 0,
                   "dask": {"n_workers": 1, "memory_limit": "600MB"}},
    )  # fmt: skip
    started = time.monotonic()
    state = simulation_study(study=study, return_state=True)
    elapsed = time.monotonic() - started
    assert state.is_failed()
    (row,) = pq.read_table(Path(study.output_dir) / "replicates.parquet").to_pylist()
    assert "out of memory: a worker used" in row["error"], row["error"]
    assert "runner 'process'" in row["error"]
    print(f"a thread-runner model over the worker's memory: named as memory in {elapsed:.1f} s")
