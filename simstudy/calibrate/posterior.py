"""A posterior's output folder: its prior from the study, its tables, its summary.

```
results/gamma-poisson/
  calibration.json          the study, its identity, status and final summary
  posterior.jsonl           the ABC-SMC journal: every proposal and outcome (resume from it)
  posterior.parquet         every generation's particles: weight, distance, epsilon, params
  posterior.json            per parameter: mean, sd, 2.5/50/97.5 % quantiles, ESS; per
                            generation: epsilon, acceptance rate, ESS, simulations
  posterior_failures.parquet  every proposal rejected without a distance, and why
  simulations/              _parts/ caches every finished replicate
```

```python
>>> from simstudy.calibrate.posterior import study_prior
```

Imports nothing from Prefect or Dask.
"""

from __future__ import annotations

import math
from itertools import combinations
from typing import Any

import numpy as np
import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field

from simstudy.calibrate.abc_smc import AbcSmc, Generation
from simstudy.calibrate.priors import Prior, PriorSpec
from simstudy.calibrate.spec import PosteriorSettings
from simstudy.display import format_number
from simstudy.errors import OutputDirError
from simstudy.output.location import OutputStore
from simstudy.output.reading import read_document
from simstudy.spec.sample import RangeBound, SampleDesign

POSTERIOR_JOURNAL = "posterior.jsonl"
POSTERIOR_TABLE = "posterior.parquet"
POSTERIOR_FILE = "posterior.json"
FAILURES_TABLE = "posterior_failures.parquet"
SHOWN_FAILURES = 5
"""Failure reasons posterior.json lists (every failure is in posterior_failures.parquet)."""


class PosteriorDocument(BaseModel):
    """What the readers of posterior.json use; the rest of the document is free."""

    model_config = ConfigDict(extra="allow")

    stop_reason: str | None = Field(default=None, description="Why the inference stopped.")
    simulations: int = Field(description="Simulations spent, failed ones included.")
    generations: list[dict[str, Any]] = Field(description="Each closed generation's figures.")
    failures: int = Field(default=0, description="Proposals rejected without a distance.")
    failure_reasons: list[str] = Field(default_factory=list, description="Some of their reasons.")
    parameters: dict[str, dict[str, float]] = Field(
        default_factory=dict, description="Per parameter: mean, sd, q2_5, q50, q97_5, ess."
    )
    correlations: dict[str, float] = Field(
        default_factory=dict, description='Weighted correlation of each pair, keyed "a/b".'
    )
    predictive: PredictiveSummary | None = Field(
        default=None, description="The posterior predictive draws and their coverage."
    )


class PredictiveSummary(BaseModel):
    """posterior.json's `predictive`: the draws and, per output, the 95 % band's coverage."""

    model_config = ConfigDict(extra="allow")

    draws: int = Field(description="Predictive replicates read.")
    outputs: dict[str, dict[str, float]] = Field(
        description="Per target output: its points and the share inside the 95 % band."
    )


def study_prior(sample: SampleDesign, settings: PosteriorSettings) -> Prior:
    """Return the prior over `sample.bounds`: uniform (log-uniform) unless `priors` says else."""
    specs = {}
    for name, bound in sample.bounds.items():
        assert isinstance(bound, RangeBound)  # checked by the study's validation
        given = settings.priors.get(name)
        specs[name] = given or PriorSpec(low=float(bound.low), high=float(bound.high),
                                         log=bound.log)  # fmt: skip
    return Prior(specs)


def posterior_plan(name: str, settings: PosteriorSettings) -> str:
    """Return what a posterior will do, for `simstudy validate`."""
    stops = [f"{settings.generations} generations"]
    if settings.epsilon is not None:
        stops.append(f"final epsilon {format_number(settings.epsilon)}")
    if settings.min_acceptance_rate:
        stops.append(f"acceptance rate below {settings.min_acceptance_rate}")
    if settings.max_simulations is not None:
        stops.append(f"{settings.max_simulations:,} simulations")
    return (
        f"{name}: posterior by ABC-SMC, {settings.population_size} particles per generation, "
        f"{settings.replicates} replicate(s) each, seed {settings.seed}; stops at the first of "
        f"{', '.join(stops)}; priors:"
    )


def posterior_table(driver: AbcSmc) -> pa.Table:
    """Return every closed generation's particles: one row each, with weight and distance."""
    generations = driver.generations
    columns: dict[str, list[Any]] = {
        "generation": [], "epsilon": [], "param_id": [], "weight": [], "distance": [],
    }  # fmt: skip
    values: dict[str, list[float]] = {name: [] for name in driver.prior.names}
    for generation in generations:
        size = len(generation.weights)
        columns["generation"] += [generation.number] * size
        epsilon = generation.epsilon if math.isfinite(generation.epsilon) else None
        columns["epsilon"] += [epsilon] * size
        columns["param_id"] += generation.param_ids
        columns["weight"] += generation.weights.tolist()
        columns["distance"] += generation.distances.tolist()
        for column, name in enumerate(driver.prior.names):
            values[name] += generation.particles[:, column].tolist()
    return pa.table({
        "generation": pa.array(columns["generation"], pa.int64()),
        "epsilon": pa.array(columns["epsilon"], pa.float64()),
        "param_id": pa.array(columns["param_id"], pa.string()),
        "weight": pa.array(columns["weight"], pa.float64()),
        "distance": pa.array(columns["distance"], pa.float64()),
        **{name: pa.array(column, pa.float64()) for name, column in values.items()},
    })  # fmt: skip


