"""A full disk: one error line naming the file and the fix (exit 3), and an exact resume."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

REPO = Path(__file__).parents[2]

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("no_leftover_processes")]


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs (a real full disk); skipped where this process may not mount one."""
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(disk)],
                             capture_output=True, text=True)  # fmt: skip
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


def run(study: Path, api_url: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PREFECT_API_URL": api_url, "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, "-m", "flows.cli", "run", str(study), "--no-progress"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=240,
    )  # fmt: skip


@pytest.mark.timeout(300)
def test_a_full_disk_is_one_error_and_the_same_command_resumes_exactly(
    small_disk: Path, tmp_path: Path, prefect_api_url: str
) -> None:
    # ~2.4 MB of Poisson draws in the parts and as many in the result files: too much.
    study = tmp_path / "study.yaml"
    study.write_text(yaml.safe_dump({
        "name": "full", "model": "benchmarks.burn:simulate",
        "fixed": {"cost_ms": 0.0, "series": 40_000},
        "parameters": {"grid": {"label": [1.0, 2.0]}}, "replicates": 8, "seed": 1,
        "execution": {"batch_size": 2, "dask": {"n_workers": 2}},
        "output": str(small_disk / "out"),
    }))  # fmt: skip
    full = run(study, prefect_api_url)
    assert full.returncode == 3, full.stderr[-3000:]
    assert "Traceback" not in full.stderr
    errors = [line for line in full.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "No space left on device" in errors[0]
    assert "run the same command again" in errors[0]
    document = json.loads((small_disk / "out" / "study.json").read_text())
    assert document["status"] in ("incomplete", "running")  # "running" if even that failed
    subprocess.run(["mount", "-o", "remount,size=64m", str(small_disk)], check=True)
    resumed = run(study, prefect_api_url)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    rows = pq.read_table(small_disk / "out" / "replicates.parquet").to_pylist()
    assert sorted((r["param_id"], r["replicate"]) for r in rows) == sorted(
        {(r["param_id"], i) for r in rows for i in range(8)}
    )
    assert all(r["status"] == "ok" and r["attempts"] == 1 for r in rows)
    finished = json.loads((small_disk / "out" / "study.json").read_text())
    assert finished["status"] == "ok"
    print(f"full disk: exit 3, then resumed reusing {finished['reused_replicates']} of 16")


@pytest.mark.timeout(300)
def test_a_calibration_on_a_full_disk_says_incomplete_and_the_same_command_resumes(
    small_disk: Path, tmp_path: Path, prefect_api_url: str
) -> None:
    (tmp_path / "observed.csv").write_text("output,value\ndraw,500\n")
    study = tmp_path / "calibrate.yaml"
    study.write_text(yaml.safe_dump({
        "name": "full-calibration", "model": "benchmarks.burn:simulate",
        "fixed": {"cost_ms": 0.0, "series": 40_000},  # 320 kB a replicate
        "parameters": {"sample": {"bounds": {"x": [0.0, 1.0]}}},
        "calibrate": {"sampler": "random", "trials": 6, "parallel": 2, "seed": 3,
                      "replicates": {"min": 2, "max": 2}},
        "targets": {"data": str(tmp_path / "observed.csv"), "loss": "mse_of_mean"},
        "seed": 1, "execution": {"dask": {"n_workers": 2}},
        "output": str(small_disk / "out"),
    }))  # fmt: skip
    full = run(study, prefect_api_url)
    assert full.returncode == 3, full.stderr[-3000:]
    assert "Traceback" not in full.stderr
    errors = [line for line in full.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "No space left on device" in errors[0], full.stderr[-3000:]
    document = json.loads((small_disk / "out" / "calibration.json").read_text())
    assert document["status"] == "incomplete" and "No space left" in document["error"]
    subprocess.run(["mount", "-o", "remount,size=64m", str(small_disk)], check=True)
    resumed = run(study, prefect_api_url)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    finished = json.loads((small_disk / "out" / "calibration.json").read_text())
    assert finished["status"] == "completed" and finished["trials"] == 6
