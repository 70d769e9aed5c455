"""Serve the simulation-study deployments from this machine (no work pool needed).

    PREFECT_API_URL=http://127.0.0.1:4200/api python deployments/serve.py

Run it from the repository root (study paths such as examples/seir.yaml are relative to
the working directory). Stopping it (Ctrl-C, SIGTERM) does not pause the deployments,
and starting it again makes them runnable again, including runs created meanwhile.

What the runs may do is this process's run policy: SIMSTUDY_POLICY (a YAML or JSON
policy file, or the policy as JSON; see deployments/policy.example.yaml), else the
default, which allows the shipped example only (study and parameter files under
examples/, outputs under results/). It is checked here at start, so a
broken policy stops the serve process instead of failing every run.
"""

from __future__ import annotations

import os

# Pick up new runs within ~2 s instead of Prefect's default 10 s poll; set before Prefect
# reads its settings. An explicit PREFECT_RUNNER_POLL_FREQUENCY wins.
os.environ.setdefault("PREFECT_RUNNER_POLL_FREQUENCY", "2")

from prefect import serve  # noqa: E402
from prefect.deployments.runner import RunnerDeployment  # noqa: E402
from prefect.schedules import Cron  # noqa: E402

from flows.run_policy import POLICY_VARIABLE  # noqa: E402
from flows.study import simulation_study  # noqa: E402
from simstudy.spec.policy import RunPolicy, policy_from_setting  # noqa: E402

EXAMPLE_STUDY = "examples/seir.yaml"
CALIBRATE_STUDY = "examples/seir-calibrate.yaml"
NIGHTLY_CRON = "0 2 * * *"
TAGS = ["simstudy"]


def study_deployments() -> list[RunnerDeployment]:
    """Return the `example` and `calibrate` (manual) and `nightly` (02:00 UTC) deployments."""
    example = simulation_study.to_deployment(
        name="example",
        parameters={"study_path": EXAMPLE_STUDY},
        description="The example SEIR study (6 parameter sets x 50 replicates), on demand.",
        tags=TAGS,
        paused=False,
    )
    nightly = simulation_study.to_deployment(
        name="nightly",
        schedules=[Cron(NIGHTLY_CRON, timezone="UTC")],
        parameters={"study_path": EXAMPLE_STUDY},
        description="A study every night at 02:00 UTC; set study_path to your study file.",
        tags=TAGS,
        paused=False,
    )
    calibrate = simulation_study.to_deployment(
        name="calibrate",
        parameters={"study_path": CALIBRATE_STUDY},
        description="Sequential calibration of the SEIR model to observed incidence (Optuna, "
        "adaptive replicates), on demand.",
        tags=TAGS,
        paused=False,
    )
    return [example, nightly, calibrate]


def announce_policy() -> RunPolicy:
    """Read the run policy now (raising if it is broken) and print what it allows."""
    setting = os.environ.get(POLICY_VARIABLE)
    policy = policy_from_setting(setting) if setting else RunPolicy()
    inline = setting is not None and setting.lstrip().startswith("{")
    source = f"{POLICY_VARIABLE} as JSON" if inline else setting or "the default"
    print(f"run policy ({source}): {policy.model_dump_json()}", flush=True)
    return policy


if __name__ == "__main__":
    announce_policy()
    # pause_on_shutdown=False: a restarted server must find its deployments runnable.
    serve(*study_deployments(), pause_on_shutdown=False)
