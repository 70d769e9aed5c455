"""Deployments on a real Prefect server: served, triggered, watched, scheduled, restarted,
refused what their policy does not allow, and closed to clients without the auth string."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from uuid import UUID

import pyarrow.parquet as pq
import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId
from prefect.settings import PREFECT_API_AUTH_STRING, PREFECT_API_URL, temporary_settings

from tests.deployments.conftest import REPO, Server

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def flow_run_id(output: str) -> UUID:
    """Return the flow run id printed by `prefect deployment run`."""
    for line in output.splitlines():
        if "UUID:" in line:
            return UUID(line.split("UUID:")[1].strip())
    raise AssertionError(f"no flow run id in:\n{output}")


def artifacts_of(server: Server, run_id: UUID) -> dict[str, object]:
    this_run = ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[run_id]))
    settings = {PREFECT_API_URL: server.api_url, PREFECT_API_AUTH_STRING: server.auth_string}
    with (
        temporary_settings(updates=settings),
        get_client(sync_client=True) as client,
    ):
        found = client.read_artifacts(artifact_filter=this_run)
        state = client.read_flow_run(run_id).state
    # By type (the test's own study has one of each), and by key (a calibration's flow run
    # also holds the artifacts of its best trials' study).
    return {"state": state, **{a.type: a for a in found}, **{a.key: a for a in found if a.key}}


@pytest.mark.timeout(300)
def test_example_deployment_run_with_watch(served: Server, tmp_path: Path) -> None:
    output = tmp_path / "example"
    started = time.monotonic()
    run = served.prefect(
        "deployment", "run", "simulation-study/example",
        "--param", "replicates=5", "--param", f"output={output}", "--watch",
        timeout=240,
    )  # fmt: skip
    seconds = time.monotonic() - started
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    print(f"5-replicate deployment run with --watch: {seconds:.1f} s")
    found = artifacts_of(served, flow_run_id(run.stdout))
    assert found["state"].is_completed()  # type: ignore[attr-defined]
    assert found["progress"].data == 100.0  # type: ignore[attr-defined]
    summary = found["markdown"].data  # type: ignore[attr-defined]
    assert "| ok | 30 |" in summary and str(output) in summary
    table = found["table"].data  # type: ignore[attr-defined]
    assert table.count('"status": "ok"') == 6
    assert pq.read_table(output / "replicates.parquet").num_rows == 30


@pytest.mark.timeout(300)
def test_failing_study_makes_watch_fail_and_names_the_error(served: Server, tmp_path: Path) -> None:
    run = served.prefect(
        "deployment", "run", "simulation-study/example",
        "--param", f"study_path={REPO / 'tests/support/failing.yaml'}",
        "--param", f"output={tmp_path / 'failing'}", "--watch",
        timeout=240,
    )  # fmt: skip
    assert run.returncode != 0
    found = artifacts_of(served, flow_run_id(run.stdout))
    assert found["state"].is_failed()  # type: ignore[attr-defined]
    summary = found["markdown"].data  # type: ignore[attr-defined]
    assert "Failed parameter sets" in summary
    assert "RuntimeError: model failed on purpose" in summary


@pytest.mark.timeout(400)
def test_calibrate_deployment_runs_the_calibration_example(served: Server, tmp_path: Path) -> None:
    output = tmp_path / "calibrate"
    run = served.prefect(
        "deployment", "run", "simulation-study/calibrate", "--param", f"output={output}",
        "--watch", timeout=360,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    found = artifacts_of(served, flow_run_id(run.stdout))
    assert found["state"].is_completed()  # type: ignore[attr-defined]
    assert found["seir-calibrate-calibration-progress"].data == 100.0  # type: ignore[attr-defined]
    assert '"rank": "1"' in found["seir-calibrate-best-trials"].data  # type: ignore[attr-defined]
    trials = pq.read_table(output / "trials.parquet").to_pylist()
    assert len(trials) == 64 and all(t["state"] == "complete" for t in trials)


@pytest.mark.timeout(120)
def test_nightly_deployment_has_its_cron_schedule(served: Server) -> None:
    shown = served.prefect("deployment", "inspect", "simulation-study/nightly")
    assert shown.returncode == 0, shown.stderr
    assert "0 2 * * *" in shown.stdout and "UTC" in shown.stdout


@pytest.mark.timeout(300)
def test_prefect_deploy_all_from_the_repo_root(prefect_server: Server) -> None:
    pool = prefect_server.prefect(
        "work-pool", "create", "simstudy", "--type", "process",
        "--base-job-template", "deployments/process-pool.json",
    )  # fmt: skip
    assert pool.returncode == 0, pool.stdout + pool.stderr
    deployed = prefect_server.prefect(
        "--no-prompt", "deploy", "--all", "--prefect-file", "deployments/prefect.yaml"
    )
    assert deployed.returncode == 0, deployed.stdout[-3000:] + deployed.stderr[-3000:]
    shown = prefect_server.prefect("deployment", "inspect", "simulation-study/nightly")
    assert "0 2 * * *" in shown.stdout and "'work_pool_name': 'simstudy'" in shown.stdout
    # The pool's template lets no flow run choose the program, environment or folder.
    for variable in ('command="sh -c id"', 'env={"SIMSTUDY_POLICY": "{}"}', "working_dir=/"):
        run = prefect_server.prefect(
            "deployment", "run", "simulation-study/nightly", "--job-variable", variable
        )
        assert run.returncode != 0, run.stdout[-2000:]
        said = " ".join((run.stdout + run.stderr).split())  # the CLI wraps long lines
        assert "Additional properties are not allowed" in said, said
        assert f"'{variable.split('=')[0]}' was unexpected" in said


@pytest.mark.timeout(200)
def test_inline_study_running_a_shell_is_refused_and_writes_nothing(
    served: Server, tmp_path: Path
) -> None:
    pwned = tmp_path / "pwned.txt"
    study = {
        "name": "pwn",
        "model": {"command": ["sh", "-c", f"id > {pwned}"]},
        "parameters": {"grid": {"a": [1]}},
        "replicates": 1,
        "seed": 1,
    }
    started = time.monotonic()
    run = served.prefect(
        "deployment", "run", "simulation-study/example",
        "--param", "study_path=null", "--param", f"study={json.dumps(study)}", "--watch",
        timeout=180,
    )  # fmt: skip
    print(f"refused inline study: {time.monotonic() - started:.1f} s")
    assert run.returncode != 0, run.stdout[-3000:]
    state = artifacts_of(served, flow_run_id(run.stdout))["state"]
    assert state.is_failed()  # type: ignore[attr-defined]
    assert "refused by the run policy" in state.message  # type: ignore[attr-defined]
    assert "allow_inline_study" in state.message  # type: ignore[attr-defined]
    assert not pwned.exists() and not (REPO / "results" / "pwn").exists()


@pytest.mark.timeout(200)
def test_parameter_file_outside_the_allowed_folders_is_refused_unread(
    served: Server, tmp_path: Path
) -> None:
    study_file = tmp_path / "passwd.yaml"
    study_file.write_text(
        "name: passwd\nmodel: simstudy.models.seir:simulate\n"
        "parameters: {file: /etc/passwd}\nreplicates: 1\nseed: 1\n"
        f"output: {tmp_path / 'out'}\n"
    )
    run = served.prefect(
        "deployment", "run", "simulation-study/example",
        "--param", f"study_path={study_file}", "--watch",
        timeout=180,
    )  # fmt: skip
    assert run.returncode != 0, run.stdout[-3000:]
    state = artifacts_of(served, flow_run_id(run.stdout))["state"]
    message = state.message  # type: ignore[attr-defined]
    assert "parameter_roots: parameters.file /etc/passwd is outside" in message
    assert "root:" not in message and "root:" not in run.stdout
    assert not (tmp_path / "out").exists()


@pytest.mark.timeout(200)
def test_a_secrets_file_given_as_study_path_fails_without_showing_its_values(
    served: Server, tmp_path: Path
) -> None:
    secrets = tmp_path / "secrets.json"
    secrets.write_text(json.dumps({"db_password": "hunter2", "name": "x" * 5000}))
    run = served.prefect(
        "deployment", "run", "simulation-study/example",
        "--param", f"study_path={secrets}", "--watch",
        timeout=180,
    )  # fmt: skip
    assert run.returncode != 0, run.stdout[-3000:]
    message = artifacts_of(served, flow_run_id(run.stdout))["state"].message  # type: ignore[attr-defined]
    assert "db_password: Extra inputs are not permitted" in message
    assert "hunter2" not in message and "hunter2" not in run.stdout
    assert "x" * 100 not in message and "(5,002 characters)" in message


@pytest.mark.timeout(120)
def test_clients_without_the_auth_string_are_refused(prefect_server: Server) -> None:
    anonymous = {k: v for k, v in prefect_server.env.items() if k != "PREFECT_API_AUTH_STRING"}
    for env in (anonymous, {**anonymous, "PREFECT_API_AUTH_STRING": "simstudy:wrong"}):
        listed = subprocess.run(
            [sys.executable, "-m", "prefect", "deployment", "ls"],
            cwd=REPO, env=env, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert listed.returncode != 0
        assert "401" in listed.stdout + listed.stderr
    allowed = prefect_server.prefect("deployment", "ls")
    assert allowed.returncode == 0, allowed.stderr[-2000:]
