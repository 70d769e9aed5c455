"""Priors of a posterior inference: one scipy.stats distribution per parameter, independent.

```python
>>> import numpy as np
>>> from simstudy.calibrate.priors import Prior, PriorSpec
>>> prior = Prior({
...     "beta": PriorSpec.model_validate([0.1, 0.6]),
...     "gamma": PriorSpec.model_validate({"low": 0.05, "high": 0.5, "log": True}),
...     "delay": PriorSpec.model_validate({"dist": "gamma", "a": 2.0, "scale": 0.5}),
... })
>>> prior.sample(np.random.default_rng(1), 4).shape
(4, 3)
```

A parameter's prior is written three ways: `[low, high]` (uniform), `{low, high, log: true}`
(log-uniform: uniform in log(value)), or a scipy.stats continuous distribution by name with
its parameters (`{dist: gamma, a: 2.0, scale: 0.5}`: `scipy.stats.gamma(a=2.0, scale=0.5)`).
`PriorSpec` builds the distribution when it is validated, so a name scipy does not have or
parameters it refuses are errors of the study file, naming the parameter, not of a run.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Mapping
from typing import Annotated, Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

BOUND_FIELDS = ("low", "high", "log")
"""The fields of a prior given by bounds."""
SCALE_PARAMETERS = ("loc", "scale")
"""The parameters every scipy.stats continuous distribution takes after its shapes."""

Number = Annotated[float, Field(strict=True, allow_inf_nan=False)]


class PriorSpec(BaseModel):
    """One parameter's prior: `[low, high]`, `{low, high, log}`, or `{dist, <parameters>}`.

    With `dist`, every other field is a parameter of the scipy.stats distribution of that
    name (its shapes, `loc`, `scale`): `{dist: beta, a: 2, b: 5}`.
    """

    # Extra fields are the distribution's parameters; the validator refuses them on a
    # prior given by bounds, so a typo (`hihg`) is still an error.
    model_config = ConfigDict(extra="allow", frozen=True)

    dist: str | None = Field(
        default=None,
        description="Name of a scipy.stats continuous distribution (gamma, beta, norm, "
        "lognorm, ...); its parameters are the other fields. Absent: uniform between low "
        "and high.",
    )
    low: Number | None = Field(default=None, description="Lowest value (bounds only).")
    high: Number | None = Field(default=None, description="Highest value (bounds only).")
    log: bool = Field(
        default=False,
        description="Uniform in log(value) between low and high (log-uniform); needs low > 0.",
    )

    @model_validator(mode="before")
    @classmethod
    def _bounds_list(cls, value: Any) -> Any:
        if isinstance(value, list | tuple):
            if len(value) != 2:
                raise ValueError(f"bounds are [low, high], got {len(value)} values")
            return {"low": value[0], "high": value[1]}
        return value

    @model_validator(mode="after")
    def _buildable(self) -> PriorSpec:
        if self.dist is None:
            _check_bounds(self.low, self.high, self.log, sorted(self.parameters))
        else:
            given = [name for name in BOUND_FIELDS if name in self.model_fields_set]
            if given:
                verb = "belongs" if len(given) == 1 else "belong"
                raise ValueError(
                    f"{' and '.join(given)} {verb} to a prior given by bounds, not to "
                    f"dist {self.dist!r}: give the distribution's parameters (loc, scale, "
                    "shapes), or drop dist"
                )
            build_distribution(self.dist, self.parameters)
        return self

    @property
    def parameters(self) -> dict[str, Any]:
        """Return the distribution's parameters (the fields beyond dist, low, high, log)."""
        return dict(self.model_extra or {})

    def distribution(self) -> Any:
        """Return the frozen scipy.stats distribution of this prior."""
        if self.dist is not None:
            return build_distribution(self.dist, self.parameters)
        assert self.low is not None and self.high is not None  # checked by the validator
        if self.log:
            return _scipy_stats().loguniform(self.low, self.high)
        return _scipy_stats().uniform(loc=self.low, scale=self.high - self.low)

    def describe(self) -> dict[str, Any]:
        """Return the prior as written in a study file (bounds, or dist and parameters)."""
        if self.dist is not None:
            return {"dist": self.dist, **self.parameters}
        return {"low": self.low, "high": self.high, "log": self.log}


def _check_bounds(low: float | None, high: float | None, log: bool, extra: list[str]) -> None:
    if extra:
        raise ValueError(
            f"{', '.join(extra)}: not a field of a prior given by bounds (low, high, log); "
            "for a scipy.stats distribution give dist too"
        )
    if low is None or high is None:
        raise ValueError("give [low, high], {low, high, log}, or {dist, <parameters>}")
    if low >= high:
        raise ValueError(f"low ({low}) is not below high ({high}); give low < high")
    if log and low <= 0:
        raise ValueError(f"log-uniform needs low > 0, got low {low}; raise low or drop log")


