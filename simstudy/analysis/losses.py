"""Losses: how far a parameter set's replicates lie from the observed data.

A set's loss is the weighted sum, over target outputs and their observed points, of a
per-point loss of the replicates' statistics at that point (docs/guides/targets.md,
gives each formula). It is computed from the merged statistics (count, mean, M2) an
aggregation already has; its standard error `loss_se` comes from a bootstrap over the
set's replicates while their values are kept (up to `EXACT_REPLICATES`), from the delta
method beyond.

```python
>>> import numpy as np
>>> from simstudy.analysis.targets import BUILTIN_LOSSES, OutputTarget, Targets
>>> from simstudy.stats.partial import Partial
>>> target = OutputTarget("cases", "mse_of_mean", None, np.array([3.0]), np.ones(1), None)
>>> targets = Targets((target,), None, 0, 1, "observed.csv")
>>> set_loss({"cases": Partial.from_values(np.array([[1.0], [3.0]]))}, {"cases": "scalar"},
...          targets, "id").loss
1.0
```

The log-likelihoods are scipy.stats' (poisson, nbinom, binom, norm) written out with
scipy.special: the same formulas, without scipy.stats' argument checks, which cost five
times the arithmetic on a bootstrap's 200 x 365 points (tests compare both).
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import special

from simstudy.analysis.targets import BUILTIN_LOSSES, OutputTarget, Targets
from simstudy.errors import SimstudyError
from simstudy.stats.partial import Partial

FLOOR = 1e-6
"""Smallest rate (poisson, negative_binomial), standard deviation (gaussian_nll) and
probability distance from 0 and 1 (binomial): a replicate mean of 0 where a count was
observed would give an infinite loss, and sets could no longer be ranked."""
POISSON_DISPERSION = 1e8
"""A negative binomial size k beyond which (or an estimate without overdispersion) the
Poisson likelihood is used: the limit as k grows, and gammaln(o + k) - gammaln(k) loses
its precision there."""

Stats = tuple[np.ndarray, np.ndarray, np.ndarray]
"""Mean, sample variance and count per point, each (..., points)."""


MEAN_ONLY_LOSSES = frozenset({"mse_of_mean", "poisson", "binomial"})
"""Built-in losses of the replicate mean alone (no spread)."""


class LossError(SimstudyError, ValueError):
    """A set's loss cannot be computed: the message says why and what to fix."""


@dataclass(frozen=True)
class SetLoss:
    """A parameter set's loss, its standard error, and the loss of each target output."""

    loss: float
    loss_se: float | None
    target_losses: dict[str, float]
    loss_bias: float | None = None
    """How much the loss's expectation exceeds its limit at infinitely many replicates
    (`replicate_bias`); None where that is not known (a loss of the spread, a user loss)."""


def set_loss(
    partials: dict[str, Partial], kinds: dict[str, str], targets: Targets, param_id: str
) -> SetLoss:
    """Return a set's loss from its merged statistics, or raise LossError saying why not."""
    for target in targets.outputs:
        _check_target(target, partials, kinds, targets.source)
    losses = {
        target.output: _output_loss(target, partials[target.output], targets)
        for target in targets.outputs
    }
    total = float(sum(losses.values()))
    biases = [replicate_bias(t, partials[t.output], targets) for t in targets.outputs]
    bias = None if any(b is None for b in biases) else float(sum(b or 0.0 for b in biases))
    return SetLoss(total, _standard_error(partials, targets, param_id), losses, bias)


UNBIASED_LOSSES = frozenset({"mean_of_mse"})
"""Built-in losses whose expectation does not depend on the number of replicates."""


