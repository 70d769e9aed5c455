"""Errors a user sees: each names where the problem is and what to do."""

from __future__ import annotations

from pydantic import ValidationError
from pydantic_core import ErrorDetails

SHOWN_PROBLEMS = 20
"""Problems listed in an error message; a design of 100,000 bad sets would fill a screen."""

SHOWN_VALUE_CHARS = 60
"""Longest value echoed in a problem: enough to recognise a typo, too short to dump a file."""


class SimstudyError(Exception):
    """Root of every error a user can cause: the front ends print its message, no traceback."""

    exit_code = 2
    """The command line's exit code for it: 2, bad input (a study, a folder, a journal)."""


class StudyError(SimstudyError, ValueError):
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
        where = ".".join(str(part) for part in field_path(item["loc"])) or "(top level)"
        message = item["msg"].removeprefix("Value error, ")
        problems.append(f"{where}: {message}{shown_input(item)}")
    return problems


UNION_TAGS = {"calibrate": ("optuna", "abc-smc")}
"""The tags pydantic puts in an error's location after a field that is a tagged union."""


def field_path(location: tuple[int | str, ...]) -> list[int | str]:
    """Return an error's location as the study file spells it: without union tags."""
    path: list[int | str] = []
    for part in location:
        if not (path and part in UNION_TAGS.get(str(path[-1]), ())):
            path.append(part)
    return path


def shown_input(item: ErrorDetails) -> str:
    """Return ' (got value)' for a pydantic error, shortened, or '' when it must not show."""
    # A field outside the schema says nothing about the study but may be anything the file
    # holds (a password in a JSON file given as study_path): name it, never show its value.
    got = item.get("input")
    if item["type"] == "extra_forbidden" or isinstance(got, dict):
        return ""
    text = repr(got)
    if len(text) > SHOWN_VALUE_CHARS:
        text = f"{text[: SHOWN_VALUE_CHARS - 3]}... ({len(text):,} characters)"
    return f" (got {text})"


class OutputDirError(SimstudyError, RuntimeError):
    """The output folder belongs to another study or cannot be used."""


class JournalError(SimstudyError, RuntimeError):
    """A calibration's Optuna journal that cannot be used as it is: the message says why."""


class StorageError(SimstudyError, OSError):
    """A result that could not be written: a full disk, a quota, a read-only folder (exit 3).

    The study stops with what it wrote; run it again once there is room, and the finished
    replicates it kept are reused.
    """

    exit_code = 3
