"""Memory and processes of a long-lived Dask cluster across many studies (not a test).

    python -m benchmarks.long_lived [--studies 20] [--sets 2] [--replicates 20] [--cost-ms 10]
                                    [--runner process] [--series N] [--stock-dask-config]

Starts a `dask scheduler` and two `dask worker` processes (one thread each, with their
nannies) on 127.0.0.1, and one Prefect API, then runs the same tiny study K times in a
row against the scheduler by address (`execution.dask.address`), each as
`python -m flows.cli run FILE --output DIR --no-progress` into a folder of its own (the
command uses the API it finds in PREFECT_API_URL). Before the first study and after
each one it prints the resident memory of the scheduler, of each worker process (under
its nanny) and of the Prefect API, and the model processes (`simstudy.run.runners._child`)
and any other processes left under each worker, so growth from study to study shows.
The cluster gets the quiet settings of the local cluster `simstudy run` starts (as
`DASK_` variables; `--stock-dask-config` for distributed's defaults). Everything it
started is stopped at the end, however the run ends.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil

REPOSITORY = Path(__file__).resolve().parents[1]
WORKERS = 2
START_TIMEOUT_SECONDS = 60.0
STOP_TIMEOUT_SECONDS = 10.0
STUDY_TIMEOUT_SECONDS = 300.0
MODEL_PROCESS = "simstudy.run.runners._child"


def dask_command() -> list[str]:
    """Return the `dask` command line interface of this Python."""
    script = Path(sys.executable).with_name("dask")
    return [str(script)] if script.exists() else [sys.executable, "-m", "dask"]


def cluster_environment(stock: bool) -> dict[str, str]:
    """Return the environment of the cluster processes and the studies."""
    environment = dict(os.environ)
    # The workers import the study's model (benchmarks.burn) and simstudy's tasks.
    path = environment.get("PYTHONPATH")
    environment["PYTHONPATH"] = f"{REPOSITORY}{os.pathsep}{path}" if path else str(REPOSITORY)
    if not stock:
        from flows.cluster import QUIET_CLUSTER_CONFIG

        for key, value in QUIET_CLUSTER_CONFIG.items():
            name = "DASK_" + "__".join(part.upper() for part in key.split("."))
            environment[name.replace("-", "_")] = str(value)
    return environment


def mib(process: psutil.Process) -> float:
    """Return a process's resident memory in MiB (0 if it is gone)."""
    try:
        return process.memory_info().rss / 2**20
    except psutil.Error:
        return 0.0


def command_line(process: psutil.Process) -> str:
    """Return a process's command line ('' if it is gone)."""
    try:
        return " ".join(process.cmdline())
    except psutil.Error:
        return ""


def worker_process(nanny: psutil.Process) -> psutil.Process | None:
    """Return the Dask worker process a nanny (the `dask worker` process) runs."""
    with contextlib.suppress(psutil.Error):
        for child in nanny.children():
            if "spawn_main" in command_line(child):
                return child
    return None


def snapshot(
    scheduler: psutil.Process, nannies: list[psutil.Process], api: psutil.Process | None
) -> str:
    """Return one line: scheduler, each worker with what runs under it, the API."""
    parts = [f"scheduler {mib(scheduler):6.1f}"]
    for i, nanny in enumerate(nannies):
        worker = worker_process(nanny)
        if worker is None:
            parts.append(f"w{i} (no worker process)")
            continue
        try:
            below = worker.children(recursive=True)
        except psutil.Error:
            below = []
        models = [p for p in below if MODEL_PROCESS in command_line(p)]
        others = len(below) - len(models)
        parts.append(
            f"w{i} {mib(worker):6.1f} (nanny {mib(nanny):5.1f}), "
            f"{len(models)} model procs {sum(mib(p) for p in models):6.1f}, {others} other"
        )
    if api is not None:
        parts.append(f"api {mib(api):6.1f}")
    return " | ".join(parts)


def wait_for_address(scheduler_file: Path, process: subprocess.Popen[bytes]) -> str:
    """Return the scheduler's address once it has written its scheduler file."""
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"dask scheduler exited with code {process.returncode}")
        with contextlib.suppress(OSError, ValueError, KeyError):
            return str(json.loads(scheduler_file.read_text())["address"])
        time.sleep(0.2)
    raise RuntimeError(f"dask scheduler wrote no {scheduler_file} in {START_TIMEOUT_SECONDS} s")


def wait_for_workers(address: str, count: int) -> None:
    """Return once `count` workers are connected to the scheduler."""
    from distributed import Client

    with Client(address, timeout=START_TIMEOUT_SECONDS) as client:
        client.wait_for_workers(count, timeout=START_TIMEOUT_SECONDS)


def stop(processes: list[subprocess.Popen[bytes]]) -> None:
    """Stop these processes and everything under them: SIGTERM, then SIGKILL."""
    descendants: list[psutil.Process] = []
    for process in processes:
        with contextlib.suppress(psutil.Error):
            descendants.extend(psutil.Process(process.pid).children(recursive=True))
    for process in processes:
        if process.poll() is None:
            process.terminate()
    deadline = time.monotonic() + STOP_TIMEOUT_SECONDS
    for process in processes:
        try:
            process.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    _, alive = psutil.wait_procs(descendants, timeout=max(0.0, deadline - time.monotonic()))
    for process in alive:
        with contextlib.suppress(psutil.Error):
            process.kill()


