"""One local Prefect API per study run, started once and always stopped.

Without an API URL, Prefect's ephemeral mode starts a temporary API server in every
process that reports a run, including every Dask worker (~230 MB and ~8 s each, all on
one SQLite file), and abrupt exits leave them running. `prefect_api()` starts exactly
one server, publishes its URL through PREFECT_API_URL (inherited by local Dask workers
and carried in the task context to remote ones) and stops it on exit; the server also
dies with this process if it is killed (PR_SET_PDEATHSIG, then at most
ORPHAN_EXIT_SECONDS even with requests in flight). Its log and CA bundle live in
a private folder (`tempfile.mkdtemp`: mode 0700, a name nobody can take first) that the
server removes when it ends, even when this process was killed, and this process removes
when it stops the server.

```python
>>> with prefect_api() as url:
...     ...  # run flows; url is e.g. http://127.0.0.1:41233/api
```
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import certifi

from simstudy.errors import SimstudyError
from simstudy.run.runners import reaper

STARTUP_TIMEOUT_SECONDS = 90.0
LOG_TAIL_BYTES = 2000

GRACEFUL_SHUTDOWN_SECONDS = 3
"""Time uvicorn gives requests in flight when it stops (unbounded at its default)."""
ORPHAN_EXIT_SECONDS = 8.0
"""Time the server has to stop by itself once the flow process died, before it exits hard."""

# Runs uvicorn, then removes the API's private folder however the server ends: also
# after the SIGTERM that PR_SET_PDEATHSIG sends when the flow process is killed, when
# nothing in the flow process is left to clean up. uvicorn re-raises a SIGTERM it caught
# once it has shut down; with the default handler that would end the process before
# `finally`, so SIGTERM raises SystemExit instead. Nobody is left to escalate to SIGKILL
# once the flow process is dead, and uvicorn's lifespan shutdown has no deadline of its
# own: a thread waits for the flow process (its pidfd) and ends the server after
# ORPHAN_EXIT_SECONDS, whatever uvicorn is waiting for.
SERVE_THEN_REMOVE = """
import os, runpy, select, shutil, signal, sys, threading, time
folder, owner, grace = sys.argv.pop(1), int(sys.argv.pop(1)), float(sys.argv.pop(1))
def leave(signum, frame):
    raise SystemExit(128 + signum)
def exit_when_orphaned():
    try:
        owner_fd = os.pidfd_open(owner)
        if os.getppid() == owner:  # else the pid may be another process's already
            select.select([owner_fd], [], [])
    except OSError:  # no pidfds here: poll
        while os.getppid() == owner:
            time.sleep(0.5)
    time.sleep(grace)
    shutil.rmtree(folder, ignore_errors=True)
    os._exit(128 + signal.SIGTERM)
signal.signal(signal.SIGTERM, leave)
threading.Thread(target=exit_when_orphaned, daemon=True).start()
try:
    runpy.run_module("uvicorn", run_name="__main__", alter_sys=True)
finally:
    shutil.rmtree(folder, ignore_errors=True)
"""


class ApiStartError(SimstudyError, RuntimeError):
    """The Prefect API cannot be started or reached: exit code 3, the environment."""

    exit_code = 3


def free_port() -> int:
    """Return a free TCP port on 127.0.0.1."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _die_with_parent() -> None:
    # Runs in the child between fork and exec: SIGTERM it when our process dies, so a
    # killed `simstudy run` never leaves an API server behind.
    reaper.parent_death_signal(signal.SIGTERM)


def start_api_server(
    port: int, log_path: Path, remove_on_exit: Path | None = None
) -> subprocess.Popen[bytes]:
    """Start a Prefect API server (no UI) on 127.0.0.1:port; it removes `remove_on_exit`."""
    spec = importlib.util.find_spec("prefect")
    assert spec is not None and spec.origin is not None, "prefect is not installed"
    env = {
        **os.environ,
        "PREFECT_UI_ENABLED": "0",
        "PREFECT__SERVER_EPHEMERAL": "1",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    }
    env.pop("PREFECT_API_URL", None)
    uvicorn = [
        "--app-dir", str(Path(spec.origin).parent.parent),
        "--factory", "prefect.server.api.server:create_app",
        "--host", "127.0.0.1", "--port", str(port),
        "--log-level", "error", "--lifespan", "on",
        "--timeout-graceful-shutdown", str(GRACEFUL_SHUTDOWN_SECONDS),
    ]  # fmt: skip
    if remove_on_exit is None:
        command = [sys.executable, "-m", "uvicorn", *uvicorn]
    else:
        command = [
            sys.executable, "-c", SERVE_THEN_REMOVE,
            str(remove_on_exit), str(os.getpid()), str(ORPHAN_EXIT_SECONDS), *uvicorn,
        ]  # fmt: skip
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        return subprocess.Popen(
            command,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )


