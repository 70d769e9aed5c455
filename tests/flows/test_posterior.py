"""ABC-SMC posteriors end to end: exact where the answer is known, resumable, reported."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
import scipy.stats
import yaml

from flows.study import simulation_study
from simstudy.calibrate.posterior import POSTERIOR_FILE, POSTERIOR_JOURNAL, POSTERIOR_TABLE
from simstudy.models.counts import exact_posterior

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_api_url")]

REPO = Path(__file__).parents[2]
OBSERVED_TOTAL = 52
DAYS = 10
PRIOR = {"dist": "gamma", "a": 2.0, "scale": 2.0}


def write_posterior(folder: Path, **calibrate: Any) -> Path:
    """Write a Gamma-Poisson posterior study: the rate of 10 days of counts, total 52."""
    (folder / "observed.csv").write_text(f"output,value\ntotal,{OBSERVED_TOTAL}\n")
    settings = {"method": "abc-smc", "population_size": 200, "epsilon": 0.0,
                "generations": 12, "priors": {"rate": PRIOR}, **calibrate}  # fmt: skip
    path = folder / "posterior.yaml"
    path.write_text(yaml.safe_dump({
        "name": "gamma-poisson", "model": "simstudy.models.counts:simulate",
        "fixed": {"days": DAYS},
        # The bounds name the parameter (and the report's range); its prior is the gamma.
        "parameters": {"sample": {"bounds": {"rate": [0.0, 20.0]}}},
        "calibrate": settings,
        # With one replicate the squared error of the mean is (total - 52)^2: 0 exactly when
        # the total is the observed one, so epsilon 0 conditions on the sufficient statistic.
        "targets": {"data": "observed.csv", "loss": "mse_of_mean", "bootstrap": 0},
        "seed": 11,
        "execution": {"runner": "thread", "dask": {"n_workers": 2}},
        "output": str(folder / "out"),
    }))  # fmt: skip
    return path


def posterior(output: Path) -> dict[str, Any]:
    return json.loads((output / POSTERIOR_FILE).read_text())


@pytest.mark.timeout(300)
def test_a_gamma_poisson_posterior_is_exact_reported_and_shown(tmp_path: Path) -> None:
    path = write_posterior(tmp_path, population_size=100)
    state = simulation_study(study_path=str(path), return_state=True)
    assert state.is_completed(), state.message
    output = tmp_path / "out"
    found = posterior(output)
    exact = exact_posterior(OBSERVED_TOTAL, DAYS, PRIOR["a"], PRIOR["scale"])
    rate = found["parameters"]["rate"]
    # 100 particles: the mean's standard error is ~1.5 % of it, the sd's ~7 %.
    assert rate["mean"] == pytest.approx(exact.mean(), rel=0.06)
    assert rate["sd"] == pytest.approx(exact.std(), rel=0.3)
    assert found["stop_reason"].startswith("epsilon 0.0")
    generations = found["generations"]
    assert generations[0]["epsilon"] is None and generations[-1]["epsilon"] == 0.0
    assert found["simulations"] >= sum(g["proposals"] for g in generations)
    table = pq.read_table(output / POSTERIOR_TABLE)
    last = table.filter(table.column("generation").to_numpy() == len(generations) - 1)
    assert last.num_rows == 100 and max(last.column("distance").to_pylist()) == 0.0
    assert sum(last.column("weight").to_pylist()) == pytest.approx(1.0)
    # Posterior predictive: each particle's fresh replicate; the total's exact predictive is
    # negative binomial (sd ~10, so the median of 100 draws is within ~1.3 of its own).
    predictive = pq.read_table(output / "predictive.parquet").to_pydict()
    assert predictive["output"] == ["total"] and predictive["draws"] == [100]
    exact_total = scipy.stats.nbinom(exact.kwds["a"], 1 / (1 + DAYS * exact.kwds["scale"]))
    assert predictive["q50"][0] == pytest.approx(exact_total.median(), abs=4)
    assert predictive["q2_5"][0] < OBSERVED_TOTAL < predictive["q97_5"][0]
    assert found["predictive"]["outputs"] == {"total": {"points": 1, "inside_95": 1.0}}
    document = json.loads((output / "calibration.json").read_text())
    assert document["status"] == "completed" and document["method"] == "abc-smc"
    page = (output / "report.html").read_text()
    assert "posterior (ABC-SMC)" in page and page.count("data:image/png;base64,") >= 4
    assert "Posterior predictive" in page
    shown = subprocess.run(
        [sys.executable, "-m", "flows.cli", "show", str(output)], cwd=REPO, capture_output=True,
        text=True, timeout=60, env={**os.environ, "PYTHONPATH": str(REPO), "COLUMNS": "120"},
    )  # fmt: skip
    assert shown.returncode == 0, shown.stderr
    shown = shown.stdout + shown.stderr
    assert "posterior by ABC-SMC" in shown and "rate " in shown and "95% [" in shown


def run_command(path: Path) -> subprocess.Popen[bytes]:
    environment = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen(
        [sys.executable, "-m", "flows.cli", "run", str(path), "--no-progress"], cwd=REPO,
        env=environment, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True,
    )  # fmt: skip


@pytest.mark.timeout(420)
def test_a_posterior_killed_mid_generation_resumes_to_the_uninterrupted_population(
    tmp_path: Path,
) -> None:
    settings = {"population_size": 60, "epsilon": None, "generations": 3}
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    for folder in (whole, killed):
        folder.mkdir()
        write_posterior(folder, **settings)
    state = simulation_study(study_path=str(whole / "posterior.yaml"), return_state=True)
    assert state.is_completed(), state.message
    process = run_command(killed / "posterior.yaml")
    journal = killed / "out" / POSTERIOR_JOURNAL
    deadline = time.monotonic() + 180
    # Killed once generation 1 has outcomes: mid-generation, sets in flight.
    while time.monotonic() < deadline and process.poll() is None:
        if journal.exists() and '"generation":1,"index":5,"status"' in journal.read_text():
            break
        time.sleep(0.05)
    assert process.poll() is None, "the run ended before it could be killed"
    os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=30)
    assert not (killed / "out" / POSTERIOR_FILE).exists() or posterior(killed / "out")[
        "stop_reason"] is None  # fmt: skip
    rerun = run_command(killed / "posterior.yaml")
    assert rerun.wait(timeout=240) == 0
    columns = ["generation", "param_id", "weight", "distance", "rate"]
    first = pq.read_table(whole / "out" / POSTERIOR_TABLE).select(columns).to_pylist()
    second = pq.read_table(killed / "out" / POSTERIOR_TABLE).select(columns).to_pylist()
    assert first == second
    assert posterior(killed / "out")["parameters"] == posterior(whole / "out")["parameters"]
