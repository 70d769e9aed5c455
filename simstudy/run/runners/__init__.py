"""Runners: how one replicate of a model is executed (thread, process, subprocess)."""

from __future__ import annotations

from pathlib import Path

from simstudy.run.runners.base import Runner, run_replicate
from simstudy.run.runners.command import CommandRunner
from simstudy.run.runners.process import ProcessRunner, shared_process_runner
from simstudy.run.runners.thread import ThreadRunner
from simstudy.spec.study import CommandModel, Study

__all__ = [
    "CommandRunner",
    "ProcessRunner",
    "Runner",
    "ThreadRunner",
    "make_runner",
    "run_replicate",
]


def make_runner(study: Study, log_dir: str | Path) -> Runner:
    """Return the runner the study asks for (process runners are shared per process)."""
    model = study.model
    memory_limit = study.execution.model_memory_limit_bytes()
    if isinstance(model, CommandModel):
        return CommandRunner(
            model.command, study.resolve(model.cwd), log_dir, memory_limit_bytes=memory_limit
        )
    if study.execution.runner == "thread":
        return ThreadRunner(model)
    return shared_process_runner(model, log_dir, memory_limit)
