"""Studies whose workers are jobs of a real single-node Slurm (dask-jobqueue's SLURMCluster).

Each test prints its fault-to-completion time (`pytest -s` shows them). Bounded: a
regression fails at its timeout instead of freezing the run.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from tests.slurm.local_slurm import LocalSlurm
from tests.slurm.studies import (
    DEATH_TIMEOUT_SECONDS,
    REPO,
    QueueWatch,
    parts_written,
    simstudy_run,
    wait_until,
    write_slurm_study,
)

pytest.importorskip("dask_jobqueue")
pytestmark = [pytest.mark.slow, pytest.mark.slurm]

STUDY_SECONDS = 240
"""What a study of a few seconds of work may take here at most, jobs' start included."""


def finished(process: subprocess.Popen[bytes], study: Path) -> int:
    """Wait for `simstudy run` to end; return its exit code (its log in the failure)."""
    try:
        code = process.wait(timeout=STUDY_SECONDS)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=30)
        raise AssertionError(f"the study did not end:\n{log_tail(study)}") from None
    return code


def log_tail(study: Path, lines: int = 40) -> str:
    log = study.with_suffix(".log")
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:]) if log.exists() else ""


def replicates_once(output: Path, sets: int, replicates: int) -> None:
    """Assert that every replicate of the study is recorded once, ok."""
    columns = ["param_id", "replicate", "status"]
    table = pq.read_table(output / "replicates.parquet", columns=columns)
    keys = list(zip(table["param_id"].to_pylist(), table["replicate"].to_pylist(), strict=True))
    assert len(keys) == len(set(keys)) == sets * replicates
    assert set(table["status"].to_pylist()) == {"ok"}
    document = json.loads((output / "study.json").read_text())
    assert document["status"] == "ok" and document["counts"] == {"ok": sets * replicates}


@pytest.mark.timeout(60)
def test_a_local_output_is_refused_for_slurm_workers_unless_said_shared(tmp_path: Path) -> None:
    # Refused before anything starts (exit 2); the shared case runs in the next test.
    study = write_slurm_study(tmp_path, "refused", shared_output=False)
    command = [sys.executable, "-m", "flows.cli", "run", str(study), "--no-progress"]
    refused = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=50)
    said = refused.stdout + refused.stderr
    assert refused.returncode == 2, said
    assert "run on other hosts" in said and "shared_output: true" in said
    assert not (tmp_path / "out").exists()


@pytest.mark.timeout(STUDY_SECONDS + 60)
def test_a_study_runs_on_slurm_worker_jobs_and_leaves_none(
    local_slurm: LocalSlurm, prefect_api_url: str, tmp_path: Path
) -> None:
    study = write_slurm_study(tmp_path, "adaptive", sets=3, replicates=6, cost_ms=100)
    with QueueWatch(local_slurm) as watch:
        process = simstudy_run(study, prefect_api_url)
        assert finished(process, study) == 0, log_tail(study)
    replicates_once(tmp_path / "out", sets=3, replicates=6)
    assert watch.seen and watch.most_running >= 1  # its workers were Slurm jobs
    local_slurm.wait_no_jobs(time.monotonic() + 30)  # and none is left


@pytest.mark.timeout(STUDY_SECONDS + 60)
def test_a_preempted_worker_job_is_replaced_and_no_replicate_is_lost_or_doubled(
    local_slurm: LocalSlurm, prefect_api_url: str, tmp_path: Path
) -> None:
    sets, replicates = 3, 16
    study = write_slurm_study(
        tmp_path, "preempted", sets=sets, replicates=replicates, cost_ms=400,
        adapt={"minimum": 2, "maximum": 2},
    )  # fmt: skip
    with QueueWatch(local_slurm) as watch:
        process = simstudy_run(study, prefect_api_url)
        deadline = time.monotonic() + STUDY_SECONDS
        wait_until(lambda: parts_written(tmp_path / "out") >= 1, deadline, "a first part")
        wait_until(lambda: len(watch.running()) == 2, deadline, "two running worker jobs")
        first_jobs = set(watch.running())
        victim = min(first_jobs)
        preempted = time.monotonic()
        local_slurm.command(["scancel", str(victim)])
        assert finished(process, study) == 0, log_tail(study)
        print(f"preemption: scancel to completion {time.monotonic() - preempted:.1f} s")
    replicates_once(tmp_path / "out", sets, replicates)
    replacements = set(watch.seen) - first_jobs
    assert replacements, f"adapt submitted no job in place of {victim}: {watch.seen}"
    local_slurm.wait_no_jobs(time.monotonic() + 30)


@pytest.mark.timeout(STUDY_SECONDS + 120)
def test_workers_retire_before_their_walltime_and_the_study_completes(
    local_slurm: LocalSlurm, prefect_api_url: str, tmp_path: Path
) -> None:
    # Slurm's walltime is whole minutes: one minute, and workers that retire after 25-35 s
    # (dask's --lifetime, staggered) so the walltime never kills one mid-batch.
    sets, replicates = 3, 30
    study = write_slurm_study(
        tmp_path, "walltime", sets=sets, replicates=replicates, cost_ms=1000,
        adapt={"minimum": 2, "maximum": 2}, walltime="00:01:00",
        worker_args=("--lifetime", "30s", "--lifetime-stagger", "5s"),
    )  # fmt: skip
    with QueueWatch(local_slurm) as watch:
        started = time.monotonic()
        process = simstudy_run(study, prefect_api_url)
        assert finished(process, study) == 0, log_tail(study)
        print(f"walltime: study with retiring workers {time.monotonic() - started:.1f} s")
    replicates_once(tmp_path / "out", sets, replicates)
    assert len(watch.seen) > 2, f"no worker job retired and was replaced: {watch.seen}"
    job_logs = "".join(p.read_text() for p in (tmp_path / "job-logs").glob("*.err"))
    assert "Reason: worker-lifetime-reached" in job_logs
    assert "DUE TO TIME LIMIT" not in job_logs  # retired in time, never killed
    local_slurm.wait_no_jobs(time.monotonic() + 30)


