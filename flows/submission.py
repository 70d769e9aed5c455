"""Submit Prefect tasks to a started DaskTaskRunner without Dask hashing their arguments.

`DaskTaskRunner.submit` calls `Client.submit` with `pure=True`, so Dask tokenises every
argument (pickling what it cannot hash: the study, the batches, the Prefect context) to
name a task that has a unique task run id anyway. Measured on 1,000 sets x 4 replicates:
tokenising was a seventh of the flow process's CPU. This is the same submission with a
random key (`pure=False`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast
from uuid import UUID

import distributed
from prefect import Task
from prefect_dask import DaskTaskRunner
from prefect_dask.task_runners import PrefectDaskFuture


def submit_task(
    runner: DaskTaskRunner, task: Task[..., Any], parameters: dict[str, Any]
) -> PrefectDaskFuture[Any]:
    """Submit one task run with these parameters (values: nothing to wait for)."""
    future = runner.client.submit(
        task,
        parameters=runner._optimize_futures(parameters),
        return_type="state",
        pure=False,
    )
    return cast(
        PrefectDaskFuture[Any],
        PrefectDaskFuture(wrapped_future=future, task_run_id=future.task_run_id),
    )


@dataclass
class PlainFuture:
    """A function run as a plain Dask task, shaped as the orchestrator uses a Prefect future."""

    wrapped_future: distributed.Future
    task_run_id: UUID | None = None  # no Prefect task run

    def result(self, timeout: float | None = None) -> Any:
        """Return the function's result; raise its error, or TimeoutError past `timeout`."""
        return self.wrapped_future.result(timeout=timeout)


def submit_plain(
    client: distributed.Client, function: Callable[..., Any], parameters: dict[str, Any]
) -> PlainFuture:
    """Submit `function(**parameters)` as a plain Dask task (a random key, as above)."""
    return PlainFuture(client.submit(function, **parameters, pure=False))