def wait_healthy(url: str, process: subprocess.Popen[bytes], timeout: float) -> None:
    """Wait until GET {url}/health answers 200, or raise `ApiStartError`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise ApiStartError(f"Prefect API server exited with code {process.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.2)
    raise ApiStartError(f"Prefect API at {url} not healthy after {timeout:.0f} s")


def stop_api_server(process: subprocess.Popen[bytes]) -> None:
    """Stop the server and everything in its process group, at once.

    Called once the run is over and its logs are sent: nothing is left for a graceful
    shutdown to finish, which took uvicorn ~1.1 s (stopping Prefect's services) at the end
    of every command. SQLite keeps every committed write when its process is killed.
    """
    with suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def write_one_certificate_bundle(path: Path) -> Path:
    """Write the first certificate of certifi's CA bundle to `path` and return it.

    Prefect builds a TLS context for every API client it makes, loading the whole CA
    bundle each time (~16 ms, three clients per task run on a Dask worker: about half of a
    task run's cost there). The local API speaks plain http, so no certificate is ever
    checked; a one-certificate bundle makes those contexts nearly free.
    """
    bundle = Path(certifi.where()).read_text()
    end = "-----END CERTIFICATE-----\n"
    start = bundle.index("-----BEGIN CERTIFICATE-----")
    path.write_text(bundle[start : bundle.index(end, start) + len(end)])
    return path


@contextmanager
def prefect_api(
    log_path: Path | None = None, while_starting: Callable[[], None] | None = None
) -> Iterator[str]:
    """Yield the Prefect API URL: PREFECT_API_URL when set, else a server started here.

    `while_starting` is called once the server process is started, before waiting for it:
    the server takes seconds to import and start, and work of this process (its own
    imports of Prefect and the flow) overlaps with that instead of following it.
    """
    existing = os.environ.get("PREFECT_API_URL")
    if existing:
        if while_starting is not None:
            while_starting()
        yield existing
        return
    private = Path(tempfile.mkdtemp(prefix="simstudy-api-"))
    try:
        with _local_api(private, log_path or private / "api.log", while_starting) as url:
            yield url
    finally:
        shutil.rmtree(private, ignore_errors=True)


@contextmanager
def _local_api(
    private: Path, log_path: Path, while_starting: Callable[[], None] | None
) -> Iterator[str]:
    port = free_port()
    url = f"http://127.0.0.1:{port}/api"
    certificates = write_one_certificate_bundle(private / "ca.pem")
    environment = {"PREFECT_API_URL": url, "PREFECT_API_SSL_CERT_FILE": str(certificates)}
    saved_environment = {name: os.environ.get(name) for name in environment}
    process = start_api_server(port, log_path, remove_on_exit=private)
    try:
        if while_starting is not None:
            while_starting()
        # Prefect is imported only now (by `while_starting`, or here): after the server
        # process started, so that the two overlap.
        from prefect.settings import (
            PREFECT_API_SSL_CERT_FILE,
            PREFECT_API_URL,
            PREFECT_FLOWS_HEARTBEAT_FREQUENCY,
            temporary_settings,
        )

        try:
            wait_healthy(url, process, STARTUP_TIMEOUT_SECONDS)
        except ApiStartError as exc:
            # The log goes with the private folder: keep its end in the error.
            raise ApiStartError(f"{exc}; server log ends:\n{log_tail(log_path)}") from exc
        # The environment reaches local Dask workers; the settings context reaches this
        # process even when Prefect was imported (and its settings read) before.
        os.environ.update(environment)
        with temporary_settings(
            updates={
                PREFECT_API_URL: url,
                PREFECT_API_SSL_CERT_FILE: str(certificates),
                # Heartbeats let a long-lived server notice crashed flow runs; this API
                # lives and dies with the run. And the flow engine waits up to 1 s for
                # its heartbeat thread at the end of every run.
                PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None,
            }
        ):
            yield url
    finally:
        for name, value in saved_environment.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        # Send the logs still queued for the API before the API goes away.
        if "prefect.logging.handlers" in sys.modules:  # else nothing was ever logged to it
            sys.modules["prefect.logging.handlers"].APILogWorker.drain_all(timeout=5)
        stop_api_server(process)


def log_tail(path: Path) -> str:
    """Return the last LOG_TAIL_BYTES of a log file (empty if it cannot be read)."""
    try:
        with path.open("rb") as log:
            log.seek(max(0, log.seek(0, os.SEEK_END) - LOG_TAIL_BYTES))
            return log.read().decode(errors="replace")
    except OSError:
        return ""