def failures_table(driver: AbcSmc) -> pa.Table:
    """Return every proposal rejected without a distance: generation, set, reason, params."""
    failures = driver.failures()
    return pa.table({
        "generation": pa.array([f.generation for f in failures], pa.int64()),
        "index": pa.array([f.index for f in failures], pa.int64()),
        "param_id": pa.array([f.param_id for f in failures], pa.string()),
        "reason": pa.array([f.reason for f in failures], pa.string()),
        **{name: pa.array([f.params.get(name) for f in failures], pa.float64())
           for name in driver.prior.names},
    })  # fmt: skip


def posterior_document(driver: AbcSmc) -> dict[str, Any]:
    """Return posterior.json: the final population's summary and every generation's figures."""
    failures = driver.failures()
    document: dict[str, Any] = {
        "stop_reason": driver.stop_reason,
        "simulations": driver.simulations(),
        "generations": [generation_summary(g) for g in driver.generations],
        "failures": len(failures),
        "failure_reasons": sorted({f.reason for f in failures})[:SHOWN_FAILURES],
        "priors": driver.prior.describe(),
        "parameters": {},
    }
    if driver.population is not None:
        document["parameters"] = {
            name: vars(summary) for name, summary in driver.posterior_summary().items()
        }
        population = driver.population
        document["correlations"] = weighted_correlations(
            {name: population.particles[:, i] for i, name in enumerate(driver.prior.names)},
            population.weights,
        )
    return document


def weighted_correlations(columns: dict[str, np.ndarray], weights: np.ndarray) -> dict[str, float]:
    """Return the weighted correlation of each pair of parameters, keyed "a/b"."""
    found = {}
    for a, b in combinations(columns, 2):
        covariance = np.cov(np.vstack([columns[a], columns[b]]), aweights=weights)
        scale = math.sqrt(covariance[0, 0] * covariance[1, 1])
        found[f"{a}/{b}"] = round(float(covariance[0, 1] / scale), 4) if scale > 0 else 0.0
    return found


def generation_summary(generation: Generation) -> dict[str, Any]:
    """Return one generation's figures: epsilon, proposals, acceptance, ESS, simulations."""
    return {
        "generation": generation.number,
        "epsilon": generation.epsilon if math.isfinite(generation.epsilon) else None,
        "proposals": generation.proposals, "failed": generation.failed,
        "acceptance_rate": generation.acceptance_rate, "ess": generation.ess,
        "simulations": generation.simulations,
    }  # fmt: skip


def interval_text(name: str, summary: dict[str, Any]) -> str:
    """Return one parameter's line: its mean, sd and 95 % interval."""
    return (
        f"{name} {format_number(summary['mean'])} (sd {format_number(summary['sd'])}, 95% "
        f"[{format_number(summary['q2_5'])}, {format_number(summary['q97_5'])}])"
    )


def read_posterior_document(store: OutputStore) -> dict[str, Any]:
    """Return posterior.json, checked to hold a summary; else raise naming the file."""
    return read_document(store, POSTERIOR_FILE, PosteriorDocument, "posterior")


def posterior_summary(store: OutputStore) -> str:
    """Return a finished posterior's summary from posterior.json, for the terminal."""
    if not store.exists(POSTERIOR_FILE):
        raise OutputDirError(f"{store} holds no posterior yet (no {POSTERIOR_FILE})")
    document = read_posterior_document(store)
    generations = document["generations"]
    lines = [
        f"posterior by ABC-SMC: {len(generations)} generation(s), "
        f"{document['simulations']:,} simulations, {document['failures']} rejected without "
        f"a distance; stopped: {document['stop_reason'] or 'not yet'}"
    ]
    if generations:
        last = generations[-1]
        lines.append(
            f"final population: epsilon {format_number(last['epsilon'])}, ESS "
            f"{last['ess']:.0f}, acceptance rate {last['acceptance_rate']:.3g}"
        )
    for name, summary in document["parameters"].items():
        lines.append("  " + interval_text(name, summary))
    correlated = document.get("correlations") or {}
    if correlated:
        lines.append("  weighted correlations: " + ", ".join(
            f"{pair} {value:+.2f}" for pair, value in correlated.items()
        ))  # fmt: skip
    for output, figures in ((document.get("predictive") or {}).get("outputs") or {}).items():
        lines.append(
            f"  predictive: {100 * figures['inside_95']:.0f} % of {figures['points']} observed "
            f"{output} value(s) inside the 95 % band"
        )
    for reason in document["failure_reasons"]:
        lines.append(f"  rejected: {reason}")
    return "\n".join(lines)
