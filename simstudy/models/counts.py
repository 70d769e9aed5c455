"""Poisson counts at a rate: a model whose posterior is known exactly (Gamma prior).

```python
>>> from simstudy.models.counts import simulate
>>> simulate({"rate": 5.0, "days": 10}, seed=1)["total"]
52.0
```

With counts ~ Poisson(rate) on each of `days` days and a Gamma(a, scale) prior on the rate,
the posterior given an observed total k is Gamma(a + k, scale / (1 + days x scale)): the
total is sufficient, so ABC with distance |total - k| and epsilon 0 samples it exactly.
The tests and benchmarks of posterior inference check against it.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def simulate(params: dict[str, Any], seed: int) -> dict[str, float]:
    """Return the total of `days` (default 10) Poisson counts at `rate` per day."""
    days = int(params.get("days", 10))
    counts = np.random.default_rng(seed).poisson(float(params["rate"]), size=days)
    return {"total": float(counts.sum())}


def exact_posterior(total: float, days: int, a: float, scale: float) -> Any:
    """Return the rate's exact posterior (scipy.stats.gamma) given the observed total."""
    import scipy.stats

    return scipy.stats.gamma(a=a + total, scale=scale / (1.0 + days * scale))
