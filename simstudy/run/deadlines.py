"""Deadlines for calls that could otherwise wait forever (the cluster, name resolution).

A worker that is stopped (SIGSTOP) or whose task holds the GIL answers no RPC, and
distributed's calls to it (`Client.run`, `register_plugin`, `call_stack`, ...) wait
without a timeout unless given one. Every call the flow makes to the cluster while a
study runs goes through a deadline: `callback_timeout=` where distributed takes one,
`call_with_deadline` where it does not.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar, cast

if TYPE_CHECKING:
    from simstudy.spec.study import Execution

T = TypeVar("T")

CLUSTER_ANSWER_SECONDS = 30.0
"""Deadline of each question to the scheduler and the workers before and after a study."""


def call_with_deadline(function: Callable[[], T], seconds: float) -> T:
    """Return `function()`, or raise TimeoutError if it has not returned within `seconds`.

    A call stuck on a worker that cannot answer is left behind in its daemon thread
    instead of freezing the study.
    """
    outcome: dict[str, Any] = {}

    def call() -> None:
        try:
            outcome["value"] = function()
        except BaseException as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=call, name="simstudy-deadline-call", daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        raise TimeoutError(f"no answer within {seconds:g} s")
    if "error" in outcome:
        raise outcome["error"]
    return cast(T, outcome["value"])


RESULT_FETCH_SECONDS = 60.0
"""Longest wait for a finished task's result (Dask already said it is done): a large one
takes a moment; a worker that holds it and cannot answer makes it a failed run."""
SUMMARY_SECONDS = 60.0
"""Deadline of the study summary task; past it the flow summarises by itself."""


@dataclass(frozen=True)
class Deadlines:
    """Every wait of a study run, derived once from its `Execution` (`Deadlines.of`)."""

    stall: float
    """Nothing finished for this long: a stall (`Execution.stall_timeout`)."""
    result_fetch: float
    """A finished task's result, at most RESULT_FETCH_SECONDS and never past the stall
    timeout: a result held by a worker stopped just after its run had blocked the stall
    watch for 60 s with a 10 s stall timeout. Its records streamed in count; the rest
    runs again."""
    summary: float
    """The study summary task."""
    cluster_answer: float
    """One question to the scheduler or the workers before and after a study."""

    @classmethod
    def of(cls, execution: Execution) -> Deadlines:
        """Return the deadlines of a study run with these execution settings."""
        stall = execution.stall_timeout()
        return cls(
            stall=stall,
            result_fetch=min(RESULT_FETCH_SECONDS, stall),
            summary=SUMMARY_SECONDS,
            cluster_answer=CLUSTER_ANSWER_SECONDS,
        )
