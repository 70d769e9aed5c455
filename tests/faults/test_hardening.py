"""Faults that used to freeze a study or misrecord it: unanswering workers, exotic
exceptions, batches lost mid-way. Each study must end, write what finished, and count
every execution of every replicate.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from distributed import Client, LocalCluster

from flows.study import simulation_study
from simstudy.design.identity import replicate_seed
from simstudy.spec.study import Study
from tests.support.faulty import executions
from tests.support.outputs import FaultyStudy, rows_by_replicate

pytestmark = [
    pytest.mark.slow,
    pytest.mark.usefixtures("prefect_api_url", "no_leftover_processes"),
]


def assert_attempts_count_executions(study: Study, rows: dict[tuple[str, int], dict]) -> None:
    ran = executions(str(study.fixed["faults_file"]))
    for (param_id, replicate), row in rows.items():
        seed = replicate_seed(study.seed, param_id, replicate)
        assert row["attempts"] == ran.get(seed, 0), (replicate, row, ran.get(seed))


def replicate_range(task_name: str) -> range:
    """Return the replicates of a run's task name, sim-<id>-rFIRST-LAST."""
    first, last = task_name.rsplit("-r", 1)[1].split("-")
    return range(int(first), int(last) + 1)


UNANSWERING = {
    # A stopped Dask worker (its model child sends it SIGSTOP).
    "stopped worker": ("process", "stop_worker", "flow"),
    # The same, the workers writing the part files: what the stopped run finished is
    # provisional (its part was never written), so neither written nor counted.
    "stopped worker, parts by workers": ("process", "stop_worker", "workers"),
    # Pure-Python code holding the GIL in the worker: its event loop cannot answer.
    "GIL held": ("thread", "hold_gil", "flow"),
}


@pytest.mark.timeout(150)
@pytest.mark.parametrize("case", list(UNANSWERING))
def test_a_worker_that_cannot_answer_is_named_and_the_study_ends(
    case: str, faulty_study: FaultyStudy
) -> None:
    runner, behavior, part_files = UNANSWERING[case]
    with pytest.warns() if runner == "thread" else contextlib.nullcontext():
        study, ids = faulty_study(
            {(1, 1): behavior},
            replicates=4,
            execution={
                "runner": runner,
                "part_files": part_files,
                "timeout_seconds": 2,
                "retries": 1,
                "batch_size": 2,
                "stall_timeout_seconds": 10,
                "on_stall": "fail",
                "dask": {"n_workers": 2},
            },
        )
    started = time.monotonic()
    state = simulation_study(study=study, return_state=True)
    elapsed = time.monotonic() - started
    print(f"{case}: study ended {elapsed:.1f} s after it started")
    assert state.is_failed()
    message = state.message or ""
    assert "stalled" in message and "did not answer within" in message, message
    report = json.loads((Path(study.output_dir) / "stall-report.json").read_text())
    silent = [w for w in report["workers"] if w["note"]]
    assert silent and "stopped, or a task holding the GIL" in silent[0]["note"]
    stuck = next(t for t in report["tasks"] if t["name"] == f"sim-{ids[1][:12]}-r000-001")
    assert stuck["worker"] == silent[0]["address"] and stuck["worker_note"]
    # What finished is written: every replicate of the other set, but those of a run the
    # report names on the silent worker (under load Dask may queue one there).
    rows = rows_by_replicate(study)
    other = f"sim-{ids[0][:12]}-r"
    held = {
        (ids[0], r)
        for task in report["tasks"]
        if task["worker"] == silent[0]["address"] and task["name"].startswith(other)
        for r in replicate_range(task["name"])
    }
    assert {(ids[0], r) for r in range(4)} - held <= set(rows)
    summary = json.loads((Path(study.output_dir) / "study.json").read_text())
    assert summary["status"] == "stalled"
    assert summary["counts"]["ok"] == sum(r["status"] == "ok" for r in rows.values()) >= 4
    if part_files == "workers":  # the stopped run's first replicate had finished
        assert (ids[1], 0) not in rows
    assert all(row["x"] is not None for row in rows.values() if row["status"] == "ok")
    assert elapsed < 2 * 10 + 60


EXOTIC = [
    "raise_base_exception",
    "raise_generator_exit",
    "raise_keyboard_interrupt",
    "raise_cancelled",
    "raise_system_exit",
]


@pytest.mark.timeout(120)
def test_any_exception_a_model_raises_is_a_failed_replicate(faulty_study: FaultyStudy) -> None:
    with pytest.warns(UserWarning, match="cannot enforce timeout_seconds"):
        study, ids = faulty_study(
            {(i, 1): behavior for i, behavior in enumerate(EXOTIC)},
            parameters={"grid": {"a": [float(i) for i in range(len(EXOTIC))]}},
            replicates=3,
            execution={
                "runner": "thread",
                "retries": 1,
                "stall_timeout_seconds": 20,
                "min_success_fraction": 0.6,
                "dask": {"n_workers": 1},
            },
        )
    started = time.monotonic()
    state = simulation_study(study=study, return_state=True)
    print(f"exotic exceptions: study ended after {time.monotonic() - started:.1f} s")
    assert state.is_completed(), state.message
    rows = rows_by_replicate(study)
    assert len(rows) == 3 * len(EXOTIC)
    names = {
        "raise_base_exception": "CustomBaseException",
        "raise_generator_exit": "GeneratorExit",
        "raise_keyboard_interrupt": "KeyboardInterrupt",
        "raise_cancelled": "CancelledError",
        "raise_system_exit": "SystemExit",
    }
    for i, behavior in enumerate(EXOTIC):
        row = rows[(ids[i], 1)]
        assert (row["status"], row["attempts"]) == ("failed", 2), behavior
        assert names[behavior] in row["error"], row["error"]
        assert rows[(ids[i], 0)]["status"] == rows[(ids[i], 2)]["status"] == "ok"
    assert_attempts_count_executions(study, rows)


