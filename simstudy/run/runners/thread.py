"""Thread runner: calls the model in the calling thread. Fast; cannot enforce a timeout."""

from __future__ import annotations

import time
from typing import Any

from simstudy.run.records import AttemptResult, OutputError, normalize_outputs
from simstudy.run.runners.base import load_callable, short_traceback


class ThreadRunner:
    """Run the model in-process; `timeout_seconds` is ignored (a Python thread cannot be killed)."""

    def __init__(self, model_ref: str):
        self.model_ref = model_ref
        self._model = load_callable(model_ref)

    def attempt(
        self, params: dict[str, Any], seed: int, timeout_seconds: float, log_name: str
    ) -> AttemptResult:
        """Call the model once and return its outputs or its error."""
        started = time.perf_counter()
        try:
            outputs = normalize_outputs(self._model(dict(params), seed))
        except OutputError as exc:
            return _failed(str(exc), started)
        except BaseException as exc:
            # Anything a model raises is its replicate's failure: KeyboardInterrupt,
            # GeneratorExit, asyncio.CancelledError or a custom BaseException escaping into
            # Dask's or Prefect's machinery would kill the worker or leave the task unfinished.
            return _failed(short_traceback(exc), started)
        return AttemptResult(status="ok", outputs=outputs, duration_s=time.perf_counter() - started)

    def close(self) -> None:
        """Nothing to release."""


def _failed(message: str, started: float) -> AttemptResult:
    return AttemptResult(status="failed", error=message, duration_s=time.perf_counter() - started)
