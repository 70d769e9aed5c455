"""Serve the simulation-study deployments from this machine (no work pool needed).

    PREFECT_API_URL=http://127.0.0.1:4200/api python deployments/serve.py

Run it from the repository root (study paths such as examples/seir.yaml are relative to
the working directory). Stopping it (Ctrl-C, SIGTERM) does not pause the deployments,
and starting it again makes them runnable again, including runs created meanwhile.
"""

from __future__ import annotations

import os

# Pick up new runs within ~2 s instead of Prefect's default 10 s poll; set before Prefect
# reads its settings. An explicit PREFECT_RUNNER_POLL_FREQUENCY wins.
os.environ.setdefault("PREFECT_RUNNER_POLL_FREQUENCY", "2")

from prefect import serve  # noqa: E402
from prefect.deployments.runner import RunnerDeployment  # noqa: E402
from prefect.schedules import Cron  # noqa: E402

from flows.study import simulation_study  # noqa: E402

EXAMPLE_STUDY = "examples/seir.yaml"
NIGHTLY_CRON = "0 2 * * *"
TAGS = ["simstudy"]


def study_deployments() -> list[RunnerDeployment]:
    """Return the `example` (manual) and `nightly` (02:00 UTC) deployments."""
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
    return [example, nightly]


if __name__ == "__main__":
    # pause_on_shutdown=False: a restarted server must find its deployments runnable.
    serve(*study_deployments(), pause_on_shutdown=False)
