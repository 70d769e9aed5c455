"""The study file's `calibrate` section: how many trials, which sampler, how many replicates.

```python
>>> from simstudy.calibrate.spec import CalibrateSettings
>>> settings = CalibrateSettings.model_validate(
...     {"trials": 100, "parallel": 16, "replicates": {"min": 4, "max": 64}, "seed": 7})
>>> (settings.parallel, settings.min_replicates, settings.max_replicates)
(16, 4, 64)
```

Pydantic only (Optuna is imported by `optimizer.py`, when a calibration runs). The samplers
that need a package Optuna does not install (cmaes: `cmaes`; gp: `torch`) are refused here,
when the study is validated, rather than after the first trials have run.
"""

from __future__ import annotations

import importlib.util
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    StrictInt,
    Tag,
    field_validator,
    model_validator,
)

from simstudy.calibrate.priors import PriorSpec

MAX_TRIALS = 10_000
"""Most trials of a calibration: each is a parameter set of the study's limits."""
MAX_CALIBRATION_REPLICATES = 1_000_000
"""Most replicates per trial (the study's `MAX_REPLICATES`)."""
DEFAULT_PARALLEL = 8
"""Trials in flight at once unless the study says otherwise."""

Sampler = Literal["tpe", "cmaes", "gp", "qmc", "random"]
SAMPLER_PACKAGES: dict[str, str] = {"cmaes": "cmaes", "gp": "torch"}
"""Samplers whose Optuna implementation imports a package Optuna itself does not require."""


class CalibrateModel(BaseModel):
    """Base of the calibrate models: unknown fields are errors, as everywhere in the study file."""

    model_config = ConfigDict(extra="forbid")


class ReplicateRange(CalibrateModel):
    """Adaptive replicates: every trial starts at `min`; competitive ones double up to `max`."""

    min: int = Field(
        ge=1,
        le=MAX_CALIBRATION_REPLICATES,
        description="Replicates every trial starts with.",
    )
    max: int = Field(
        ge=1,
        le=MAX_CALIBRATION_REPLICATES,
        description="Most replicates of a trial: min x 2^k, since replicates double.",
    )

    @model_validator(mode="after")
    def _doubles(self) -> ReplicateRange:
        if self.max < self.min:
            raise ValueError(
                f"max ({self.max}) is below min ({self.min}); give max >= min (e.g. {self.min * 4})"
            )
        ratio, remainder = divmod(self.max, self.min)
        if remainder or ratio & (ratio - 1):
            raise ValueError(
                f"max is {self.max}, but replicates double from min {self.min}, so max must be "
                f"min x 2^k: use {nearest_doubling(self.min, self.max)}"
            )
        return self


def nearest_doubling(minimum: int, value: int) -> int:
    """Return the number min x 2^k nearest to `value` (the lower one on a tie)."""
    lower = minimum
    while lower * 2 <= value:
        lower *= 2
    upper = lower * 2
    return lower if value - lower <= upper - value else upper


def _replicates_kind(value: Any) -> str:
    return "range" if isinstance(value, dict | ReplicateRange) else "number"


# Tagged, so that a wrong {min, max} is reported once, not also as "not an integer".
Replicates = Annotated[
    Annotated[StrictInt, Tag("number")] | Annotated[ReplicateRange, Tag("range")],
    Discriminator(_replicates_kind),
]


class CalibrateSettings(CalibrateModel):
    """A calibration: trials asked from Optuna as capacity frees, scored against targets."""

    method: Literal["optuna"] = Field(
        default="optuna", description="Optimisation library: optuna (ask/tell)."
    )
    sampler: Sampler = Field(
        default="tpe",
        description="Optuna sampler: tpe (default; constant liar for parallel asks) | cmaes "
        "(needs the cmaes package) | gp (needs torch) | qmc (scrambled Sobol', no learning) | "
        "random.",
    )
    trials: int = Field(
        ge=1,
        le=MAX_TRIALS,
        description=f"Parameter sets in total (at most {MAX_TRIALS:,}).",
    )
    parallel: int = Field(
        default=DEFAULT_PARALLEL,
        ge=1,
        le=MAX_TRIALS,
        description="Most trials in flight at once: a new one is asked as soon as one is "
        "told (give at least the cluster's worker threads, or workers idle).",
    )
    order: Literal["finish", "ask"] = Field(
        default="finish",
        description="When trials are told: finish (as soon as each completes: fastest) | ask "
        "(in the order asked, each new trial asked after the one `parallel` before it is "
        "told: the same trials on any cluster layout, at some idle time).",
    )
    replicates: Replicates = Field(
        description="Replicates per trial: a number (every trial gets it), or {min, max}: "
        "every trial starts with min, and trials still competitive with the best double "
        "theirs up to max (max = min x 2^k).",
    )
    seed: int | None = Field(
        default=None,
        ge=0,
        lt=2**63,
        description="Seed of the sampler (default: the study's seed).",
    )

    @field_validator("replicates")
    @classmethod
    def _replicates_in_range(cls, value: int | ReplicateRange) -> int | ReplicateRange:
        if isinstance(value, int) and not 1 <= value <= MAX_CALIBRATION_REPLICATES:
            raise ValueError(
                f"replicates is {value}: give 1 to {MAX_CALIBRATION_REPLICATES:,}, or {{min, max}}"
            )
        return value

    @field_validator("sampler")
    @classmethod
    def _sampler_installed(cls, value: str) -> str:
        package = SAMPLER_PACKAGES.get(value)
        # Looked up, not imported: torch takes seconds to import.
        if package is not None and importlib.util.find_spec(package) is None:
            raise ValueError(
                f"sampler {value!r} needs the Python package {package!r}, which is not "
                f"installed: install it (pip install {package}) or use sampler 'tpe'"
            )
        return value

    @property
    def min_replicates(self) -> int:
        """Return the replicates every trial starts with."""
        if isinstance(self.replicates, int):
            return self.replicates
        return self.replicates.min

    @property
    def max_replicates(self) -> int:
        """Return the most replicates a trial may get."""
        if isinstance(self.replicates, int):
            return self.replicates
        return self.replicates.max


