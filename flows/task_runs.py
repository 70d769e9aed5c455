"""Leave no task run of a finished study RUNNING in the Prefect API.

A task run whose work was abandoned (a stalled replicate in a thread that cannot be
interrupted, a worker that died while Prefect thought the run was going) stays RUNNING
in the API forever unless someone sets a final state; the study does that when it ends.
"""

from __future__ import annotations

from uuid import UUID

from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    FlowRunFilter,
    FlowRunFilterId,
    TaskRunFilter,
    TaskRunFilterState,
    TaskRunFilterStateType,
)
from prefect.client.schemas.objects import StateType
from prefect.states import Crashed

UNFINISHED = [StateType.RUNNING, StateType.PENDING, StateType.SCHEDULED]


def crash_unfinished_task_runs(flow_run_id: UUID, reason: str) -> list[str]:
    """Set every unfinished task run of the flow run to Crashed; return their names."""
    with get_client(sync_client=True) as client:
        task_runs = client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])),
            task_run_filter=TaskRunFilter(
                state=TaskRunFilterState(type=TaskRunFilterStateType(any_=UNFINISHED))
            ),
        )
        for task_run in task_runs:
            client.set_task_run_state(task_run.id, Crashed(message=reason), force=True)
    return [task_run.name for task_run in task_runs]