def _scipy_stats() -> Any:
    # Imported when a prior is built, not with the study spec: scipy.stats takes ~1 s.
    import scipy.stats

    return scipy.stats


def build_distribution(name: str, parameters: Mapping[str, Any]) -> Any:
    """Return scipy.stats' frozen distribution `name(**parameters)`, or raise saying why not."""
    stats = _scipy_stats()
    family = getattr(stats, name, None)
    if not isinstance(family, stats.rv_continuous):
        if isinstance(family, stats.rv_discrete):
            raise ValueError(
                f"scipy.stats.{name} is discrete: a parameter's prior must be continuous "
                "(ABC-SMC perturbs particles with a normal kernel)"
            )
        close = difflib.get_close_matches(name, continuous_names(), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ValueError(f"scipy.stats has no distribution {name!r}{hint}")
    takes = [*(family.shapes.split(", ") if family.shapes else []), *SCALE_PARAMETERS]
    for key, value in parameters.items():
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"{name} parameter {key} is {value!r}: give a number")
        if not math.isfinite(value):
            raise ValueError(f"{name} parameter {key} is {value}: give a finite number")
    unknown = sorted(set(parameters) - set(takes))
    missing = [shape for shape in takes[: -len(SCALE_PARAMETERS)] if shape not in parameters]
    if unknown or missing:
        problem = f"no parameter {', '.join(unknown)}" if unknown else ""
        problem += "; " if unknown and missing else ""
        problem += f"missing {', '.join(missing)}" if missing else ""
        raise ValueError(f"scipy.stats.{name}: {problem} (it takes {', '.join(takes)})")
    frozen = family(**parameters)
    low, high = frozen.support()
    # scipy accepts any arguments when it freezes, and answers NaN for invalid ones.
    if math.isnan(low) or math.isnan(high) or not math.isfinite(frozen.ppf(0.5)):
        given = ", ".join(f"{key}={value}" for key, value in parameters.items())
        raise ValueError(
            f"scipy.stats.{name}({given}) is not a distribution: a parameter is out of its "
            "range (scale must be > 0; see scipy.stats' documentation for the shapes)"
        )
    return frozen


def continuous_names() -> list[str]:
    """Return the names of scipy.stats' continuous distributions."""
    stats = _scipy_stats()
    return [name for name in dir(stats) if isinstance(getattr(stats, name), stats.rv_continuous)]


class Prior:
    """Independent priors over named parameters: sample, density, support.

    Args:
        specs: each parameter's prior, in the order of the parameter columns.
    """

    def __init__(self, specs: Mapping[str, PriorSpec]):
        if not specs:
            raise ValueError("a prior needs at least one parameter")
        self.specs = dict(specs)
        self.names = list(specs)
        self._distributions = [spec.distribution() for spec in specs.values()]
        support = np.array([d.support() for d in self._distributions], dtype=float)
        self.low: np.ndarray = support[:, 0]
        """Lowest value of each parameter (may be -inf)."""
        self.high: np.ndarray = support[:, 1]
        """Highest value of each parameter (may be inf)."""

    @classmethod
    def from_mapping(cls, document: Mapping[str, Any]) -> Prior:
        """Return the prior of a study file's `priors` mapping (validated here)."""
        return cls({name: PriorSpec.model_validate(value) for name, value in document.items()})

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """Return n independent draws, one row each, one column per parameter."""
        columns = [d.rvs(size=n, random_state=rng) for d in self._distributions]
        return np.column_stack(columns).astype(float)

    def logpdf(self, x: np.ndarray) -> np.ndarray:
        """Return the log density of each row of `x` (-inf outside the support)."""
        rows = np.atleast_2d(np.asarray(x, dtype=float))
        total = np.zeros(len(rows))
        for column, distribution in enumerate(self._distributions):
            total += distribution.logpdf(rows[:, column])
        return total

    def inside(self, x: np.ndarray) -> np.ndarray:
        """Return whether each row of `x` lies within every parameter's support."""
        rows = np.atleast_2d(np.asarray(x, dtype=float))
        return np.all((rows >= self.low) & (rows <= self.high), axis=1)

    def describe(self) -> dict[str, dict[str, Any]]:
        """Return each parameter's prior as written (for a journal, a report)."""
        return {name: spec.describe() for name, spec in self.specs.items()}
