"""A SIGKILLed `simstudy run` takes every process it started with it.

The real command on a real study: its Prefect API server, the Dask workers of its local
cluster (even while a thread-runner model holds the GIL), their lifelines, the
multiprocessing resource tracker, and the process runner's supervisors and model processes.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
import yaml

REPO = Path(__file__).parents[2]
START_SECONDS = 80.0
"""Time the study has to start its API and cluster and reach a model, on a loaded machine."""
GONE_SECONDS = 10.0
"""Time every process has to go after the SIGKILL."""

# Markers in the command lines of the processes that `simstudy run` starts.
API_SERVER = "prefect.server.api.server:create_app"
RESOURCE_TRACKER = "multiprocessing.resource_tracker"
DASK_WORKER = "spawn_main"
LIFELINE = "reaper.py lifeline"
SUPERVISOR = "simstudy.run.runners._child"


def simstudy_command() -> list[str]:
    """Return the `simstudy` console script of this environment, else `python -m flows.cli`."""
    script = Path(sys.executable).parent / "simstudy"
    return [str(script)] if script.exists() else [sys.executable, "-m", "flows.cli"]


def write_study(folder: Path, runner: str, behavior: str) -> Path:
    """Write a study of two replicates, one per worker, that both misbehave as asked."""
    faults = folder / "faults.json"
    faults.write_text("{}")  # no per-seed faults: only used to log every execution
    document = {
        "name": "killed",
        "model": "tests.support.faulty:simulate",
        "parameters": {"grid": {"a": [1.0, 2.0]}},
        "fixed": {"behavior": behavior, "faults_file": str(faults)},
        "replicates": 1,
        "seed": 3,
        "execution": {
            "runner": runner,
            "timeout_seconds": 600,
            "retries": 0,
            "dask": {"n_workers": 2},
        },
        "output": str(folder / "out"),
    }
    path = folder / "study.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


def alive(process: psutil.Process) -> bool:
    """Return True while the process recorded (not a later one with its pid) runs."""
    try:
        # is_running() compares the start time too, so a reused pid is not mistaken.
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def describe(process: psutil.Process) -> str:
    """Return `pid command line` (shortened) of a process, or its pid alone once gone."""
    try:
        return f"{process.pid} {' '.join(process.cmdline())[-160:]}"
    except psutil.Error:
        return str(process.pid)


class Tree:
    """Every descendant of a process ever seen alive, by pid and start time."""

    def __init__(self, root: int):
        self.root = psutil.Process(root)
        self.seen: dict[int, psutil.Process] = {}
        self.argv: dict[int, list[str]] = {}

    def record(self) -> None:
        """Record the descendants alive now (a psutil.Process keeps its start time)."""
        with contextlib.suppress(psutil.Error):
            for child in self.root.children(recursive=True):
                with contextlib.suppress(psutil.Error):
                    if child.pid not in self.seen or not alive(self.seen[child.pid]):
                        self.argv[child.pid] = child.cmdline()
                        self.seen[child.pid] = child

    def having(self, marker: str) -> list[psutil.Process]:
        """Return the recorded processes whose command line contains `marker`."""
        return [p for pid, p in self.seen.items() if marker in " ".join(self.argv[pid])]

    def survivors(self) -> list[psutil.Process]:
        """Return the recorded processes still alive, and any other left in the root's session."""
        left = [p for p in self.seen.values() if alive(p)]
        # A process started after the last record still carries the session of
        # `simstudy run` unless it called setsid itself.
        for process in psutil.process_iter():
            with contextlib.suppress(OSError, psutil.Error):
                if (
                    process.pid not in self.seen
                    and process.pid != self.root.pid
                    and os.getsid(process.pid) == self.root.pid
                    and alive(process)
                ):
                    left.append(process)
        return left

    def kill_all(self) -> None:
        """SIGKILL the root and every recorded process still alive."""
        for process in [self.root, *self.survivors()]:
            with contextlib.suppress(psutil.Error):
                process.kill()


def executions(faults_file: Path) -> int:
    """Return how many replicates have started (the test model logs each one)."""
    path = Path(f"{faults_file}.executions")
    return len(path.read_text().split()) if path.exists() else 0


def busy_workers(tree: Tree) -> list[psutil.Process]:
    """Return the Dask workers running at full CPU (a model holding the GIL)."""
    workers = tree.having(DASK_WORKER)
    for worker in workers:
        with contextlib.suppress(psutil.Error):
            worker.cpu_percent(None)
    time.sleep(0.5)
    busy = []
    for worker in workers:
        with contextlib.suppress(psutil.Error):
            if worker.cpu_percent(None) > 50:
                busy.append(worker)
    return busy


