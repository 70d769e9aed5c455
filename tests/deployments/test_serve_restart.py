"""Restarting deployments/serve.py leaves the deployments runnable (own server: the
other module's serve process must not pick the run up)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.deployments.conftest import Server, start_serve, stop
from tests.deployments.test_deployments import artifacts_of, flow_run_id

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


@pytest.mark.timeout(420)
def test_restarted_serve_runs_what_was_created_while_it_was_down(
    prefect_server: Server, tmp_path: Path
) -> None:
    log = tmp_path / "serve.log"
    first = start_serve(prefect_server, log)
    stop(first)  # SIGTERM, like a service manager
    created = prefect_server.prefect(
        "deployment", "run", "simulation-study/example",
        "--param", "replicates=2", "--param", f"output={tmp_path / 'late'}",
    )  # fmt: skip
    assert created.returncode == 0, created.stderr
    run_id = flow_run_id(created.stdout)
    second = start_serve(prefect_server, log)
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            state = artifacts_of(prefect_server, run_id)["state"]
            if state is not None and state.is_final():  # type: ignore[attr-defined]
                break
            time.sleep(2)
        assert state is not None and state.is_completed(), state  # type: ignore[attr-defined]
    finally:
        stop(second)
