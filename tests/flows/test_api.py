"""The local Prefect API: one server, and cheap TLS contexts for its http clients."""

from __future__ import annotations

import os
import signal
import ssl
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from prefect.settings import (
    PREFECT_API_SSL_CERT_FILE,
    PREFECT_API_URL,
    PREFECT_FLOWS_HEARTBEAT_FREQUENCY,
)

from flows.api import write_one_certificate_bundle

REPO = Path(__file__).parents[2]

# Start the local API, print its private folder and the server's pid, then end as the
# first argument says: leave the block normally, be SIGKILLed inside it, or fail while the
# server starts (the work that overlaps its start raises).
API_USER = """
import os, signal, sys
from pathlib import Path
from flows.api import prefect_api

def fail_to_import():
    raise ImportError("the flow cannot be imported")

with prefect_api(while_starting=fail_to_import if sys.argv[1] == "fail" else None):
    folder = Path(os.environ["PREFECT_API_SSL_CERT_FILE"]).parent
    print(folder, oct(folder.stat().st_mode & 0o777), sorted(os.listdir(folder)), flush=True)
    if sys.argv[1] == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
"""


def test_one_certificate_bundle_loads_as_a_ca_file(tmp_path: Path) -> None:
    bundle = write_one_certificate_bundle(tmp_path / "ca.pem")
    text = bundle.read_text()
    assert text.count("BEGIN CERTIFICATE") == 1
    assert text.rstrip().endswith("-----END CERTIFICATE-----")
    context = ssl.create_default_context(cafile=str(bundle))
    assert context.cert_store_stats()["x509_ca"] == 1


def test_local_api_points_prefect_clients_at_the_small_bundle(prefect_api_url: str) -> None:
    assert prefect_api_url.startswith("http://127.0.0.1:")
    assert os.environ["PREFECT_API_URL"] == PREFECT_API_URL.value() == prefect_api_url
    bundle = os.environ["PREFECT_API_SSL_CERT_FILE"]
    assert PREFECT_API_SSL_CERT_FILE.value() == bundle
    assert Path(bundle).read_text().count("BEGIN CERTIFICATE") == 1


def test_flow_runs_send_no_heartbeats_to_the_local_api(prefect_api_url: str) -> None:
    # Nothing watches heartbeats on an API that lives only as long as the run, and the
    # flow engine waits up to 1 s for its heartbeat thread at the end of each run.
    assert PREFECT_FLOWS_HEARTBEAT_FREQUENCY.value() is None


def run_api_user(tmp_path: Path, how: str) -> tuple[subprocess.CompletedProcess[str], Path]:
    """Run API_USER with its own TMPDIR; return the result and that TMPDIR."""
    temp = tmp_path / "tmp"
    temp.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    env.update(TMPDIR=str(temp), PREFECT_HOME=str(tmp_path / "home"), PYTHONPATH=str(REPO))
    done = subprocess.run(
        [sys.executable, "-c", API_USER, how],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    return done, temp


def wait_until_empty(folder: Path, seconds: float) -> float:
    """Return how long `folder` took to become empty; fail after `seconds`."""
    started = time.monotonic()
    while os.listdir(folder):
        assert time.monotonic() - started < seconds, f"left in {folder}: {os.listdir(folder)}"
        time.sleep(0.1)
    return time.monotonic() - started


@pytest.mark.slow
@pytest.mark.timeout(150)
def test_api_files_live_in_a_private_folder_removed_when_the_api_stops(tmp_path: Path) -> None:
    done, temp = run_api_user(tmp_path, "exit")
    assert done.returncode == 0, done.stderr[-2000:]
    folder, mode, names = done.stdout.split(maxsplit=2)
    assert Path(folder).parent == temp and Path(folder).name.startswith("simstudy-api-")
    assert mode == "0o700" and names.strip() == "['api.log', 'ca.pem']"
    assert os.listdir(temp) == []


@pytest.mark.slow
@pytest.mark.timeout(150)
def test_api_files_are_removed_when_the_flow_process_is_killed(tmp_path: Path) -> None:
    done, temp = run_api_user(tmp_path, "kill")
    assert done.returncode == -signal.SIGKILL
    # The server gets SIGTERM when its parent dies (PR_SET_PDEATHSIG) and removes them.
    seconds = wait_until_empty(temp, 30)
    print(f"private API folder removed {seconds:.1f} s after SIGKILL")
    folder = done.stdout.split()[0]
    server = [p for p in psutil.process_iter(["cmdline"]) if folder in (p.info["cmdline"] or [])]
    _, alive = psutil.wait_procs(server, timeout=10)
    assert not alive, f"API server still running: {alive}"


@pytest.mark.slow
@pytest.mark.timeout(150)
def test_a_failure_while_the_api_starts_stops_the_server(tmp_path: Path) -> None:
    done, temp = run_api_user(tmp_path, "fail")
    assert done.returncode == 1 and "the flow cannot be imported" in done.stderr
    assert os.listdir(temp) == []  # the private folder is gone
    server = [
        p
        for p in psutil.process_iter(["cmdline"])
        if str(temp) in " ".join(p.info["cmdline"] or [])
    ]
    assert not server, f"API server still running: {server}"
