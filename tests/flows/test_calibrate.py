"""Calibration end to end: seeded and layout-independent, failures told, adaptive, resumable."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import optuna
import psutil
import pyarrow.parquet as pq
import pytest
import yaml
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend

from flows.cli import main
from flows.study import simulation_study
from simstudy.calibrate.folder import JOURNAL_FILE, TRIAL_LOG_FILE, TRIALS_FILE
from simstudy.calibrate.trials import TrialLog, TrialRecord
from simstudy.design.identity import replicate_seed
from tests.support.faulty import executions

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_api_url")]

REPO = Path(__file__).parents[2]
SEED = 5


@pytest.fixture(autouse=True)
def _in_tmp_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The faults file is a parameter: a relative path keeps the param ids, hence the replicate
    # seeds and the noise, the same on every run of a test (workers inherit this folder).
    monkeypatch.chdir(tmp_path)


def write_calibration(
    folder: Path, output: Path, *, target: str, loss: str = "mse_of_mean", **calibrate: Any
) -> Path:
    """Write a calibration of the faulty test model: y = 2a exactly, x is noise in [0, 1)."""
    (folder / "observed.csv").write_text(f"output,value\n{target},{0.5 if target == 'x' else 3}\n")
    settings = {"sampler": "random", "trials": 6, "parallel": 3, "seed": 2,
                "replicates": {"min": 2, "max": 8}, **calibrate}  # fmt: skip
    path = folder / "calibrate.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "name": "calibrate",
                "model": "tests.support.faulty:simulate",
                "fixed": {"faults_file": "faults.json", "sleep_s": 0.0},
                "parameters": {
                    "sample": {
                        "bounds": {"a": [0.0, 3.0], "behavior": {"choices": ["ok", "raise"]}}
                    }
                },
                "calibrate": settings,
                "targets": {"data": "observed.csv", "loss": loss},
                "seed": SEED,
                "execution": {"retries": 0, "timeout_seconds": 20, "dask": {"n_workers": 2}},
                "output": str(output),
            }
        )
    )
    (folder / "faults.json").write_text("{}")
    return path


def trials(output: Path) -> list[dict[str, Any]]:
    return sorted(pq.read_table(output / TRIALS_FILE).to_pylist(), key=lambda r: r["trial"])


@pytest.mark.timeout(420)
def test_a_seeded_calibration_is_the_same_on_one_and_two_workers_and_tells_failures(
    tmp_path: Path,
) -> None:
    path = write_calibration(tmp_path, tmp_path / "out", target="y", order="ask")
    results = []
    for workers in (1, 2):
        output = tmp_path / f"out-{workers}"
        state = simulation_study(
            study_path=str(path), output=str(output),
            execution={"dask": {"n_workers": workers}}, return_state=True,
        )  # fmt: skip
        assert state.is_completed(), state.message
        results.append(trials(output))
    one, two = results
    keys = ["trial", "ask", "param_id", "state", "loss", "loss_se", "replicates", "a"]
    assert [[r[k] for k in keys] for r in one] == [[r[k] for k in keys] for r in two]
    # Three asked at once, then one each time the trial three before is told.
    assert len(one) == 6 and [r["ask"] for r in one] == [1, 1, 1, 2, 3, 4]
    failed = [r for r in one if r["behavior"] == "raise"]
    complete = [r for r in one if r["behavior"] == "ok"]
    assert failed and complete, "the seed should draw both behaviours"
    assert all(r["state"] == "failed" and r["loss"] is None for r in failed)
    assert all("replicates ok" in r["allocation"] for r in failed)  # the set's reason
    for r in complete:  # y = 2a exactly: the loss is known, and no replicate noise
        assert r["loss"] == pytest.approx((2 * r["a"] - 3) ** 2)
        assert r["loss_se"] == pytest.approx(0.0, abs=1e-9)
        assert r["replicates"] == 2, "clearly ranked trials get no more replicates"
    storage = JournalStorage(JournalFileBackend(str(tmp_path / "out-1" / JOURNAL_FILE)))
    told = {t.number: t.state.name for t in optuna.load_study(
        study_name="calibrate", storage=storage).trials}  # fmt: skip
    assert told == {r["trial"]: "FAIL" if r in failed else "COMPLETE" for r in one}


@pytest.mark.timeout(300)
def test_trials_within_each_other_s_noise_get_more_replicates(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # x is noise whatever a: the trials differ by chance only, and the mean squared error
    # of their replicates against 0.5 (1/12 expected) has the same expectation for all.
    path = write_calibration(
        tmp_path, tmp_path / "out", target="x", loss="mean_of_mse", trials=3, parallel=3,
        replicates={"min": 4, "max": 16},
    )  # fmt: skip
    document = yaml.safe_load(path.read_text())
    document["parameters"]["sample"]["bounds"] = {"a": [0.0, 3.0]}
    path.write_text(yaml.safe_dump(document))
    state = simulation_study(study_path=str(path), return_state=True)
    assert state.is_completed(), state.message
    complete = [r for r in trials(tmp_path / "out") if r["state"] == "complete"]
    shown = [(r["trial"], r["replicates"], r["allocation"]) for r in complete]
    assert len(complete) == 3
    extended = [r for r in complete if r["replicates"] > 4]
    assert len(extended) >= 2, shown  # the best, and a trial within its noise
    for r in complete:  # where the doubling stopped, the intervals no longer overlap
        assert r["replicates"] == 16 or r["allocation"].startswith(("resolved", "best")), shown
    # Extending a trial ran only its new replicates: every seed ran once.
    assert set(executions(tmp_path / "faults.json").values()) == {1}
    capsys.readouterr()
    assert main(["show", str(tmp_path / "out")]) == 0
    captured = capsys.readouterr()
    shown = captured.out + captured.err
    assert "calibration calibrate: completed" in shown
    assert f"best trial {min(complete, key=lambda r: r['loss'])['trial']} " in shown
    assert "parameter sets by loss" in shown
    out = tmp_path / "out"
    assert "calibration" in (out / "report.html").read_text()  # the search
    assert "data:image/png" in (out / "simulations" / "report.html").read_text()  # the fit


@pytest.mark.timeout(420)
def test_a_calibration_killed_mid_search_resumes_without_repeating_finished_replicates(
    tmp_path: Path, prefect_api_url: str
) -> None:
    output = tmp_path / "out"
    path = write_calibration(tmp_path, output, target="y", trials=6, parallel=3)
    document = yaml.safe_load(path.read_text())
    document["fixed"]["sleep_s"] = 0.3  # a trial takes a second: time to kill between two
    path.write_text(yaml.safe_dump(document))
    env = {**os.environ, "PREFECT_API_URL": prefect_api_url, "PYTHONPATH": str(REPO)}
    command = [sys.executable, "-m", "flows.cli", "run", str(path), "--no-progress"]
    process = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True)  # fmt: skip
    tree: set[int] = set()
    deadline = time.monotonic() + 240
    log = TrialLog(output / TRIAL_LOG_FILE)
    while len(told(log)) < 2:  # some trials told, others in flight: kill now
        assert time.monotonic() < deadline and process.poll() is None, "no trial was told"
        tree.update(p.pid for p in psutil.Process(process.pid).children(recursive=True))
        time.sleep(0.1)
    tree.update(p.pid for p in psutil.Process(process.pid).children(recursive=True))
    process.send_signal(signal.SIGKILL)
    process.communicate(timeout=30)
    gone, alive = psutil.wait_procs([psutil.Process(p) for p in tree if psutil.pid_exists(p)],
                                    timeout=30)  # fmt: skip
    for leftover in alive:
        leftover.kill()
    assert not alive, "processes outlived the SIGKILLed calibration"
    first = told(log)
    assert 2 <= len(first) < 6

    resumed = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True,
                             timeout=300)  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    final = trials(output)
    assert len(final) == 6 and [r["trial"] for r in final] == list(range(6))
    for record in first:  # told before the kill: the same, and none of it ran again
        assert (final[record.trial]["param_id"], final[record.trial]["loss"]) == (
            record.param_id, record.loss)  # fmt: skip
    ran = executions(tmp_path / "faults.json")
    for record in first:
        for replicate in range(record.replicates):
            seed = replicate_seed(SEED, record.param_id, replicate)
            assert ran.get(seed) == 1, (record.trial, replicate)
    assert sum(n - 1 for n in ran.values()) <= 3 * 2, "only replicates in flight ran twice"
    told_by_optuna = optuna.load_study(
        study_name="calibrate",
        storage=JournalStorage(JournalFileBackend(str(output / JOURNAL_FILE))),
    ).trials
    assert [t.state.name for t in told_by_optuna] == [
        "COMPLETE" if r["state"] == "complete" else "FAIL" for r in final
    ], "each told once, as recorded"


def told(log: TrialLog) -> list[TrialRecord]:
    return [r for r in log.read().values() if r.state != "pending"]


@pytest.mark.timeout(300)
def test_a_calibration_whose_every_trial_fails_ends_failed_with_exit_1(tmp_path: Path) -> None:
    path = write_calibration(tmp_path, tmp_path / "out", target="y", trials=3)
    document = yaml.safe_load(path.read_text())
    document["fixed"]["behavior"] = "raise"
    document["parameters"]["sample"]["bounds"] = {"a": [0.0, 3.0]}
    path.write_text(yaml.safe_dump(document))
    assert main(["run", str(path), "--no-progress"]) == 1
    assert all(r["state"] == "failed" for r in trials(tmp_path / "out"))
