"""Quantile sketches for `simstudy.stats.partial`: speed, size and accuracy (not a test).

    python -m benchmarks.sketch_accuracy [--centroids 100]

For each candidate installed (`fastdigest`, the one simstudy uses; `crick` and `ddsketch`
if present), builds the sketches of one partial (365 time points x 2,500 values), merges
two such partials, and reports the pickled size of a partial's sketches and the resident
memory of 36,500 sketches. Accuracy: 400 partials of 2,500 values (10^6 in all) merged
left to right, as aggregation does, against numpy on the pooled values, for a normal, a
lognormal and two Poisson distributions (ties), at quantiles 0.05, 0.5 and 0.95. The error
is in rank: the least eps with numpy's quantiles at q - eps and q + eps bracketing the
estimate, widened to the adjacent distinct value (with ties t-digest interpolates between
two values that numpy never does). Last, `Partial` itself: 40 partials of 2,500 x 365
merged, time and pickled size against the values it no longer keeps.
"""

from __future__ import annotations

import argparse
import copy
import gc
import importlib.util
import pickle
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import psutil

from simstudy.stats.partial import Partial, summarize

LENGTH, VALUES, PARTS = 365, 2_500, 400
QUANTILES = [0.05, 0.5, 0.95]


class Candidate:
    """A sketch library behind build, merge and quantile."""

    def __init__(
        self,
        build: Callable[[np.ndarray], Any],
        merge: Callable[[Any, Any], Any],
        quantile: Callable[[Any, float], float],
    ) -> None:
        self.build, self.merge, self.quantile = build, merge, quantile


def candidates(centroids: int) -> dict[str, Candidate]:
    """Return the installed candidates, configured as simstudy would."""
    found = {}
    if importlib.util.find_spec("fastdigest"):
        from fastdigest import TDigest

        def fastdigest_build(x: Any) -> Any:
            # fastdigest's stub says Sequence[float]; it takes numpy arrays too.
            return TDigest.from_values(x, max_centroids=centroids)

        found[f"fastdigest (max_centroids={centroids})"] = Candidate(
            fastdigest_build,
            lambda a, b: a.merge(b),
            lambda d, q: d.quantile(q),
        )
    if importlib.util.find_spec("crick"):
        import crick

        def crick_build(x: np.ndarray) -> Any:
            digest = crick.TDigest(centroids)
            digest.update(x)
            return digest

        def crick_merge(a: Any, b: Any) -> Any:
            digest = crick.TDigest(centroids)
            digest.merge(a, b)
            return digest

        found[f"crick (compression={centroids})"] = Candidate(
            crick_build, crick_merge, lambda d, q: float(d.quantile(q))
        )
    if importlib.util.find_spec("ddsketch"):
        from ddsketch import DDSketch

        def dd_build(x: np.ndarray) -> Any:
            sketch = DDSketch(0.01)
            for value in x.tolist():
                sketch.add(value)
            return sketch

        def dd_merge(a: Any, b: Any) -> Any:
            merged = copy.deepcopy(a)
            merged.merge(b)
            return merged

        found["ddsketch (relative accuracy 0.01)"] = Candidate(
            dd_build, dd_merge, lambda d, q: d.get_quantile_value(q)
        )
    return found


def rank_error(pooled: np.ndarray, estimate: float, q: float) -> float:
    """Return the least eps (to 1e-6) whose bracket, widened to adjacent values, holds it."""
    distinct = np.unique(pooled)

    def holds(eps: float) -> bool:
        low, high = np.quantile(pooled, [max(q - eps, 0.0), min(q + eps, 1.0)])
        below = distinct[max(np.searchsorted(distinct, low) - 1, 0)]
        above = distinct[min(np.searchsorted(distinct, high, "right"), len(distinct) - 1)]
        return bool(below <= estimate <= above)

    low, high = 0.0, 1.0
    while high - low > 1e-6:
        middle = (low + high) / 2
        low, high = (low, middle) if holds(middle) else (middle, high)
    return 0.0 if holds(0.0) else high


def speed_and_size(candidate: Candidate) -> str:
    """Time one partial's sketches and a merge of two; measure their size."""
    block = np.random.default_rng(1).lognormal(0, 1.5, (VALUES, LENGTH))
    start = time.perf_counter()
    first = [candidate.build(block[:, t]) for t in range(LENGTH)]
    built = time.perf_counter() - start
    second = [candidate.build(block[::-1, t]) for t in range(LENGTH)]
    start = time.perf_counter()
    merged = [candidate.merge(a, b) for a, b in zip(first, second, strict=True)]
    merging = time.perf_counter() - start
    pickled = len(pickle.dumps(merged, protocol=pickle.HIGHEST_PROTOCOL))
    gc.collect()
    before = psutil.Process().memory_info().rss
    many = [candidate.merge(a, b) for _ in range(50) for a, b in zip(first, second, strict=True)]
    resident = (psutil.Process().memory_info().rss - before) / len(many)
    del many
    return (
        f"build 365 x 2,500 {built * 1e3:.0f} ms, merge 365 {merging * 1e3:.1f} ms, "
        f"pickled {pickled / 1e3:.0f} kB per partial ({pickled / LENGTH / 1e3:.2f} kB a "
        f"sketch), resident ~{resident / 1e3:.1f} kB a sketch"
    )


def accuracy(candidate: Candidate) -> list[str]:
    """Return the worst rank error per distribution over 10^6 values in 400 merges."""
    rng = np.random.default_rng(2)
    draws: dict[str, Callable[[], np.ndarray]] = {
        "normal(5, 2)": lambda: rng.normal(5, 2, VALUES),
        "lognormal(0, 1.5)": lambda: rng.lognormal(0, 1.5, VALUES),
        "poisson(3)": lambda: rng.poisson(3, VALUES).astype(float),
        "poisson(30)": lambda: rng.poisson(30, VALUES).astype(float),
    }
    lines = []
    for name, draw in draws.items():
        parts = [draw() for _ in range(PARTS)]
        sketch = candidate.build(parts[0])
        for part in parts[1:]:
            sketch = candidate.merge(sketch, candidate.build(part))
        pooled = np.sort(np.concatenate(parts))
        errors = [rank_error(pooled, candidate.quantile(sketch, q), q) for q in QUANTILES]
        lines.append(f"  {name:18s} rank error " + "  ".join(f"{e:.4f}" for e in errors))
    return lines


def partials() -> str:
    """Time and size a fold of 40 `Partial`s of 2,500 x 365 through the real code."""
    rng = np.random.default_rng(3)
    blocks = [rng.poisson(30, (VALUES, LENGTH)).astype(float) for _ in range(40)]
    start = time.perf_counter()
    merged = Partial.from_values(blocks[0])
    for block in blocks[1:]:
        merged = merged.merge(Partial.from_values(block))
    summarize(merged, QUANTILES)
    elapsed = time.perf_counter() - start
    size = len(pickle.dumps(merged, protocol=pickle.HIGHEST_PROTOCOL))
    kept = merged.replicates * LENGTH * 8
    return (
        f"Partial: 40 x (2,500 x 365) from_values + merge + summarize {elapsed:.2f} s, "
        f"pickled {size / 1e3:.0f} kB (the values would be {kept / 1e6:.0f} MB)"
    )


def main() -> None:
    """Print the measurements of every installed candidate."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--centroids", type=int, default=100)
    args = parser.parse_args()
    for name, candidate in candidates(args.centroids).items():
        print(name)
        print("  " + speed_and_size(candidate), flush=True)
        print("\n".join(accuracy(candidate)), flush=True)
    print(partials())


if __name__ == "__main__":
    main()