def replicate_bias(target: OutputTarget, partial: Partial, targets: Targets) -> float | None:
    """Return the leading term by which an output's loss of a mean of n replicates is high.

    The mean m of n replicates scatters around the true mean mu with variance s^2 / n, so
    a loss l(m) of it is, to second order, l(mu) + l''(mu) s^2 / (2 n) on average: a trial
    with more replicates looks better by construction. Subtracting this term (l'' taken
    numerically; for poisson it is o / m^2, about s^2 / (2 n m) near a fit) compares
    trials at different replicate counts like with like. None where the loss depends on the
    spread itself (gaussian_nll, an estimated dispersion) or is the user's.
    """
    if target.loss in UNBIASED_LOSSES:
        return 0.0
    fixed_size = target.loss == "negative_binomial" and targets.dispersion is not None
    if target.loss not in MEAN_ONLY_LOSSES and not fixed_size:
        return None
    mean, variance, count = _point_stats(partial, target)
    if np.any(count < 2):
        return None  # no spread to tell the scatter of the mean
    step = np.maximum(np.abs(mean) * 1e-3, 1e-6)

    # Central second difference: the built-in losses are smooth in the mean (their floors
    # matter only where the replicates are all 0, and then s^2 is 0 too).
    def at(mean_at: np.ndarray) -> np.ndarray:
        return point_losses(target.loss, target, mean_at, variance, count, targets.dispersion)

    curvature = (at(mean + step) - 2 * at(mean) + at(mean - step)) / step**2
    bias = np.sum(target.weight * 0.5 * curvature * variance / count)
    return float(bias) if math.isfinite(bias) else None


def point_losses(
    loss: str,
    target: OutputTarget,
    mean: np.ndarray,
    variance: np.ndarray,
    count: np.ndarray,
    dispersion: float | None,
) -> np.ndarray:
    """Return a built-in loss per observed point, (..., points), from the replicates' statistics."""
    observed = target.value
    if loss == "mse_of_mean":
        return (mean - observed) ** 2
    if loss == "mean_of_mse":
        # The mean over replicates of (x - o)^2 is (mean - o)^2 + their population variance.
        with np.errstate(invalid="ignore", divide="ignore"):
            spread = np.where(count > 1, variance * (count - 1) / count, 0.0)
        return (mean - observed) ** 2 + spread
    if loss == "gaussian_nll":
        sd = np.sqrt(np.maximum(variance, FLOOR**2))
        return 0.5 * math.log(2 * math.pi) + np.log(sd) + (observed - mean) ** 2 / (2 * sd**2)
    if loss == "poisson":
        return -_poisson_logpmf(observed, np.maximum(mean, FLOOR))
    if loss == "negative_binomial":
        size = dispersion if dispersion is not None else estimated_dispersion(mean, variance)
        return -_negative_binomial_logpmf(observed, np.maximum(mean, FLOOR), size)
    if loss == "binomial":
        assert target.denominator is not None  # load_targets requires it
        trials = target.denominator
        p = np.clip(mean / trials, FLOOR, 1 - FLOOR)
        log_choose = (
            special.gammaln(trials + 1)
            - special.gammaln(observed + 1)
            - special.gammaln(trials - observed + 1)
        )
        return -(log_choose + special.xlogy(observed, p) + special.xlog1py(trials - observed, -p))
    raise ValueError(f"unknown built-in loss {loss!r}")