@pytest.mark.timeout(STUDY_SECONDS + 60)
def test_worker_jobs_end_by_themselves_when_simstudy_run_is_killed(
    local_slurm: LocalSlurm, prefect_api_url: str, tmp_path: Path
) -> None:
    study = write_slurm_study(
        tmp_path, "orphaned", sets=2, replicates=40, cost_ms=1000,
        adapt={"minimum": 2, "maximum": 2},
    )  # fmt: skip
    process = simstudy_run(study, prefect_api_url)
    deadline = time.monotonic() + STUDY_SECONDS
    wait_until(lambda: parts_written(tmp_path / "out") >= 1, deadline, "a first part")
    os.kill(process.pid, signal.SIGKILL)
    killed = time.monotonic()
    process.wait(timeout=30)
    # A worker that loses its scheduler closes at once; one still starting gives up after
    # its death timeout. Either way its job ends, and Slurm takes a few seconds to notice.
    local_slurm.wait_no_jobs(killed + DEATH_TIMEOUT_SECONDS + 30)
    print(f"orphaned: SIGKILL to an empty queue {time.monotonic() - killed:.1f} s")


@pytest.mark.timeout(STUDY_SECONDS + 60)
def test_a_calibration_keeps_the_worker_jobs_busy_and_ends_them_with_the_search(
    local_slurm: LocalSlurm, prefect_api_url: str, tmp_path: Path
) -> None:
    (tmp_path / "observed.csv").write_text("output,value\ny,3\n")
    (tmp_path / "faults.json").write_text("{}")
    study = write_slurm_study(
        tmp_path, "calibrated", adapt={"minimum": 1, "maximum": 3},
        extra={
            "model": "tests.support.faulty:simulate",
            "fixed": {"faults_file": str(tmp_path / "faults.json"), "sleep_s": 1.0},
            "parameters": {"sample": {"bounds": {"a": [0.0, 3.0]}}},
            "calibrate": {"sampler": "random", "trials": 18, "parallel": 6, "seed": 2,
                          "replicates": {"min": 2, "max": 4}},
            "targets": {"data": str(tmp_path / "observed.csv"), "loss": "mse_of_mean"},
        },
    )  # fmt: skip
    with QueueWatch(local_slurm) as watch:
        started = time.monotonic()
        process = simstudy_run(study, prefect_api_url)
        assert finished(process, study) == 0, log_tail(study)
        print(f"calibration on Slurm: {time.monotonic() - started:.1f} s")
    trials = pq.read_table(tmp_path / "out" / "trials.parquet").to_pylist()
    assert len(trials) == 18 and all(t["state"] == "complete" for t in trials)
    # It starts with one worker; trials submitted for that one alone would never make
    # the scheduler ask for a third.
    assert watch.most_running == 3, f"adapt never ran three worker jobs: {watch.seen}"
    local_slurm.wait_no_jobs(time.monotonic() + 30)


@pytest.mark.timeout(STUDY_SECONDS + 60)
def test_a_study_inside_one_allocation_sizes_its_local_cluster_to_the_job(
    local_slurm: LocalSlurm, tmp_path: Path
) -> None:
    # The second pattern: sbatch a script that runs `simstudy run` (its own Prefect API and
    # local cluster) on the job's node. The node has more CPUs than the job.
    study = tmp_path / "inside.yaml"
    study.write_text(
        "name: inside\n"
        "model: benchmarks.burn:simulate\n"
        "fixed: {cost_ms: 20}\n"
        "parameters: {grid: {k: [0, 1]}}\n"
        "replicates: 4\n"
        "seed: 3\n"
    )
    script = tmp_path / "inside.sh"
    script.write_text(
        "#!/bin/bash\n"
        "#SBATCH --job-name=simstudy-inside\n"
        f"#SBATCH --output={tmp_path}/inside-%j.out\n"
        "#SBATCH --cpus-per-task=1\n"
        "#SBATCH --mem=1500M\n"
        "#SBATCH --time=00:10:00\n"
        f"cd {REPO}\n"
        f"{sys.executable} -m flows.cli run {study} --output {tmp_path}/out --no-progress\n"
    )
    environment = {name: os.environ[name] for name in ("PATH", "HOME") if name in os.environ}
    exports = ",".join(["NONE", *(f"{k}={v}" for k, v in environment.items())])
    job_id = local_slurm.sbatch(script, f"--export={exports}")
    local_slurm.wait_job_gone(job_id, time.monotonic() + STUDY_SECONDS)
    output = (tmp_path / f"inside-{job_id}.out").read_text()
    assert "local cluster: 1 worker(s) x 1 thread(s), memory limit 1.5 GiB each" in output, output
    assert "1 CPU and 1.5 GiB (from the Slurm allocation)" in output
    assert json.loads((tmp_path / "out" / "study.json").read_text())["status"] == "ok", output
