"""Parameter-set identities and replicate seeds.

```python
>>> from simstudy.design.identity import param_id, replicate_seed
>>> pid = param_id({"beta": 0.3, "gamma": 0.1})
>>> len(pid)
64
>>> replicate_seed(20261127, pid, 0) == replicate_seed(20261127, pid, 0)
True
```

Both are pure functions of the study file: they never depend on the machine,
the cluster layout or the batch size.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from simstudy.errors import SimstudyError

ParamValue = int | float | str | bool

SEED_BITS = 63
"""Seeds fit a signed 64-bit integer, so they survive Parquet and most C APIs."""


class ParameterValueError(SimstudyError, ValueError):
    """A parameter value that cannot take part in a canonical identity."""


def canonical_value(name: str, value: Any) -> ParamValue:
    """Return the canonical form of one parameter value, or raise naming the parameter."""
    if isinstance(value, bool | str):
        return value
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ParameterValueError(
                f"parameter {name!r} is {value!r}: NaN and infinite values have no identity; "
                "use a finite number"
            )
        # 1 and 1.0 (and -0.0 and 0.0) must name the same parameter set: a float with an
        # integral value is written as an integer.
        if value.is_integer():
            return int(value)
        return value
    raise ParameterValueError(
        f"parameter {name!r} has type {type(value).__name__} ({value!r}); "
        "parameters must be numbers, strings or booleans"
    )


def canonical_params(params: Mapping[str, Any]) -> dict[str, ParamValue]:
    """Return the parameter set with canonical values and sorted keys."""
    return {name: canonical_value(name, params[name]) for name in sorted(params)}


def canonical_json(params: Mapping[str, Any]) -> str:
    """Return the canonical JSON text of a parameter set (the input of `param_id`)."""
    return json.dumps(
        canonical_params(params),
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
        allow_nan=False,
    )


def param_id(params: Mapping[str, Any]) -> str:
    """Return the BLAKE2b-256 hex digest (64 characters) of a full parameter set."""
    return hashlib.blake2b(canonical_json(params).encode("utf-8"), digest_size=32).hexdigest()


def replicate_seed(study_seed: int, pid: str, replicate: int) -> int:
    """Return the seed of one replicate: an independent SeedSequence stream, not a counter."""
    # The 256-bit param id becomes eight 32-bit words of the spawn key, so every
    # (parameter set, replicate) pair gets its own child stream of the study seed.
    id_words = [int(pid[i : i + 8], 16) for i in range(0, 64, 8)]
    sequence = np.random.SeedSequence(entropy=study_seed, spawn_key=(*id_words, replicate))
    state = sequence.generate_state(1, dtype=np.uint64)[0]
    return int(state) >> (64 - SEED_BITS)
