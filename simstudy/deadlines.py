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
from typing import Any, TypeVar, cast

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
