"""The `parameters.sample` section of the study file: a sampled parameter design.

```python
>>> from simstudy.spec.sample import SampleDesign
>>> design = SampleDesign.model_validate({
...     "method": "saltelli", "n": 64, "bounds": {"beta": [0.1, 0.6], "gamma": [0.05, 0.2]},
... })
>>> design.size()
256
```

Pydantic only: the study file is validated without importing scipy or SALib, and the
design's size is known before anything is sampled (`SampleDesign.size`).
"""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    Tag,
    field_validator,
    model_validator,
)

from simstudy.spec.text import short_text

SampleMethod = Literal["random", "lhs", "sobol", "halton", "saltelli", "morris"]
QMC_METHODS = ("random", "lhs", "sobol", "halton")
"""Space-filling designs from scipy.stats.qmc: `n` rows."""
SENSITIVITY_METHODS = ("saltelli", "morris")
"""Designs from SALib's samplers, built for its sensitivity indices."""
POWER_OF_TWO_METHODS = ("sobol", "saltelli")
"""Sobol' sequences keep their balance properties only for a power-of-two number of points."""
DEFAULT_LEVELS = 4
"""Morris grid levels unless the study says otherwise."""
MAX_EXACT_INTEGER = 2**53
"""Largest integer bound: integers are drawn through float64, exact up to 2^53."""

Number = Annotated[float, Field(strict=True, allow_inf_nan=False)]

Scalar = Annotated[StrictBool | StrictInt | StrictFloat | StrictStr, BeforeValidator(short_text)]
"""A parameter value: a boolean, a number, or a text of at most MAX_TEXT_VALUE_CHARS
(checked before the union: one error saying why, not one per type it is not).

Strict members: in lax mode pydantic would turn 1.0 into True."""
Choice = Scalar


class SampleModel(BaseModel):
    """Base of the sample models: unknown fields are errors, as everywhere in the study file."""

    model_config = ConfigDict(extra="forbid")


class RangeBound(SampleModel):
    """A numeric parameter drawn between two bounds."""

    low: Number = Field(description="Lowest value (included).")
    high: Number = Field(description="Highest value (included for integers).")
    log: bool = Field(
        default=False, description="Uniform in log(value) rather than in value; needs low > 0."
    )
    integer: bool = Field(
        default=False,
        description="Draw whole numbers from low to high, both included; bounds must be "
        "whole numbers.",
    )


class ChoiceBound(SampleModel):
    """A categorical parameter: one of a list of values, each equally likely."""

    choices: list[Choice] = Field(
        min_length=2,
        description="The values (numbers, strings or booleans), at least two, all distinct. "
        "Not for morris: its elementary effects need ordered values.",
    )

    @field_validator("choices")
    @classmethod
    def _distinct(cls, values: list[Choice]) -> list[Choice]:
        # 1 and 1.0 are one parameter value (one param_id); True and 1 are not.
        keys = [(isinstance(v, bool), isinstance(v, str), v) for v in values]
        repeated = [v for i, v in enumerate(values) if keys[i] in keys[:i]]
        if repeated:
            raise ValueError(f"choice {repeated[0]!r} appears more than once; list each once")
        # A result column has one type: [1, "a"] could not be written as a parameter column.
        kinds = {"boolean" if isinstance(v, bool) else "text" if isinstance(v, str) else "number"
                 for v in values}  # fmt: skip
        if len(kinds) > 1:
            raise ValueError(
                f"choices mix {' and '.join(sorted(kinds))} ({values}); give choices of one type "
                "(write numbers as text, e.g. '1', to mix them with words)"
            )
        return values


def _bound_kind(value: Any) -> str:
    if isinstance(value, dict) and "choices" in value:
        return "choices"
    if isinstance(value, ChoiceBound):
        return "choices"
    return "range"


Bound = Annotated[
    Annotated[RangeBound, Tag("range")] | Annotated[ChoiceBound, Tag("choices")],
    Discriminator(_bound_kind),
]


