"""Errors a user sees: each names where the problem is and what to do."""

from __future__ import annotations

from pydantic import ValidationError

SHOWN_PROBLEMS = 20
"""Problems listed in an error message; a design of 100,000 bad sets would fill a screen."""


class StudyError(ValueError):
    """An invalid study: the message lists each problem as 'field: what is wrong'."""

    def __init__(self, source: str, problems: list[str]):
        self.source = source
        self.problems = problems
        shown = problems[:SHOWN_PROBLEMS]
        if len(problems) > SHOWN_PROBLEMS:
            shown.append(f"... and {len(problems) - SHOWN_PROBLEMS:,} more problems of this kind")
        lines = "\n".join(f"  - {p}" for p in shown)
        super().__init__(f"invalid study {source}:\n{lines}")


def validation_problems(error: ValidationError) -> list[str]:
    """Return one 'field.path: message (got value)' line per pydantic error."""
    problems = []
    for item in error.errors():
        where = ".".join(str(part) for part in item["loc"]) or "(top level)"
        message = item["msg"].removeprefix("Value error, ")
        got = item.get("input")
        shown = "" if isinstance(got, dict) else f" (got {got!r})"
        problems.append(f"{where}: {message}{shown}")
    return problems


class OutputDirError(RuntimeError):
    """The output folder belongs to another study or cannot be used."""