def wait_until_models_run(
    tree: Tree, flow: subprocess.Popen[bytes], folder: Path, runner: str
) -> None:
    """Record the tree until both replicates are inside the model, or fail."""
    deadline = time.monotonic() + START_SECONDS
    while time.monotonic() < deadline:
        tree.record()
        if flow.poll() is not None:
            pytest.fail(f"simstudy run exited with {flow.returncode} before the models ran")
        # A thread-runner model is in its regex (holding the GIL) once its worker spins.
        started = executions(folder / "faults.json") >= 2
        if started and (runner != "thread" or len(busy_workers(tree)) >= 2):
            return
        time.sleep(0.2)
    pytest.fail(f"the models were not running {START_SECONDS:.0f} s after the start")


@contextlib.contextmanager
def started_run(study: Path, folder: Path) -> Iterator[tuple[subprocess.Popen[bytes], Tree]]:
    """Start `simstudy run` in a session of its own; kill all it started when done."""
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    env["PREFECT_HOME"] = str(folder / "prefect-home")
    # The console script's sys.path holds its own folder, not the working directory.
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    with (folder / "run.log").open("wb") as log:
        flow = subprocess.Popen(
            [*simstudy_command(), "run", str(study), "--no-progress"],
            cwd=REPO, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
            start_new_session=True,
        )  # fmt: skip
    tree = Tree(flow.pid)
    try:
        yield flow, tree
    finally:
        # A regression must not leave its processes running in CI.
        tree.kill_all()
        flow.wait()


EXPECTED = {
    "thread": [API_SERVER, RESOURCE_TRACKER, DASK_WORKER, LIFELINE],
    "process": [API_SERVER, RESOURCE_TRACKER, DASK_WORKER, LIFELINE, SUPERVISOR],
}


@pytest.mark.slow
@pytest.mark.timeout(120)
@pytest.mark.parametrize(
    ("runner", "behavior", "request_in_flight"),
    [("thread", "hold_gil", False), ("process", "hang", False), ("thread", "hold_gil", True)],
    ids=[
        "thread-runner-holding-the-gil",
        "process-runner-hanging",
        "api-request-in-flight",
    ],
)
def test_sigkilled_run_leaves_no_process_behind(
    tmp_path: Path, runner: str, behavior: str, request_in_flight: bool
) -> None:
    study = write_study(tmp_path, runner, behavior)
    with started_run(study, tmp_path) as (flow, tree), contextlib.ExitStack() as stack:
        wait_until_models_run(tree, flow, tmp_path, runner)
        tree.record()
        listing = "\n".join(" ".join(argv) for argv in tree.argv.values())
        for marker in EXPECTED[runner]:
            assert tree.having(marker), f"no {marker!r} among:\n{listing}"
        if runner == "process":
            models = [c for supervisor in tree.having(SUPERVISOR) for c in _children(supervisor)]
            assert models, "the supervisors should have forked their model processes"
        (server,) = tree.having(API_SERVER)
        if request_in_flight:
            # A client still sending its request: uvicorn waits for it when it stops.
            stack.enter_context(half_sent_request(tree.argv[server.pid]))
        gone_at = kill_and_time(flow, tree)
        survivors = [describe(p) for p in tree.survivors()]
        assert not survivors, f"alive {GONE_SECONDS} s after the SIGKILL:\n" + "\n".join(survivors)
        print(f"{len(tree.seen)} processes gone {max(gone_at.values()):.2f} s after the SIGKILL:")
        for pid, seconds in sorted(gone_at.items(), key=lambda item: item[1]):
            print(f"  {seconds:5.2f} s  {pid} {' '.join(tree.argv[pid])[-100:]!r}")
        private = Path(tree.argv[server.pid][3])
        assert private.name.startswith("simstudy-api-") and not private.exists()


def kill_and_time(flow: subprocess.Popen[bytes], tree: Tree) -> dict[int, float]:
    """SIGKILL `simstudy run`; return when each recorded process was gone (seconds after)."""
    killed_at = time.monotonic()
    flow.send_signal(signal.SIGKILL)
    flow.wait()
    gone_at: dict[int, float] = {}
    while time.monotonic() - killed_at < GONE_SECONDS:
        for pid, process in tree.seen.items():
            if pid not in gone_at and not alive(process):
                gone_at[pid] = time.monotonic() - killed_at
        if len(gone_at) == len(tree.seen) and not tree.survivors():
            break
        time.sleep(0.02)
    return gone_at


@contextlib.contextmanager
def half_sent_request(server_argv: list[str]) -> Iterator[None]:
    """Keep a request to the API server open, its body never finished."""
    port = int(server_argv[server_argv.index("--port") + 1])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as client:
        client.sendall(
            b"POST /api/flows/ HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{"
        )
        time.sleep(0.5)  # read by the server
        yield


def _children(process: psutil.Process) -> list[psutil.Process]:
    try:
        return process.children()
    except psutil.Error:
        return []
