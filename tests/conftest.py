"""Shared fixtures: tiny studies, one Prefect API per test session, leak checks."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from simstudy.spec import Study

FAULTY_MODEL = "tests.support.faulty:simulate"


@pytest.fixture
def make_study(tmp_path: Path) -> Callable[..., Study]:
    """Build a tiny study of the faulty test model; keyword arguments override fields."""

    def build(**overrides: Any) -> Study:
        execution = {"timeout_seconds": 10, "retries": 0, "dask": {"n_workers": 1}}
        execution.update(overrides.pop("execution", {}))
        document: dict[str, Any] = {
            "name": "tiny",
            "model": FAULTY_MODEL,
            "parameters": {"grid": {"a": [1.0, 2.0]}},
            "replicates": 3,
            "seed": 7,
            "execution": execution,
            "output": str(tmp_path / "out"),
        }
        document.update(overrides)
        return Study.model_validate(document)

    return build


# Python's own per-interpreter helpers (started once, live as long as the test process).
INTERPRETER_HELPERS = ("multiprocessing.resource_tracker", "multiprocessing.forkserver")


def descendants() -> list[psutil.Process]:
    """Return the live (non-zombie) descendants of the test process, but Python's helpers."""
    found = []
    for child in psutil.Process().children(recursive=True):
        try:
            helper = any(h in " ".join(child.cmdline()) for h in INTERPRETER_HELPERS)
            if child.status() != psutil.STATUS_ZOMBIE and not helper:
                found.append(child)
        except psutil.NoSuchProcess:
            pass
    return found


def assert_no_new_processes(before: set[int], grace_seconds: float = 10.0) -> None:
    """Fail if processes started during a test are still alive after a grace period."""
    deadline = time.monotonic() + grace_seconds
    while True:
        left = [p for p in descendants() if p.pid not in before]
        if not left or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    described = []
    for p in left:
        with contextlib.suppress(psutil.Error):
            described.append(f"{p.pid} {' '.join(p.cmdline())[:120]}")
    assert not described, "processes left behind:\n" + "\n".join(described)


@pytest.fixture
def no_leftover_processes() -> Iterator[None]:
    """Assert that the test leaves no process of its own behind."""
    from simstudy.runners.process import close_shared_runners

    before = {p.pid for p in descendants()}
    yield
    close_shared_runners()
    assert_no_new_processes(before)


@pytest.fixture(scope="session")
def prefect_api_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Start one Prefect API (temporary home and database) for the whole test session."""
    from flows.api import prefect_api

    home = tmp_path_factory.mktemp("prefect-home")
    saved = {k: os.environ.get(k) for k in ("PREFECT_HOME", "PREFECT_API_URL")}
    os.environ["PREFECT_HOME"] = str(home)
    os.environ.pop("PREFECT_API_URL", None)
    os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    try:
        with prefect_api(log_path=home / "api.log") as url:
            yield url
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