class SampleDesign(SampleModel):
    """Parameter sets sampled from bounds: space-filling (qmc) or for sensitivity (SALib)."""

    # Optional here, required by the Study validator unless the study calibrates: a
    # calibration takes only the bounds, its trials come from the optimizer.
    method: SampleMethod | None = Field(
        default=None,
        description="random | lhs | sobol | halton (scipy.stats.qmc, scrambled and seeded) | "
        "saltelli (Sobol' indices) | morris (elementary effects), from SALib's samplers. "
        "Required, except in a calibration (which takes only the bounds).",
    )
    n: int | None = Field(
        default=None,
        ge=1,
        description="Points for random, lhs, sobol and halton; base samples for saltelli "
        "(n x (D+2) sets, n x (2D+2) with second_order); trajectories for morris "
        "(n x (D+1) sets). A power of two for sobol and saltelli. Required with method.",
    )
    seed: int | None = Field(
        default=None,
        ge=0,
        lt=2**63,
        description="Seed of the sampler (default: the study's seed).",
    )
    bounds: dict[str, Bound] = Field(
        min_length=1,
        description="Per parameter: [low, high], {low, high, log, integer}, or {choices: [...]}.",
    )
    second_order: bool = Field(
        default=False, description="saltelli only: also compute the second-order indices S2."
    )
    levels: int = Field(
        default=DEFAULT_LEVELS,
        ge=2,
        le=1000,
        description="morris only: grid levels, an even number.",
    )

    @field_validator("bounds", mode="before")
    @classmethod
    def _pairs(cls, value: Any) -> Any:
        # [low, high] is the short form of {low: ..., high: ...}.
        if not isinstance(value, dict):
            return value
        return {
            name: {"low": bound[0], "high": bound[1]}
            if isinstance(bound, list | tuple) and len(bound) == 2
            else bound
            for name, bound in value.items()
        }

    @model_validator(mode="after")
    def _consistent(self) -> SampleDesign:
        problems = [*self._option_problems(), *self._bound_problems()]
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def _option_problems(self) -> list[str]:
        problems = []
        if (self.method is None) != (self.n is None):
            given, missing = ("method", "n") if self.n is None else ("n", "method")
            problems.append(
                f"{given} is given without {missing}: give both, or neither in a calibration"
            )
        if self.method in POWER_OF_TWO_METHODS and self.n and self.n & (self.n - 1):
            lower = 2 ** (self.n.bit_length() - 1)
            problems.append(
                f"n is {self.n}, but {self.method} needs a power of two: use {lower} or {2 * lower}"
            )
        # Judged by value, not by what the file set: a dumped study (a Prefect flow
        # parameter) carries every default and must validate again.
        if self.second_order and self.method != "saltelli":
            problems.append(f"second_order applies to saltelli only, not {self.method}")
        if self.levels != DEFAULT_LEVELS and self.method != "morris":
            problems.append(f"levels applies to morris only, not {self.method}")
        if self.method == "morris" and self.levels % 2:
            problems.append(
                f"levels is {self.levels}: morris needs an even number of levels "
                f"(e.g. {self.levels + 1})"
            )
        return problems

    def _bound_problems(self) -> list[str]:
        problems = []
        for name, bound in self.bounds.items():
            where = f"bounds.{name}"
            if isinstance(bound, ChoiceBound):
                if self.method == "morris":
                    problems.append(
                        f"{where} is categorical (choices), which morris cannot vary: its "
                        "elementary effects need ordered values; use saltelli, or give "
                        "numeric bounds"
                    )
                continue
            problems.extend(range_problems(where, bound))
        return problems

    def names(self) -> list[str]:
        """Return the sampled parameter names, in the order of the study file."""
        return list(self.bounds)

    def drawn(self) -> tuple[SampleMethod, int]:
        """Return (method, n) of a design that is drawn up front (not a calibration's bounds)."""
        if self.method is None or self.n is None:
            raise ValueError(
                "parameters.sample has no method and n: a calibration's bounds are not a "
                "design drawn up front"
            )
        return self.method, self.n

    def size(self) -> int:
        """Return the number of design rows, without sampling anything."""
        method, n = self.drawn()
        dims = len(self.bounds)
        if method == "saltelli":
            return n * (2 * dims + 2 if self.second_order else dims + 2)
        if method == "morris":
            return n * (dims + 1)
        return n

    def size_rule(self) -> str:
        """Return how the size follows from n, e.g. 'saltelli: n=64 x (2D+2), D=3 = 512 sets'."""
        method, n = self.drawn()
        dims = len(self.bounds)
        if method == "saltelli":
            rule = "(2D+2)" if self.second_order else "(D+2)"
            return f"saltelli: n={n} x {rule}, D={dims} = {self.size():,} sets"
        if method == "morris":
            return f"morris: n={n} trajectories x (D+1), D={dims} = {self.size():,} sets"
        return f"{method}: n = {n:,} sets"


def range_problems(where: str, bound: RangeBound) -> list[str]:
    """Return what is wrong with a numeric bound (empty if nothing), naming `where`."""
    low, high = bound.low, bound.high
    if low >= high:
        return [f"{where}: low ({low:g}) must be below high ({high:g})"]
    problems = []
    if not bound.log and not math.isfinite(high - low):
        # A sample is low + u (high - low): with an infinite width every one is +-inf,
        # shown as 1e308, and all the same set.
        problems.append(
            f"{where}: high - low ({high:g} - {low:g}) is beyond the largest float; narrow "
            "the bounds, or use log: true for a range over many orders of magnitude"
        )
    if bound.log and low <= 0:
        problems.append(
            f"{where}: log needs low > 0 (got low={low:g}); shift the parameter or drop log"
        )
    if bound.integer:
        fractional = [f"{side}={v:g}" for side, v in (("low", low), ("high", high)) if v % 1]
        if fractional:
            problems.append(
                f"{where}: integer needs whole-number bounds (got {', '.join(fractional)})"
            )
        elif max(abs(low), abs(high)) > MAX_EXACT_INTEGER:
            problems.append(
                f"{where}: integer bounds must lie within +-2^53 ({MAX_EXACT_INTEGER:,})"
            )
    return problems
