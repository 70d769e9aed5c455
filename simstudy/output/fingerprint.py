"""What identifies a replicate's result: the model's source, its parameters and seed.

A result is reused only when the model fingerprint, the param_id and the seed all
match, so a changed model never reuses old results.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
from pathlib import Path

from simstudy.spec.study import CommandModel, Study


def _digest(*parts: bytes) -> str:
    hasher = hashlib.blake2b(digest_size=16)
    for part in parts:
        hasher.update(len(part).to_bytes(8, "big"))
        hasher.update(part)
    return hasher.hexdigest()


def model_files(study: Study) -> list[Path]:
    """Return the source files that define the model.

    A Python model: the file of its module (not the modules it imports; raise
    `model_version` when those change). A command model: every argument that names an
    existing file, relative to the command's cwd (e.g. model.py in [python3, model.py]).
    """
    model = study.model
    if isinstance(model, CommandModel):
        cwd = study.resolve(model.cwd)
        candidates = [Path(arg) if Path(arg).is_absolute() else cwd / arg for arg in model.command]
        return [path for path in candidates if path.is_file()]
    module_name = model.partition(":")[0]
    try:
        spec = importlib.util.find_spec(module_name)
    except (ImportError, ValueError):
        return []
    if spec is None or spec.origin is None or not Path(spec.origin).is_file():
        return []
    return [Path(spec.origin)]


def model_fingerprint(study: Study) -> str:
    """Return a digest of the model reference, its source files and `model_version`."""
    model = study.model if isinstance(study.model, str) else study.model.model_dump()
    header = json.dumps({"model": model, "version": study.model_version}, sort_keys=True)
    return _digest(header.encode(), *(path.read_bytes() for path in model_files(study)))


def replicate_cache_key(fingerprint: str, param_id: str, seed: int) -> str:
    """Return the cache key of one replicate's result."""
    return _digest(fingerprint.encode(), param_id.encode(), str(seed).encode())
