"""Read a study file (YAML or JSON) into a validated `Study`."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from simstudy.errors import StudyError, validation_problems
from simstudy.spec import Study


def read_study_document(path: Path) -> dict[str, Any]:
    """Return the raw mapping of a YAML or JSON study file."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise StudyError(str(path), [f"cannot read the file: {exc.strerror}"]) from exc
    try:
        document = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise StudyError(
            str(path), [f"not valid {path.suffix.lstrip('.') or 'YAML'}: {exc}"]
        ) from exc
    if not isinstance(document, dict):
        raise StudyError(str(path), ["the file must hold one mapping (name:, model:, ...)"])
    return document


def validate_study(document: dict[str, Any], source: str = "<study>") -> Study:
    """Return the validated study or raise `StudyError` listing every invalid field."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("default")
            return Study.model_validate(document)
    except ValidationError as exc:
        raise StudyError(source, validation_problems(exc)) from exc


def load_study(path: str | Path) -> Study:
    """Read and validate a study file; relative paths in it resolve against its folder."""
    path = Path(path)
    document = read_study_document(path)
    document.setdefault("base_dir", str(path.resolve().parent))
    return validate_study(document, str(path))
