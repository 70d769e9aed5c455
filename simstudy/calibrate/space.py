"""The search space: `parameters.sample` bounds as Optuna distributions.

```python
>>> from simstudy.spec.sample import SampleDesign
>>> from simstudy.calibrate.space import search_space
>>> design = SampleDesign.model_validate(
...     {"bounds": {"beta": [0.1, 0.6], "gamma": {"low": 0.05, "high": 0.5, "log": True}}})
>>> search_space(design)["gamma"]
FloatDistribution(high=0.5, log=True, low=0.05, step=None)
```

A trial's values are rounded as a sampled design's are (`trial_params`), so a parameter
set asked twice, or on another machine, has one `param_id`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)

from simstudy.design.sampling import round_significant
from simstudy.spec.sample import ChoiceBound, RangeBound, SampleDesign


def search_space(design: SampleDesign) -> dict[str, BaseDistribution]:
    """Return one Optuna distribution per bound, in the order of the study file."""
    return {name: distribution(bound) for name, bound in design.bounds.items()}


def distribution(bound: RangeBound | ChoiceBound) -> BaseDistribution:
    """Return the Optuna distribution of one bound: float, integer or categorical."""
    if isinstance(bound, ChoiceBound):
        return CategoricalDistribution(bound.choices)
    if bound.integer:
        return IntDistribution(int(bound.low), int(bound.high), log=bound.log)
    return FloatDistribution(bound.low, bound.high, log=bound.log)


def trial_params(values: dict[str, Any]) -> dict[str, Any]:
    """Return a trial's values with floats rounded as sampled designs round them."""
    return {name: _rounded(value) for name, value in values.items()}


def _rounded(value: Any) -> Any:
    # bool is an int, and a categorical choice may be either: only true floats are rounded.
    if isinstance(value, float):
        return float(round_significant(np.asarray(value)))
    return value