LOST_WORKER = {
    "segfault, thread runner": ("thread", "segfault", {}),
    "worker SIGKILLed by the model, process runner": ("process", "kill_worker", {}),
    # 1.5 GB in the worker itself: its nanny kills it past 95% of its 1 GiB memory_limit.
    "over the worker's memory_limit, thread runner": (
        "thread",
        "allocate",
        {"fixed": {"alloc_mb": 1500}, "memory_limit": "1GiB"},
    ),
}


@pytest.mark.timeout(180)
@pytest.mark.parametrize("case", list(LOST_WORKER))
def test_a_lost_batch_reruns_only_replicates_without_a_result(
    case: str, faulty_study: FaultyStudy
) -> None:
    runner, behavior, extra = LOST_WORKER[case]
    dask_settings = {"n_workers": 2}
    if "memory_limit" in extra:
        dask_settings["memory_limit"] = extra["memory_limit"]
    with pytest.warns() if runner == "thread" else contextlib.nullcontext():
        study, ids = faulty_study(
            {(0, 2): behavior},
            parameters={"grid": {"a": [1.0]}},
            # Replicates of 0.3 s are reported the moment they finish (acknowledged), so the
            # flow knows exactly which replicate was running when the worker died.
            fixed={"sleep_s": 0.3, **extra.get("fixed", {})},
            replicates=5,
            execution={
                "runner": runner,
                "retries": 0,
                "batch_size": 5,
                "min_success_fraction": 0.8,
                "dask": dask_settings,
            },
        )
    started = time.monotonic()
    state = simulation_study(study=study, return_state=True)
    print(f"{case}: study ended after {time.monotonic() - started:.1f} s")
    assert state.is_completed(), state.message
    rows = rows_by_replicate(study)
    crashed = rows[(ids[0], 2)]
    # Its worker was lost every time it ran: 1 run + max_resubmits reruns, then given up.
    assert (crashed["status"], crashed["attempts"]) == ("failed", 3)
    assert "KilledWorker" in crashed["error"] or "worker" in crashed["error"].lower()
    for r in (0, 1, 3, 4):
        assert rows[(ids[0], r)]["status"] == "ok"
    assert_attempts_count_executions(study, rows)
    summary = json.loads((Path(study.output_dir) / "study.json").read_text())
    assert summary["counts"] == {"ok": 4, "failed": 1}


@pytest.mark.timeout(120)
def test_a_model_over_its_memory_limit_fails_its_replicate_saying_so(
    faulty_study: FaultyStudy,
) -> None:
    study, ids = faulty_study(
        {(0, 1): "allocate"},
        parameters={"grid": {"a": [1.0]}},
        fixed={"alloc_mb": 600},
        replicates=3,
        execution={
            "runner": "process",
            "retries": 1,
            "model_memory_limit": "256MiB",
            "min_success_fraction": 0.6,
        },
    )
    state = simulation_study(study=study, return_state=True)
    assert state.is_completed(), state.message
    rows = rows_by_replicate(study)
    over = rows[(ids[0], 1)]
    assert (over["status"], over["attempts"]) == ("failed", 2)
    assert "memory limit of 256 MiB" in over["error"], over["error"]
    assert rows[(ids[0], 0)]["status"] == rows[(ids[0], 2)]["status"] == "ok"
    assert_attempts_count_executions(study, rows)


@pytest.mark.timeout(120)
def test_a_stopped_worker_fails_preflight_within_its_deadline(
    make_study: Callable[..., Study], cluster: tuple[LocalCluster, Client]
) -> None:
    local, client = cluster
    stopped = next(iter(client.run(os.getpid).values()))
    os.kill(stopped, signal.SIGSTOP)
    try:
        study = make_study(execution={"dask": {"address": local.scheduler_address}})
        started = time.monotonic()
        state = simulation_study(study=study, return_state=True)
        elapsed = time.monotonic() - started
    finally:
        os.kill(stopped, signal.SIGCONT)
    print(f"stopped worker at preflight: study failed after {elapsed:.1f} s")
    assert state.is_failed()
    assert "did not answer within 30 s" in (state.message or ""), state.message
    assert elapsed < 30 + 20
    assert not (Path(study.output_dir) / "study.json").exists()


@pytest.mark.timeout(180)
def test_a_batch_lost_before_it_began_is_charged_to_no_replicate(
    faulty_study: FaultyStudy,
) -> None:
    # One worker: the batch queued behind the one whose replicate segfaults dies with it
    # (Dask fails every task assigned to a dead worker), without having run anything.
    with pytest.warns(UserWarning, match="cannot enforce timeout_seconds"):
        study, ids = faulty_study(
            {(0, 2): "segfault"},
            parameters={"grid": {"a": [1.0, 2.0]}},
            fixed={"sleep_s": 0.3},
            replicates=5,
            execution={
                "runner": "thread",
                "retries": 0,
                "batch_size": 5,
                "min_success_fraction": 0.8,
                "dask": {"n_workers": 1},
            },
        )
    state = simulation_study(study=study, return_state=True)
    assert state.is_completed(), state.message
    rows = rows_by_replicate(study)
    crashed = rows[(ids[0], 2)]
    assert (crashed["status"], crashed["attempts"]) == ("failed", 3), crashed
    assert {rows[(ids[1], r)]["status"] for r in range(5)} == {"ok"}
    assert_attempts_count_executions(study, rows)
