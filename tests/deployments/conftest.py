"""A real `prefect server` (API auth on) and the served deployments, on 127.0.0.1.

The server requires PREFECT_SERVER_API_AUTH_STRING; `Server.env` carries the matching
PREFECT_API_AUTH_STRING for clients, and a SIMSTUDY_POLICY that lets served runs use the
test models and write under pytest's temporary folder.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from flows.api import free_port

REPO = Path(__file__).parents[2]


def wait_for(check, seconds: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except Exception:
            pass
        time.sleep(0.5)
    pytest.fail(f"{what} not ready after {seconds:.0f} s")


def stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM a process started in its own session, then SIGKILL what is left of its group."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)


def served_policy(temp_root: Path) -> dict[str, object]:
    """Return the run policy of served test runs: test models, outputs under temp_root."""
    return {
        "models": ["simstudy.models.seir:simulate", "tests.support.faulty:*"],
        "study_roots": [str(REPO), str(temp_root)],
        "parameter_roots": [str(REPO)],
        "output_roots": [str(temp_root)],
    }


class Server:
    """A running `prefect server start` and the environment to talk to it."""

    def __init__(self, tmp: Path, temp_root: Path):
        self.port = free_port()
        self.api_url = f"http://127.0.0.1:{self.port}/api"
        self.auth_string = f"simstudy:{secrets.token_urlsafe(16)}"
        self.env = {
            **{k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"},
            "PREFECT_HOME": str(tmp / "prefect-home"),
            "PREFECT_API_URL": self.api_url,
            "PREFECT_API_AUTH_STRING": self.auth_string,
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PYTHONPATH": os.pathsep.join([str(REPO), *sys.path]),
            "SIMSTUDY_POLICY": json.dumps(served_policy(temp_root)),
        }
        self.log = (tmp / "server.log").open("wb")
        started = time.monotonic()
        server_env = {k: v for k, v in self.env.items() if k != "PREFECT_API_URL"}
        server_env["PREFECT_SERVER_API_AUTH_STRING"] = self.auth_string
        self.process = subprocess.Popen(
            [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1",
             "--port", str(self.port)],
            env=server_env, stdout=self.log, stderr=self.log, start_new_session=True,
        )  # fmt: skip
        wait_for(self.healthy, 90, "prefect server")
        self.start_seconds = time.monotonic() - started
        print(f"prefect server healthy after {self.start_seconds:.1f} s")

    def healthy(self) -> bool:
        with urllib.request.urlopen(f"{self.api_url}/health", timeout=2) as response:
            return bool(response.status == 200)

    def prefect(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "prefect", *args],
            cwd=REPO, env=self.env, capture_output=True, text=True, timeout=timeout,
        )  # fmt: skip

    def close(self) -> None:
        # The server runs in its own session: stop the whole group (uvicorn and services).
        try:
            os.killpg(self.process.pid, signal.SIGTERM)
            self.process.wait(30)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        self.log.close()


@pytest.fixture(scope="module")
def prefect_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = Server(tmp_path_factory.mktemp("prefect-server"), tmp_path_factory.getbasetemp())
    try:
        yield server
    finally:
        server.close()


def start_serve(server: Server, log: Path) -> subprocess.Popen[bytes]:
    """Start deployments/serve.py against the server; wait for its deployments."""
    handle = log.open("ab")
    process = subprocess.Popen(
        [sys.executable, "deployments/serve.py"], cwd=REPO, env=server.env,
        stdout=handle, stderr=handle, start_new_session=True,
    )  # fmt: skip
    handle.close()
    wait_for(
        lambda: (
            "example" in server.prefect("deployment", "ls").stdout
            and "Your deployments are being served" in log.read_text(errors="replace")
        ),
        120,
        "served deployments",
    )
    return process


@pytest.fixture(scope="module")
def served(prefect_server: Server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    process = start_serve(prefect_server, log)
    try:
        yield prefect_server
    finally:
        stop(process)
