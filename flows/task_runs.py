"""The study's runs in the Prefect API: a tagged flow run, no task run left RUNNING.

The study tag goes on the flow run, not on task runs: Prefect checks tag concurrency
limits with a database write on the API for every tagged task run, and with SQLite that
stalled task-run starts by 2-5 s while other writes held the lock (measured).

A task run whose work was abandoned (a stalled replicate in a thread that cannot be
interrupted, a worker that died while Prefect thought the run was going) stays RUNNING
in the API forever unless someone sets a final state; the study does that when it ends.
"""

from __future__ import annotations

from uuid import UUID

from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    TaskRunFilter,
    TaskRunFilterId,
    TaskRunFilterState,
    TaskRunFilterStateType,
)
from prefect.client.schemas.objects import StateType
from prefect.states import Crashed

UNFINISHED = [StateType.RUNNING, StateType.PENDING, StateType.SCHEDULED]


def study_tag(study_name: str) -> str:
    """Return the tag that marks a study's flow runs."""
    return f"study:{study_name}"


def tag_flow_run(flow_run_id: UUID, tag: str) -> None:
    """Add a tag to a flow run (keeping the ones it has)."""
    with get_client(sync_client=True) as client:
        current = client.read_flow_run(flow_run_id).tags
        if tag not in current:
            client.update_flow_run(flow_run_id, tags=[*current, tag])


def crash_unfinished_task_runs(task_runs: dict[UUID, str], reason: str) -> list[str]:
    """Set those of these task runs that the API still sees unfinished to Crashed.

    Only task runs the study itself knows to be abandoned are given: task-run states reach
    the API asynchronously (as events), so a run that just completed on a worker can still
    read RUNNING there, and must not be crashed.
    """
    if not task_runs:
        return []
    with get_client(sync_client=True) as client:
        unfinished = client.read_task_runs(
            task_run_filter=TaskRunFilter(
                id=TaskRunFilterId(any_=list(task_runs)),
                state=TaskRunFilterState(type=TaskRunFilterStateType(any_=UNFINISHED)),
            ),
        )
        for task_run in unfinished:
            client.set_task_run_state(task_run.id, Crashed(message=reason), force=True)
    return [task_runs[task_run.id] for task_run in unfinished]