def estimated_dispersion(mean: np.ndarray, variance: np.ndarray) -> np.ndarray | float:
    """Return the negative binomial size k of an output, pooled over its points (..., 1).

    Moment estimate: variance = mean + mean^2 / k at every point, so
    k = sum(mean^2) / sum(variance - mean); no overdispersion gives inf (Poisson).
    """
    excess = np.nansum(variance - mean, axis=-1, keepdims=True)
    squares = np.nansum(mean**2, axis=-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(excess > 0, squares / np.where(excess > 0, excess, 1.0), np.inf)


def _poisson_logpmf(observed: np.ndarray, rate: np.ndarray) -> np.ndarray:
    return special.xlogy(observed, rate) - rate - special.gammaln(observed + 1)


def _negative_binomial_logpmf(
    observed: np.ndarray, rate: np.ndarray, size: np.ndarray | float
) -> np.ndarray:
    size = np.asarray(size, dtype=np.float64)
    poisson = ~(size < POISSON_DISPERSION)
    k = np.where(poisson, 1.0, size)
    with np.errstate(invalid="ignore", divide="ignore"):
        nb = (
            special.gammaln(observed + k)
            - special.gammaln(k)
            - special.gammaln(observed + 1)
            + k * np.log(k / (k + rate))
            + special.xlogy(observed, rate / (k + rate))
        )
    return np.where(poisson, _poisson_logpmf(observed, rate), nb)


def _check_target(
    target: OutputTarget, partials: dict[str, Partial], kinds: dict[str, str], source: str
) -> None:
    name = target.output
    if name not in partials:
        raise LossError(
            f"targets: output {name!r} is not among the model's outputs "
            f"({', '.join(map(repr, sorted(partials))) or 'none'}); fix the output names in "
            f"{source} or the model"
        )
    kind = kinds.get(name, "scalar")
    if target.t is None and kind == "series":
        raise LossError(
            f"targets: output {name!r} is a series, but its target in {source} has no t; "
            "give the time point of every observed value"
        )
    if target.t is not None and kind == "scalar":
        raise LossError(
            f"targets: output {name!r} is a scalar, but its targets in {source} have a t; "
            "leave t empty for a scalar output"
        )
    length = partials[name].length
    beyond = target.points[target.points >= length]
    if len(beyond):
        raise LossError(
            f"targets: output {name!r} has {length} points (t = 0 to {length - 1}), but "
            f"{source} observes t = {int(beyond[0])}; drop those rows or lengthen the series"
        )
    missing = target.points[partials[name].count[target.points] == 0]
    if len(missing):
        where = f" at t = {int(missing[0])}" if target.t is not None else ""
        raise LossError(
            f"targets: output {name!r} has no value in any replicate{where} (NaN); the "
            "loss needs one"
        )


def _point_stats(partial: Partial, target: OutputTarget) -> Stats:
    points = target.points
    count = partial.count[points].astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        variance = np.where(count > 1, partial.m2[points] / np.maximum(count - 1, 1), np.nan)
    return partial.mean[points], variance, count


def _output_loss(target: OutputTarget, partial: Partial, targets: Targets) -> float:
    stats = _point_stats(partial, target)
    if target.loss in BUILTIN_LOSSES:
        per_point = point_losses(target.loss, target, *stats, targets.dispersion)
        value = float(np.sum(target.weight * per_point))
    else:
        values = partial.exact[:, target.points] if partial.exact is not None else None
        value = _user_loss(target, stats, values)
    if not math.isfinite(value):
        why = (
            "a replicate value is infinite, or the replicates have no spread; check the "
            "model's output or choose another loss"
            if target.loss in BUILTIN_LOSSES
            else f"returned by {target.loss} itself, from finite replicate values; check it"
        )
        raise LossError(
            f"targets: the {target.loss} loss of output {target.output!r} is {value} ({why})"
        )
    return value


def _user_loss(target: OutputTarget, stats: Stats, values: np.ndarray | None) -> float:
    mean, variance, count = stats
    summary = {"mean": mean, "std": np.sqrt(variance), "count": count, "values": values}
    observed = {
        "t": target.t,
        "value": target.value,
        "weight": target.weight,
        "denominator": target.denominator,
    }
    function = user_loss_function(target.loss)
    try:
        return float(function(summary, observed))
    except BaseException as exc:
        # As the runners do for a model: SystemExit or KeyboardInterrupt escaping into the
        # Dask worker ended it (three times, "KilledWorker"), naming neither loss nor error.
        what = "ran out of memory:" if isinstance(exc, MemoryError) else "raised"
        raise LossError(
            f"targets: loss {target.loss} of output {target.output!r} {what} "
            f"{type(exc).__name__}: {exc}"
        ) from exc


@functools.cache
def user_loss_function(reference: str) -> Callable[[dict[str, Any], dict[str, Any]], float]:
    """Return the function of a 'module:function' loss, or raise LossError naming it."""
    module_name, _, name = reference.partition(":")
    try:
        function = getattr(importlib.import_module(module_name), name)
    except (Exception, SystemExit) as exc:  # a module may fail, or exit, as it is imported
        raise LossError(
            f"targets.loss: cannot import {reference} ({type(exc).__name__}: {exc}); check "
            "the module is importable where the study runs"
        ) from exc
    if not callable(function):
        raise LossError(f"targets.loss: {reference} is not a function")
    return function


def _standard_error(partials: dict[str, Partial], targets: Targets, param_id: str) -> float | None:
    used = [partials[target.output] for target in targets.outputs]
    if targets.bootstrap == 0 or any(p.replicates < 2 for p in used):
        return None
    if all(p.exact is not None for p in used):
        return _bootstrap_se(partials, targets, param_id)
    if any(target.loss not in BUILTIN_LOSSES for target in targets.outputs):
        return None  # a user loss needs the values; past EXACT_REPLICATES they are gone
    return _delta_se(partials, targets)


def bootstrap_counts(replicates: int, resamples: int, seed: int, param_id: str) -> np.ndarray:
    """Return how often each replicate is drawn in each resample (resamples x replicates)."""
    key = int.from_bytes(hashlib.blake2b(param_id.encode(), digest_size=8).digest(), "little")
    rng = np.random.default_rng([seed, key])
    drawn = rng.integers(0, replicates, size=(resamples, replicates))
    offsets = (np.arange(resamples) * replicates)[:, None]
    flat = np.bincount((drawn + offsets).ravel(), minlength=resamples * replicates)
    return flat.reshape(resamples, replicates).astype(np.float64)


def _bootstrap_se(partials: dict[str, Partial], targets: Targets, param_id: str) -> float | None:
    # Replicates are resampled jointly across outputs (one set of counts), so the total's
    # spread includes the outputs' covariance. A resample's statistics are weighted sums of
    # the replicates: three matrix products, not a copy of the values per resample.
    counts: dict[int, np.ndarray] = {}
    total = np.zeros(targets.bootstrap)
    for target in targets.outputs:
        values = partials[target.output].values[:, target.points]
        n_rep = values.shape[0]
        if n_rep not in counts:
            counts[n_rep] = bootstrap_counts(n_rep, targets.bootstrap, targets.seed, param_id)
        weights = counts[n_rep]
        present = ~np.isnan(values)
        if present.all():  # the usual case: every resample has n_rep values at every point
            filled, n = values, np.full((1, values.shape[1]), float(n_rep))
        else:
            filled = np.where(present, values, 0.0)
            n = weights @ present
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = (weights @ filled) / n
            # Only the losses that use the spread pay for it (the others ignore `variance`).
            variance = (
                np.where(
                    n > 1, np.maximum(weights @ filled**2 - n * mean**2, 0.0) / (n - 1), np.nan
                )
                if target.loss not in MEAN_ONLY_LOSSES
                else mean
            )
        if target.loss in BUILTIN_LOSSES:
            per_point = point_losses(target.loss, target, mean, variance, n, targets.dispersion)
            total += np.sum(target.weight * per_point, axis=-1)
        else:
            drawn = [np.repeat(np.arange(n_rep), w.astype(np.int64)) for w in weights]
            n = np.broadcast_to(n, mean.shape)
            total += [
                _user_loss(target, (mean[b], variance[b], n[b]), values[drawn[b]])
                for b in range(targets.bootstrap)
            ]
    finite = total[np.isfinite(total)]
    return float(np.std(finite, ddof=1)) if len(finite) > 1 else None


def _delta_se(partials: dict[str, Partial], targets: Targets) -> float | None:
    # Beyond EXACT_REPLICATES the values are gone: the loss's sensitivity to each point's
    # mean times that mean's standard error, points taken as independent, the spread as
    # known (docs/guides/targets.md).
    variance_sum = 0.0
    for target in targets.outputs:
        mean, variance, count = _point_stats(partials[target.output], target)
        step = 1e-6 * np.maximum(1.0, np.abs(mean))
        up = point_losses(target.loss, target, mean + step, variance, count, targets.dispersion)
        down = point_losses(target.loss, target, mean - step, variance, count, targets.dispersion)
        slope = target.weight * (up - down) / (2 * step)
        variance_sum += float(np.nansum(slope**2 * variance / count))
    return math.sqrt(variance_sum) if math.isfinite(variance_sum) else None
