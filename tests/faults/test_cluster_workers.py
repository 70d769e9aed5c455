"""A study on a cluster of `dask worker` processes: lost, replaced and late workers.

Real `dask scheduler` and `dask worker` command-line processes on 127.0.0.1, as on a
cluster of machines: a worker SIGKILLed mid-study loses and duplicates nothing, a worker
that joins mid-study gets the study's plugin and takes work, and no model process is
left under any worker once the study ends.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest
from distributed import Client

from flows.preflight import (
    PreflightError,
    _plugin_report,
    check_worker_reports,
    preflight,
    remove_study_plugin,
)
from flows.study import simulation_study
from simstudy.spec.study import Study
from tests.conftest import INTERPRETER_HELPERS
from tests.support.outputs import FaultyStudy, rows_by_replicate

pytestmark = [
    pytest.mark.slow,
    pytest.mark.usefixtures("prefect_api_url", "no_leftover_processes"),
]

REPO = Path(__file__).resolve().parents[2]
DASK = str(Path(sys.executable).with_name("dask"))
# As docs/guides/clusters.md asks of a cluster at an address: the scheduler never reruns a
# task whose worker died (the flow does, counting executions); and the quiet settings of
# `simstudy run`.
CLUSTER_ENVIRONMENT = {
    "DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES": "0",
    "DASK_DISTRIBUTED__WORKER__PROFILE__ENABLED": "False",
    "DASK_DISTRIBUTED__ADMIN__TICK__INTERVAL": "500ms",
}


class CliCluster:
    """A `dask scheduler` and `dask worker` processes started from the command line."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.processes: list[subprocess.Popen[bytes]] = []
        self.workers: dict[str, subprocess.Popen[bytes]] = {}
        self.environment = {
            **os.environ,
            **CLUSTER_ENVIRONMENT,
            "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
        }
        self.address = ""

    def _start(self, name: str, *arguments: str) -> subprocess.Popen[bytes]:
        log = open(self.folder / f"{name}.log", "wb")  # noqa: SIM115 (closed with the process)
        process = subprocess.Popen(
            [DASK, *arguments], env=self.environment, cwd=REPO, stdout=log, stderr=log
        )
        log.close()
        self.processes.append(process)
        return process

    def start_scheduler(self) -> str:
        """Start the scheduler; return its address."""
        scheduler_file = self.folder / "scheduler.json"
        self._start(
            "scheduler", "scheduler", "--host", "127.0.0.1", "--port", "0",
            "--no-dashboard", "--scheduler-file", str(scheduler_file),
        )  # fmt: skip
        deadline = time.monotonic() + 30
        while not scheduler_file.exists() or not scheduler_file.read_text().strip():
            assert time.monotonic() < deadline, "the scheduler did not start within 30 s"
            time.sleep(0.1)
        self.address = json.loads(scheduler_file.read_text())["address"]
        return self.address

    def start_worker(self, name: str, *arguments: str) -> subprocess.Popen[bytes]:
        """Start `dask worker` (a nanny and its worker process, one thread) named `name`."""
        process = self._start(
            name, "worker", self.address, "--name", name, "--nthreads", "1", "--nworkers", "1",
            "--host", "127.0.0.1", "--no-dashboard", "--death-timeout", "60", *arguments,
        )  # fmt: skip
        self.workers[name] = process
        return process

    def worker_process(self, name: str) -> psutil.Process:
        """Return the worker process under the nanny of `name` (the one running tasks)."""
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            for child in psutil.Process(self.workers[name].pid).children():
                with contextlib.suppress(psutil.Error):
                    if "spawn_main" in " ".join(child.cmdline()):
                        return child
            time.sleep(0.1)
        raise AssertionError(f"worker {name} has no worker process")

    def model_processes(self) -> dict[str, list[str]]:
        """Return what runs under each worker's processes: model processes and supervisors."""
        found: dict[str, list[str]] = {}
        for name, process in self.workers.items():
            with contextlib.suppress(psutil.Error):
                for child in psutil.Process(process.pid).children(recursive=True):
                    with contextlib.suppress(psutil.Error):
                        line = " ".join(child.cmdline())
                        if "spawn_main" not in line and not any(
                            h in line for h in INTERPRETER_HELPERS
                        ):
                            found.setdefault(name, []).append(f"{child.pid} {line[:100]}")
        return found

    def stop(self) -> None:
        """Stop every process with what it started: SIGTERM, then SIGKILL after 5 s."""
        tree = []
        for process in self.processes:
            with contextlib.suppress(psutil.Error):
                parent = psutil.Process(process.pid)
                tree += [parent, *parent.children(recursive=True)]
        for member in tree:
            with contextlib.suppress(psutil.Error):
                member.terminate()
        _, alive = psutil.wait_procs(tree, timeout=5)
        for member in alive:
            with contextlib.suppress(psutil.Error):
                member.kill()
        psutil.wait_procs(alive, timeout=5)
        for process in self.processes:
            process.wait(timeout=5)