RESUMABLE_SETTINGS = (
    "generations", "max_simulations", "min_acceptance_rate", "predictive_replicates"
)  # fmt: skip
"""ABC-SMC settings a resumed run may change: they decide when to stop or what is simulated
after the end, not which particles."""
MAX_PREDICTIVE_REPLICATES = 1000


class AbcSmcSettings(CalibrateModel):
    """ABC-SMC: population size, the epsilon schedule, the kernel, and when to stop."""

    population_size: int = Field(
        default=1000, ge=2, le=1_000_000, description="Accepted particles per generation (N)."
    )
    epsilon: float | None = Field(
        default=None,
        ge=0,
        description="Final epsilon: stop after the generation that reaches it (epsilon never "
        "goes below it). None: stop by the other rules only.",
    )
    epsilon_quantile: float = Field(
        default=0.5,
        gt=0,
        lt=1,
        description="Epsilon of a generation: this weighted quantile of the last population's "
        "distances (lowered to the next distance below when that would not shrink it).",
    )
    min_acceptance_rate: float = Field(
        default=0.0,
        ge=0,
        lt=1,
        description="Stop once a generation's acceptance rate falls below it (0: never); "
        "checked while the generation runs, so it stops as soon as the rate cannot be reached.",
    )
    generations: int = Field(
        default=10, ge=1, le=10_000, description="Most generations, generation 0 included."
    )
    max_simulations: int | None = Field(
        default=None,
        ge=1,
        description="Budget of simulations (replicates, failed ones included), checked after "
        "every outcome; the last population is the last complete generation.",
    )
    parallel: int | None = Field(
        default=None,
        ge=1,
        le=1_000_000,
        description="Sets in flight at once (default: 8 per worker thread, growing with an "
        "adaptive cluster). Proposals after a generation's last acceptance are wasted: for "
        "expensive simulations on a large cluster give fewer, for cheap ones more.",
    )
    kernel_scale: float = Field(
        default=2.0,
        gt=0,
        description="The kernel's covariance is this times the last population's weighted "
        "covariance (2: Beaumont et al. 2009's optimal random-walk scale).",
    )
    replicates: int = Field(
        default=1,
        ge=1,
        le=MAX_CALIBRATION_REPLICATES,
        description="Replicates per particle: its distance is the loss over them.",
    )
    predictive_replicates: int = Field(
        default=1,
        ge=0,
        le=MAX_PREDICTIVE_REPLICATES,
        description="Fresh replicates of each particle of the final population, simulated "
        "after the last generation: the posterior predictive bands against the targets "
        "(0: none). They are the replicates after those the distance used, so a resumed "
        "or rerun posterior reuses them.",
    )
    seed: int | None = Field(
        default=None,
        ge=0,
        lt=2**63,
        description="Seed of the proposals (default: the study's seed).",
    )


class PosteriorSettings(AbcSmcSettings):
    """A posterior by ABC-SMC: the study file's `calibrate` with `method: abc-smc`.

    The varied parameters are `parameters.sample.bounds`: uniform priors (log-uniform with
    `log: true`) unless `priors` gives a parameter a scipy.stats distribution instead.
    """

    method: Literal["abc-smc"] = Field(
        description="abc-smc: a posterior sample by approximate Bayesian computation (ABC-SMC)."
    )
    priors: dict[str, PriorSpec] = Field(
        default_factory=dict,
        description="Per parameter of parameters.sample.bounds, a prior other than the "
        "uniform one of its bounds: [low, high], {low, high, log: true}, or a scipy.stats "
        "distribution {dist: gamma, a: 2.0, scale: 0.5}.",
    )

    @property
    def min_replicates(self) -> int:
        """Return the replicates of every particle."""
        return self.replicates

    @property
    def max_replicates(self) -> int:
        """Return the replicates of every particle (no particle gets more)."""
        return self.replicates


def _calibrate_method(value: Any) -> Any:
    return value.get("method", "optuna") if isinstance(value, dict) else value.method


Calibration = Annotated[
    Annotated[CalibrateSettings, Tag("optuna")] | Annotated[PosteriorSettings, Tag("abc-smc")],
    Discriminator(
        _calibrate_method,
        custom_error_type="calibrate_method",
        custom_error_message="calibrate.method is optuna (a search for the best set, the "
        "default) or abc-smc (a posterior sample)",
    ),
]
"""The `calibrate` section: an Optuna search (the default) or an ABC-SMC posterior."""
