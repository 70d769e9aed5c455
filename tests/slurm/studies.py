"""Studies whose workers are Slurm jobs of the local Slurm, and a watch on its queue."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tests.slurm.local_slurm import LocalSlurm

REPO = Path(__file__).parents[2]
BURN_MODEL = "benchmarks.burn:simulate"
DEATH_TIMEOUT_SECONDS = 20
"""How long a worker job waits for its scheduler before it ends by itself."""


def slurm_cluster_kwargs(
    folder: Path, job_name: str, walltime: str = "00:10:00", worker_args: tuple[str, ...] = ()
) -> dict[str, Any]:
    """Return SLURMCluster arguments for one-core workers of this machine's local Slurm."""
    return {
        "cores": 1,
        "processes": 1,
        "memory": "1GiB",
        "walltime": walltime,
        "job_name": job_name,
        # The scheduler (in the flow process) and the workers (jobs on this same node)
        # talk over the loopback only.
        "scheduler_options": {"host": "127.0.0.1", "port": 0, "dashboard_address": None},
        "worker_extra_args": ["--host", "127.0.0.1", *worker_args],
        "death_timeout": DEATH_TIMEOUT_SECONDS,
        "python": sys.executable,
        "log_directory": str(folder / "job-logs"),
        "local_directory": str(folder / "worker-space"),
        # The test models live in this repository, not in the installed packages.
        "job_script_prologue": [f"export PYTHONPATH={REPO}"],
        "job_extra_directives": [f"--chdir={folder}"],
    }


def write_slurm_study(
    folder: Path,
    name: str,
    *,
    sets: int = 2,
    replicates: int = 4,
    cost_ms: float = 50.0,
    adapt: dict[str, int] | None = None,
    shared_output: bool = True,
    walltime: str = "00:10:00",
    worker_args: tuple[str, ...] = (),
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write a study of the burn model whose workers are jobs of the local Slurm."""
    document: dict[str, Any] = {
        "name": name,
        "model": BURN_MODEL,
        "fixed": {"cost_ms": cost_ms},
        "parameters": {"grid": {"k": list(range(sets))}},
        "replicates": replicates,
        "seed": 11,
        "execution": {
            "runner": "thread",
            "timeout_seconds": 60,
            "retries": 0,
            "batch_size": 2,
            "dask": {
                "cluster_class": "dask_jobqueue.SLURMCluster",
                "cluster_kwargs": slurm_cluster_kwargs(
                    folder, f"simstudy-{name}", walltime, worker_args
                ),
                "adapt": adapt or {"minimum": 1, "maximum": 2},
                "shared_output": shared_output,
            },
        },
        "output": str(folder / "out"),
        **(extra or {}),
    }
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


def simstudy_run(study: Path, api_url: str, *args: str) -> subprocess.Popen[bytes]:
    """Start `simstudy run STUDY` on the test session's Prefect API; its log goes to a file."""
    log = open(study.with_suffix(".log"), "wb")  # noqa: SIM115 (closed with the process)
    env = {**os.environ, "PREFECT_API_URL": api_url, "PYTHONPATH": str(REPO)}
    process = subprocess.Popen(
        [sys.executable, "-m", "flows.cli", "run", str(study), "--no-progress", *args],
        cwd=REPO,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )
    threading.Thread(target=lambda: (process.wait(), log.close()), daemon=True).start()
    return process


@dataclass
class QueueWatch:
    """Samples `squeue` in a thread: every job seen, and the most running at once."""

    slurm: LocalSlurm
    interval: float = 0.5
    seen: dict[int, set[str]] = field(default_factory=dict)  # job id -> states seen
    most_running: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> QueueWatch:
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _watch(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval)

    def sample(self) -> None:
        """Take one look at the queue."""
        try:
            jobs = self.slurm.squeue_jobs()
        except Exception:  # a slow squeue is tried again at the next sample
            return
        for job in jobs:
            self.seen.setdefault(job.job_id, set()).add(job.state)
        self.most_running = max(self.most_running, sum(j.state == "RUNNING" for j in jobs))

    def running(self) -> list[int]:
        """Return the jobs running now."""
        return [job.job_id for job in self.slurm.squeue_jobs() if job.state == "RUNNING"]


def wait_until(condition: Any, deadline: float, what: str, interval: float = 0.25) -> None:
    """Wait until `condition()` is true, or fail saying `what` did not happen in time."""
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not happen in time")
        time.sleep(interval)


def parts_written(output: Path) -> int:
    """Return the part files a running study has written so far."""
    folder = output / "_parts"
    return len(list(folder.glob("*.parquet"))) if folder.is_dir() else 0