@pytest.fixture
def cli_cluster(tmp_path: Path) -> Iterator[CliCluster]:
    """A scheduler and two workers, `a` and `b`, the second offering `aggregation=1`."""
    cluster = CliCluster(tmp_path)
    try:
        cluster.start_scheduler()
        cluster.start_worker("a")
        cluster.start_worker("b", "--resources", "aggregation=1")
        with Client(cluster.address, set_as_default=False, timeout=30) as client:
            client.wait_for_workers(2, timeout=60)
        yield cluster
    finally:
        cluster.stop()


def wait_until(condition: Callable[[], bool], seconds: float, what: str) -> float:
    """Wait until `condition()`; return the seconds it took."""
    started = time.monotonic()
    while not condition():
        assert time.monotonic() - started < seconds, f"{what} within {seconds:g} s"
        time.sleep(0.1)
    return time.monotonic() - started


@pytest.mark.timeout(180)
def test_lost_and_late_workers_of_an_address_cluster_lose_nothing_and_keep_nothing(
    faulty_study: FaultyStudy, cli_cluster: CliCluster
) -> None:
    study, ids = faulty_study(
        {},
        parameters={"grid": {"a": [1.0, 2.0, 3.0, 4.0]}},
        replicates=16,
        fixed={"sleep_s": 0.3},
        execution={
            "batch_size": 4,
            "aggregation_resources": {"aggregation": 1},
            "dask": {"address": cli_cluster.address},
        },
    )
    events: dict[str, float] = {}
    late: list[str] = []

    def kill_a_worker_then_add_one() -> None:
        executions = Path(f"{study.fixed['faults_file']}.executions")
        with contextlib.suppress(AssertionError):
            wait_until(
                lambda: executions.exists() and len(executions.read_text().split()) >= 12,
                60,
                "12 replicates ran",
            )
        cli_cluster.worker_process("a").send_signal(signal.SIGKILL)
        events["killed"] = time.monotonic()
        cli_cluster.start_worker("c")
        with Client(cli_cluster.address, set_as_default=False, timeout=30) as client:
            client.wait_for_workers(3, timeout=60)
            events["joined"] = time.monotonic()
            late.extend(
                address for address, info in client.scheduler_info(n_workers=-1)["workers"].items()
                if info["name"] == "c"
            )  # fmt: skip

    helper = threading.Thread(target=kill_a_worker_then_add_one)
    started = time.monotonic()
    helper.start()
    state = simulation_study(study=study, return_state=True)
    ended = time.monotonic()
    helper.join(timeout=60)
    assert "killed" in events and late, "no worker was killed, or the late worker never joined"
    assert state.is_completed(), state.message
    rows = rows_by_replicate(study)  # each replicate once
    assert set(rows) == {(pid, r) for pid in ids for r in range(16)}
    assert {r["status"] for r in rows.values()} == {"ok"}
    ran_on_late = sum(1 for r in rows.values() if r["worker"] in late)
    assert ran_on_late > 0, f"the worker that joined mid-study ({late}) ran no replicate"
    # The study's plugin left every worker, and its model processes with it.
    gone = wait_until(lambda: not cli_cluster.model_processes(), 5, "model processes gone")
    print(
        f"address cluster: study {ended - started:.1f} s, worker killed at "
        f"{events['killed'] - started:.1f} s, late worker joined at "
        f"{events['joined'] - started:.1f} s and ran {ran_on_late}/64 replicates, "
        f"model processes gone {gone:.2f} s after the study"
    )


def plugin_names(client: Client) -> set[str]:
    """Return the worker plugins every worker has (their intersection)."""
    held = client.run(lambda dask_worker: sorted(dask_worker.plugins))
    return set.intersection(*(set(names) for names in held.values()))


@pytest.mark.timeout(120)
def test_study_plugin_reaches_a_late_worker_and_leaves_with_every_model_process(
    make_study: Callable[..., Study], cli_cluster: CliCluster, tmp_path: Path
) -> None:
    study = make_study(execution={"dask": {"address": cli_cluster.address}})
    log_dir = str(tmp_path / "logs")
    with Client(cli_cluster.address, set_as_default=False, timeout=30) as client:
        # A failed preflight leaves nothing behind on the cluster either.
        broken = make_study(model="tests.support.faulty:nothing")
        with pytest.raises(PreflightError, match="cannot load model"):
            preflight(client, broken, "simstudy-broken", log_dir)
        assert "simstudy-broken" not in plugin_names(client)

        preflight(client, study, "simstudy-study", log_dir)
        assert set(cli_cluster.model_processes()) == {"a", "b"}, "warm model processes"
        joined = time.monotonic()
        cli_cluster.start_worker("late")
        client.wait_for_workers(3, timeout=60)
        # Dask hands a registered plugin to a worker that joins later, before it takes tasks.
        wait_until(lambda: "late" in cli_cluster.model_processes(), 30, "the late worker warmed")
        warm = time.monotonic() - joined
        reports = client.run(_plugin_report, name="simstudy-study")
        check_worker_reports(reports)
        assert len(reports) == 3
        started = time.monotonic()
        remove_study_plugin(client, "simstudy-study")
        removed = time.monotonic() - started
        gone = wait_until(lambda: not cli_cluster.model_processes(), 5, "model processes gone")
        assert "simstudy-study" not in plugin_names(client)
    print(
        f"late worker warm {warm:.1f} s after its start; plugin removed in {removed:.2f} s, "
        f"model processes gone {gone:.2f} s later"
    )
