"""Nothing lost: a killed or interrupted study resumes; a changed model reuses nothing."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import psutil
import pyarrow.parquet as pq
import pytest
import yaml

from flows.study import simulation_study
from simstudy.output.location import OutputStore
from simstudy.output.parts import PARTS_DIR
from simstudy.output.results import read_study_json, read_table
from simstudy.spec.study import Study
from tests.support.hold_lock import start_lock_holder, stop_lock_holder

pytestmark = [pytest.mark.slow]

REPO = Path(__file__).parents[2]
REPLICATES = 20
BATCH = 5


def write_study(folder: Path, output: Path) -> Path:
    path = folder / "study.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "name": "resume",
                "model": "tests.support.faulty:simulate",
                "fixed": {"sleep_s": 0.15},
                "parameters": {"grid": {"a": [1.0, 2.0, 3.0, 4.0]}},
                "replicates": REPLICATES,
                "seed": 11,
                "execution": {"batch_size": BATCH, "dask": {"n_workers": 2}},
                "output": str(output),
            }
        )
    )
    return path


def start_cli(study: Path, env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "flows.cli", "run", str(study), "--no-progress"],
        cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def wait_for_parts(
    output: Path, count: int, process: subprocess.Popen[str]
) -> tuple[int, set[int]]:
    """Wait until `count` part files exist; return the count seen and the process tree."""
    tree: set[int] = set()
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        tree.update(p.pid for p in psutil.Process(process.pid).children(recursive=True))
        parts = list((output / PARTS_DIR).glob("*.parquet"))
        if len(parts) >= count:
            return len(parts), tree
        time.sleep(0.1)
    process.kill()
    pytest.fail("the study never got that far")


def alive(pids: set[int]) -> list[int]:
    found = []
    for pid in pids:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                found.append(pid)
        except psutil.NoSuchProcess:
            pass
    return found


def wait_gone(pids: set[int], seconds: float) -> list[int]:
    deadline = time.monotonic() + seconds
    while alive(pids) and time.monotonic() < deadline:
        time.sleep(0.2)
    return alive(pids)


def table(output: Path, name: str, columns: list[str]) -> list[tuple]:
    rows = pq.read_table(output / name).to_pylist()
    return sorted(tuple(row[c] for c in columns) for row in rows)


@pytest.mark.timeout(300)
def test_sigkill_then_resume_recomputes_only_unfinished_work(
    tmp_path: Path, prefect_api_url: str
) -> None:
    env = {**os.environ, "PREFECT_API_URL": prefect_api_url}
    output = tmp_path / "out"
    study = write_study(tmp_path, output)
    total_batches = 4 * REPLICATES // BATCH
    process = start_cli(study, env)
    seen, tree = wait_for_parts(output, total_batches // 2, process)
    process.send_signal(signal.SIGKILL)
    process.communicate(timeout=30)
    survivors = wait_gone(tree, 30)
    for pid in survivors:  # do not leak them into other tests, but fail below
        os.kill(pid, signal.SIGKILL)
    assert survivors == [], "processes outlived the SIGKILLed run"

    started = time.monotonic()
    resumed = subprocess.run(
        [sys.executable, "-m", "flows.cli", "run", str(study), "--no-progress"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    resume_seconds = time.monotonic() - started
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    document = json.loads((output / "study.json").read_text())
    reused = document["reused_replicates"]
    assert seen * BATCH <= reused < 4 * REPLICATES
    print(f"resume after SIGKILL: reused {reused}/80, resumed run {resume_seconds:.1f} s")

    reference = tmp_path / "reference"
    state = simulation_study(study_path=str(study), output=str(reference), return_state=True)
    assert state.is_completed()
    columns = ["param_id", "replicate", "seed", "status", "x", "y"]
    assert table(output, "replicates.parquet", columns) == table(
        reference, "replicates.parquet", columns
    )
    stats = ["param_id", "output", "n_ok", "mean", "std", "q0.5"]
    assert table(output, "aggregates.parquet", stats) == table(
        reference, "aggregates.parquet", stats
    )


@pytest.mark.timeout(300)
def test_sigint_stops_cleanly_and_resume_works(tmp_path: Path, prefect_api_url: str) -> None:
    env = {**os.environ, "PREFECT_API_URL": prefect_api_url}
    output = tmp_path / "out"
    study = write_study(tmp_path, output)
    process = start_cli(study, env)
    _, tree = wait_for_parts(output, 3, process)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr[-2000:]
    assert "finished replicates are kept in" in stderr
    assert "run the same command again to resume" in stderr
    assert wait_gone(tree, 20) == []
    resumed = subprocess.run(
        [sys.executable, "-m", "flows.cli", "run", str(study), "--no-progress"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert json.loads((output / "study.json").read_text())["reused_replicates"] >= 3 * BATCH


@pytest.mark.timeout(240)
@pytest.mark.usefixtures("prefect_api_url", "no_leftover_processes")
def test_changed_model_source_reuses_nothing(
    make_study: Callable[..., Study], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    program = tmp_path / "model.py"
    source = (REPO / "tests" / "support" / "command_model.py").read_text()
    program.write_text(source)
    study = make_study(model={"command": [sys.executable, "model.py"], "cwd": str(tmp_path)})
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(sys.path))  # it imports the test model

    def reused() -> int:
        document = json.loads((Path(study.output_dir) / "study.json").read_text())
        return int(document["reused_replicates"])

    assert simulation_study(study=study, return_state=True).is_completed()
    assert reused() == 0
    assert simulation_study(study=study, return_state=True).is_completed()
    assert reused() == 6  # same model: everything reused
    program.write_text(source + "\n# changed\n")
    assert simulation_study(study=study, return_state=True).is_completed()
    assert reused() == 0


@pytest.mark.timeout(240)
@pytest.mark.usefixtures("prefect_api_url", "no_leftover_processes")
def test_truncated_part_is_rerun(make_study: Callable[..., Study]) -> None:
    # Workers write one part per run (the flow writes runs that finish together as one).
    study = make_study(replicates=4, execution={"batch_size": 2, "part_files": "workers"})
    assert simulation_study(study=study, return_state=True).is_completed()
    parts = sorted((Path(study.output_dir) / PARTS_DIR).glob("*.parquet"))
    assert len(parts) == 4
    parts[0].write_bytes(parts[0].read_bytes()[:64])
    assert simulation_study(study=study, return_state=True).is_completed()
    document = json.loads((Path(study.output_dir) / "study.json").read_text())
    assert document["reused_replicates"] == 6
    assert document["counts"] == {"ok": 8}


def test_second_run_on_a_locked_output_is_refused(tmp_path: Path) -> None:
    output = tmp_path / "out"
    study = write_study(tmp_path, output)
    holder = start_lock_holder(output)
    try:
        second = subprocess.run(
            [sys.executable, "-m", "flows.cli", "run", str(study)],
            cwd=REPO, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert second.returncode == 2
        assert "is in use by another simstudy run" in second.stderr
    finally:
        stop_lock_holder(holder)


@pytest.mark.timeout(240)
@pytest.mark.usefixtures("prefect_api_url", "no_leftover_processes")
def test_memory_output_round_trip_and_resume(make_study: Callable[..., Study]) -> None:
    study = make_study(output="memory://simstudy-tests/round-trip")
    assert simulation_study(study=study, return_state=True).is_completed()
    store = OutputStore(study.output_dir)
    assert store.local is None
    assert read_table(store, "replicates.parquet").num_rows == 6
    assert {"study.json", "aggregates.parquet", "_parts"} <= store.entries()
    assert simulation_study(study=study, return_state=True).is_completed()
    assert read_study_json(store)["reused_replicates"] == 6


@pytest.mark.timeout(300)
@pytest.mark.usefixtures("prefect_api_url")
def test_changing_only_the_targets_or_the_loss_reuses_every_replicate(tmp_path: Path) -> None:
    observed = tmp_path / "observed.csv"
    observed.write_text("output,value\ny,3\n")
    document = {
        "name": "retarget",
        "model": "tests.support.faulty:simulate",
        "parameters": {"grid": {"a": [1.0, 2.0]}},
        "replicates": 4,
        "seed": 11,
        "targets": {"data": "observed.csv", "loss": "mse_of_mean"},
        "execution": {"dask": {"n_workers": 1}},
        "output": str(tmp_path / "out"),
    }
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(document))
    assert simulation_study(study_path=str(path), return_state=True).is_completed()
    first = {
        r["a"]: r["loss"] for r in pq.read_table(tmp_path / "out" / "ranking.parquet").to_pylist()
    }
    assert first == {1.0: pytest.approx(1.0), 2.0: pytest.approx(1.0)}  # y = 2a against 3

    observed.write_text("output,value\ny,5\n")  # other data, another loss: same replicates
    document["targets"]["loss"] = "mean_of_mse"
    path.write_text(yaml.safe_dump(document))
    assert simulation_study(study_path=str(path), return_state=True).is_completed()
    study = json.loads((tmp_path / "out" / "study.json").read_text())
    assert study["reused_replicates"] == 8
    second = {
        r["a"]: r["loss"] for r in pq.read_table(tmp_path / "out" / "ranking.parquet").to_pylist()
    }
    assert second == {1.0: pytest.approx(9.0), 2.0: pytest.approx(1.0)}