@contextlib.contextmanager
def dask_cluster(folder: Path, environment: dict[str, str]) -> Iterator[tuple[str, list[Any]]]:
    """Yield the scheduler's address and the scheduler and worker processes; stop them."""
    dask = dask_command()
    scheduler_file = folder / "scheduler.json"
    logs = folder / "logs"
    logs.mkdir()
    started: list[subprocess.Popen[bytes]] = []

    def start(name: str, arguments: list[str]) -> subprocess.Popen[bytes]:
        with open(logs / f"{name}.log", "wb") as log:
            process = subprocess.Popen(
                [*dask, *arguments],
                cwd=REPOSITORY,
                env=environment,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        started.append(process)
        return process

    try:
        scheduler = start(
            "scheduler",
            ["scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard"]
            + ["--scheduler-file", str(scheduler_file)],
        )
        address = wait_for_address(scheduler_file, scheduler)
        for i in range(WORKERS):
            start(
                f"worker-{i}",
                ["worker", address, "--name", f"w{i}", "--nthreads", "1", "--nworkers", "1"]
                + ["--host", "127.0.0.1", "--no-dashboard"],
            )
        wait_for_workers(address, WORKERS)
        yield address, started
    finally:
        stop(started[1:])  # workers first, so that they do not try to reconnect
        stop(started[:1])


def study_file(folder: Path, address: str, args: argparse.Namespace) -> Path:
    """Write the tiny study, run against the scheduler at `address`."""
    fixed: dict[str, Any] = {"cost_ms": args.cost_ms}
    if args.series:
        fixed["series"] = args.series
    study = {
        "name": "long-lived",
        "model": "benchmarks.burn:simulate",
        "fixed": fixed,
        "parameters": {"grid": {"set": list(range(args.sets))}},
        "replicates": args.replicates,
        "seed": 1,
        "execution": {"runner": args.runner, "dask": {"address": address}},
        "output": str(folder / "unused"),
    }
    path = folder / "study.json"
    path.write_text(json.dumps(study, indent=2))
    return path


def run_study(path: Path, output: Path, environment: dict[str, str]) -> tuple[int, float, str]:
    """Run one study through the command line; return exit code, wall seconds, its output."""
    started = time.monotonic()
    try:
        finished = subprocess.run(
            [sys.executable, "-m", "flows.cli", "run", str(path), "--output", str(output)]
            + ["--no-progress"],
            cwd=REPOSITORY,
            env=environment,
            capture_output=True,
            text=True,
            timeout=STUDY_TIMEOUT_SECONDS,
        )
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout if isinstance(exc.stdout, str) else ""
        return -1, time.monotonic() - started, out + f"\ntimed out after {exc.timeout} s"
    return finished.returncode, time.monotonic() - started, finished.stdout + finished.stderr


def main() -> None:
    """Run the studies and print the memory and processes after each."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--studies", type=int, default=20, help="studies to run in a row")
    parser.add_argument("--sets", type=int, default=2)
    parser.add_argument("--replicates", type=int, default=20)
    parser.add_argument("--cost-ms", type=float, default=10.0, help="model CPU time")
    parser.add_argument("--runner", default="process", choices=("process", "thread"))
    parser.add_argument("--series", type=int, default=0, help="points of a series output")
    parser.add_argument(
        "--stock-dask-config",
        action="store_true",
        help="the cluster at distributed's defaults instead of simstudy's quiet settings",
    )
    args = parser.parse_args()

    from flows.api import prefect_api

    folder = Path(tempfile.mkdtemp(prefix="simstudy-long-lived-"))
    try:
        with prefect_api() as api_url:
            # prefect_api() put the API's URL (and its CA bundle) in os.environ.
            environment = cluster_environment(args.stock_dask_config)
            with dask_cluster(folder, environment) as (address, processes):
                me = psutil.Process()
                api = next(
                    (p for p in me.children() if "uvicorn" in command_line(p)),
                    None,
                )
                scheduler = psutil.Process(processes[0].pid)
                nannies = [psutil.Process(p.pid) for p in processes[1:]]
                path = study_file(folder, address, args)
                print(
                    f"scheduler {address}, {WORKERS} workers x 1 thread, Prefect API {api_url}; "
                    f"each study {args.sets} x {args.replicates} replicates of "
                    f"{args.cost_ms:g} ms, {args.runner} runner; RSS in MiB",
                    flush=True,
                )
                print(f"before      | {snapshot(scheduler, nannies, api)}", flush=True)
                failed = 0
                for k in range(1, args.studies + 1):
                    code, wall, output = run_study(path, folder / f"out-{k}", environment)
                    status = "ok" if code == 0 else f"exit {code}"
                    line = f"study {k:3d} {wall:5.1f} s {status} | "
                    print(line + snapshot(scheduler, nannies, api), flush=True)
                    if code != 0:
                        failed += 1
                        print("  " + "\n  ".join(output.strip().splitlines()[-15:]), flush=True)
                    shutil.rmtree(folder / f"out-{k}", ignore_errors=True)
                print(f"{args.studies - failed} of {args.studies} studies succeeded")
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
