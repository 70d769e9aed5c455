"""ABC-SMC posterior inference as a driver of the engine: populations of weighted particles.

```python
>>> from simstudy.calibrate.abc_smc import AbcSmc, AbcSmcSettings
>>> AbcSmcSettings(population_size=500, epsilon=0.0, seed=7).epsilon_quantile
0.5
```

Approximate Bayesian computation by sequential Monte Carlo (Beaumont et al. 2009, Toni et
al. 2009). Generation 0 draws parameter sets from the prior and accepts the first
`population_size` that run; generation t > 0 draws a particle of generation t - 1 by weight,
perturbs it with a normal kernel (covariance `kernel_scale` x the population's weighted
covariance) and accepts it when its distance (by default the set's loss against the
targets) is at most epsilon_t, the `epsilon_quantile` of generation t - 1's distances. An
accepted particle weighs prior(theta) / sum_j w_j K(theta | theta_j). A draw outside the
prior's support is drawn again whole, particle and step: the proposal is then the kernel
mixture cut to the support, whose normaliser is one constant, so the weight stays exact.
(Weighting by each kernel's own mass in the support, as if only the step were drawn
again, biased a two-parameter posterior mean by about 1 %, measured.) With epsilon 0 and
a sufficient distance the last population samples the exact posterior.

Every proposal, outcome and generation is a line of an append-only JSONL journal, and the
result does not depend on timing or cluster size:

- proposal i of generation t draws from its own stream, seeded by (seed, t, i), so it is
  the same whenever and wherever it is made; it is written and flushed to the journal
  before its set goes to the engine;
- a generation is the first `population_size` accepted proposals *by index*, not by
  arrival: it closes once every proposal before its N-th acceptance has an outcome. Taking
  the first to arrive would favour parameters that run fast (pyABC's dynamic scheduling
  avoids the bias the same way, Klinger et al. 2018);
- so that the last acceptances do not idle the cluster, proposals continue (up to the
  engine's capacity plus a little) while earlier ones are out and fewer than N are
  accepted; those beyond the N-th acceptance are recorded and unused;
- a driver built over an existing journal replays it and goes on; proposals without an
  outcome are submitted again (same parameters: same param_id, same replicate seeds). A
  seeded run killed at any point and resumed ends with the population of a run that was
  not killed.

A set that fails, or whose distance is missing or NaN, is a rejection, recorded in the
journal with its parameters and reason and counted per generation. This conditions the
posterior on the simulation succeeding: where failures depend on the parameters, the
posterior is p(theta | distance <= epsilon, success), biased away from the regions that
fail; check `Generation.failed` and `failures()` before reading it as p(theta | data).

Imports nothing from Prefect or Dask.
"""

from __future__ import annotations

import bisect
import json
import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import scipy.special

from simstudy.calibrate.priors import Prior
from simstudy.calibrate.spec import RESUMABLE_SETTINGS, AbcSmcSettings
from simstudy.design.expand import ParameterSet
from simstudy.design.identity import param_id
from simstudy.design.sampling import round_significant
from simstudy.run.engine import Engine, SetOutcome

JOURNAL_FORMAT = "abc-smc/1"
"""The first line of a journal names its format, so another file is refused, not replayed."""
PROPOSAL_STREAM = 0
"""Spawn-key tag of the proposals' random streams (a first word, so other streams can come)."""
SETS_PER_THREAD = 8
"""Sets in flight per worker thread of the engine, unless `parallel` says otherwise: cheap
simulations are then grouped into runs of several (one task run each had ~15 ms of
overhead per simulation, measured), and an idle worker waits for no round trip."""
OVER_PROPOSAL = 0.25
"""Sets in flight beyond that, as a fraction of it (at least one)."""
MAX_REDRAWS = 10_000
"""Draws of one proposal before giving up: the kernel has almost no mass in the support."""
CHUNK_ROWS = 256
"""Particles per block of the kernel density: memory is CHUNK_ROWS x population x d."""


@dataclass(frozen=True, eq=False)
class Generation:
    """A closed generation: its population (the first N accepted proposals by index)."""

    number: int
    epsilon: float
    """The threshold its particles met (inf for generation 0: the prior, unfiltered)."""
    particles: np.ndarray
    """N x d, one column per parameter in the prior's order."""
    weights: np.ndarray
    """Normalised importance weights."""
    distances: np.ndarray
    param_ids: list[str]
    proposals: int
    """Proposals up to the N-th acceptance, which the acceptance rate is over."""
    failed: int
    """Of those, the sets that failed or had no distance (rejected)."""
    simulations: int
    """Replicates spent on the generation's proposals when it closed, over-proposals included."""

    @property
    def acceptance_rate(self) -> float:
        """Return the accepted share of the proposals up to the N-th acceptance."""
        return len(self.weights) / self.proposals

    @cached_property
    def param_id_set(self) -> frozenset[str]:
        """Return the population's sets, for membership tests."""
        return frozenset(self.param_ids)

    @property
    def ess(self) -> float:
        """Return the effective sample size of the weights, 1 / sum(w^2)."""
        return float(1.0 / np.sum(self.weights**2))


@dataclass(frozen=True)
class ParameterSummary:
    """One parameter's weighted posterior summary."""

    mean: float
    sd: float
    q2_5: float
    q50: float
    q97_5: float
    ess: float


@dataclass(frozen=True)
class Failure:
    """A proposal rejected without a distance: its set failed, or its loss was None or NaN."""

    generation: int
    index: int
    param_id: str
    params: dict[str, float]
    reason: str


@dataclass
class _Proposal:
    generation: int
    index: int
    number: int
    """Its place among the proposals of every generation: its set's index."""
    param_id: str
    theta: np.ndarray
    params: dict[str, float]
    """The values of theta by name, as the set has them."""
    decided: bool = False
    accepted: bool = False
    distance: float | None = None


@dataclass(frozen=True)
class _Kernel:
    """The perturbation of generation t: from generation t - 1's particles."""

    particles: np.ndarray
    cumulative_weights: np.ndarray
    cholesky: np.ndarray
    log_weights: np.ndarray


@dataclass
class _Round:
    """The generation being sampled: proposals by index, and how far they are decided."""

    number: int
    epsilon: float
    kernel: _Kernel | None
    proposals: list[_Proposal] = field(default_factory=list)
    scan: int = 0
    """Proposals 0..scan-1 all have outcomes."""
    prefix_accepted: list[int] = field(default_factory=list)
    prefix_failed: int = 0
    accepted: list[int] = field(default_factory=list)
    """Accepted indices, any decided proposal, sorted."""
    accepted_ids: set[str] = field(default_factory=set)
    """The sets of those: each may still enter the population."""
    decided: int = 0
    simulations: int = 0

    def advance(self, size: int) -> None:
        """Move the scan over decided proposals, up to the size-th acceptance."""
        while len(self.prefix_accepted) < size and self.scan < len(self.proposals):
            proposal = self.proposals[self.scan]
            if not proposal.decided:
                return
            if proposal.accepted:
                self.prefix_accepted.append(self.scan)
            elif proposal.distance is None:
                self.prefix_failed += 1
            self.scan += 1

    def last_useful(self, size: int) -> float:
        """Return the highest index that may still enter the population."""
        return self.accepted[size - 1] if len(self.accepted) >= size else math.inf


class _Journal:
    """The append-only JSONL journal: read once, then lines appended and flushed."""

    def __init__(self, path: Path):
        self.path = path
        self._buffer: list[str] = []

    def read(self) -> list[dict[str, Any]]:
        """Return the journal's lines (a torn last line, a kill's, is cut off)."""
        if not self.path.exists():
            return []
        data = self.path.read_bytes()
        lines = data.split(b"\n")
        complete = lines[:-1]  # the last piece ends without a newline: torn (or empty)
        if lines[-1].strip():
            with self.path.open("rb+") as handle:
                handle.truncate(len(data) - len(lines[-1]))
        records = []
        for number, line in enumerate(complete, start=1):
            if not line.strip():
                continue
            try:
                records.append(json.loads(line))
            except ValueError as exc:
                raise ValueError(f"{self.path}, line {number}: not JSON ({exc})") from exc
        return records

    def write(self, record: dict[str, Any]) -> None:
        """Queue a line; `flush` writes it."""
        self._buffer.append(json.dumps(record, separators=(",", ":")) + "\n")

    def flush(self, sync: bool = False) -> None:
        """Append the queued lines and flush them to the operating system (sync: to disk)."""
        if not self._buffer:
            return
        # os-level: a journal is written after nearly every outcome, and Python's buffered
        # open() took four times as long (measured). One write() per flush, O_APPEND: a kill
        # leaves at most a torn last line, which `read` cuts off.
        descriptor = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(descriptor, "".join(self._buffer).encode())
            # A killed process loses nothing written; a machine crash may lose the unsynced
            # tail, which costs nothing but time: lost proposals are drawn again identically
            # (their streams are seeded), lost outcomes are simulated again (same seeds).
            if sync:
                os.fsync(descriptor)
        finally:
            os.close(descriptor)
        self._buffer.clear()


def default_distance(outcome: SetOutcome) -> float | None:
    """Return the distance of an outcome: its loss against the study's targets."""
    return outcome.loss


class AbcSmc:
    """ABC-SMC as a driver of an engine (see the module's docstring).

    Args:
        settings: population size, epsilon schedule, kernel, stopping rules, seed.
        prior: the parameters' priors; their names are the parameters the sets vary.
        journal: the append-only JSONL journal; an existing one is replayed and continued.
        fixed: the study's fixed parameters (every set has them too).
        distance: a set's distance from its outcome (default: its loss).

    Examples:
        >>> from simstudy.calibrate.priors import Prior
        >>> driver = AbcSmc(AbcSmcSettings(seed=1), Prior.from_mapping({"beta": [0, 1]}),
        ...                 tmp_path / "abc.jsonl")  # doctest: +SKIP
        >>> engine.run(driver); driver.posterior_summary()["beta"].mean  # doctest: +SKIP
    """

    def __init__(
        self,
        settings: AbcSmcSettings,
        prior: Prior,
        journal: Path,
        fixed: Mapping[str, Any] | None = None,
        distance: Callable[[SetOutcome], float | None] = default_distance,
    ):
        if settings.seed is None:
            raise ValueError("settings.seed is None: give the seed (the study's, by default)")
        self.settings = settings
        self.prior = prior
        self.fixed = dict(fixed or {})
        overlap = sorted(set(self.fixed) & set(prior.names))
        if overlap:
            raise ValueError(f"parameters {overlap} are both fixed and given a prior: give one")
        self.generations: list[Generation] = []
        self.stop_reason: str | None = None
        self._seed: int = settings.seed
        self._distance = distance
        self._journal = _Journal(journal)
        self._engine: Engine | None = None
        self._replaying = True
        self._round = _Round(number=0, epsilon=math.inf, kernel=None)
        self._numbered = 0  # proposals so far, every generation: a set's index
        self._pending: dict[str, list[_Proposal]] = {}  # param_id -> proposals awaiting it
        self._known: dict[str, tuple[float | None, str | None]] = {}  # decided sets
        self._running: dict[str, int] = {}  # param_id -> generation, submitted to this engine
        self._to_close: list[str] = []
        self._failures: list[Failure] = []
        self._simulations = 0
        self._has_header = False
        self._replay(self._journal.read())
        self._replaying = False

    # The driver protocol.

    def start(self, engine: Engine) -> None:
        """Submit again the useful proposals a kill left without outcome, then propose more."""
        self._engine = engine
        if not self._has_header:
            self._journal.write(self._header())
            self._has_header = True
        self._check_stop()
        if self.stop_reason is None:
            useful = self._round.last_useful(self.settings.population_size)
            again = {
                p.param_id: p for p in reversed(self._round.proposals)
                if not p.decided and p.index < useful and p.param_id not in self._running
            }  # fmt: skip
            self._submit(sorted(again.values(), key=lambda p: p.index))
        self._fill()

    def on_outcomes(self, engine: Engine, outcomes: list[SetOutcome]) -> None:
        """Record each outcome, close generations it completes, and propose more."""
        self._engine = engine
        for outcome in outcomes:
            self._running.pop(outcome.param_id, None)
            if outcome.param_id not in self._pending:
                continue  # not a set of this driver, or one already decided
            distance, reason = self._decision(outcome)
            first = self._pending[outcome.param_id][0]
            line = {
                "kind": "outcome", "param_id": outcome.param_id, "generation": first.generation,
                "index": first.index, "status": outcome.status,
                "replicates": outcome.replicates, "distance": distance, "reason": reason,
            }  # fmt: skip
            if reason is not None:
                line["params"] = first.params
            self._journal.write(line)
            self._take(outcome.param_id, outcome.replicates, distance, reason)
            self._to_close.append(outcome.param_id)
        self._fill()  # flushes the journal, outcomes and new proposals, before submitting
        for pid in self._to_close:
            engine.close(pid)  # no set is extended: the engine may forget its statistics
        self._to_close.clear()

    def finished(self) -> bool:
        """Return whether a stopping rule has ended the inference."""
        return self.stop_reason is not None

    # Reading the result.

    @property
    def population(self) -> Generation | None:
        """Return the last closed generation: the posterior sample (None before the first)."""
        return self.generations[-1] if self.generations else None

    def posterior_summary(self) -> dict[str, ParameterSummary]:
        """Return each parameter's weighted mean, sd, 2.5/50/97.5 % quantiles and ESS."""
        population = self.population
        if population is None:
            raise ValueError("no generation has closed yet: there is no posterior sample")
        weights = population.weights
        ess = population.ess
        summaries = {}
        for column, name in enumerate(self.prior.names):
            values = population.particles[:, column]
            mean = float(np.sum(weights * values))
            sd = float(np.sqrt(np.sum(weights * (values - mean) ** 2)))
            low, median, high = weighted_quantiles(values, weights, [0.025, 0.5, 0.975])
            summaries[name] = ParameterSummary(mean, sd, low, median, high, ess)
        return summaries

    def may_use(self, param_id: str) -> bool:
        """Return whether a set is, or may still enter, the last population (keep it open)."""
        population = self.population
        in_population = population is not None and param_id in population.param_id_set
        return in_population or (self.stop_reason is None and param_id in self._round.accepted_ids)

    def population_sets(self) -> list[ParameterSet]:
        """Return the last population's sets (fixed parameters included), in its order."""
        population = self.population
        if population is None:
            return []
        return [
            ParameterSet(param_id=pid, index=index, params={**self.fixed, **self._params(theta)})
            for index, (pid, theta) in enumerate(
                zip(population.param_ids, population.particles, strict=True)
            )
        ]

    def simulations(self) -> int:
        """Return the replicates spent so far (every outcome recorded, failed ones included)."""
        return self._simulations

    def failures(self) -> list[Failure]:
        """Return every proposal rejected for a failed set or a missing or NaN distance."""
        return list(self._failures)

    # Replaying the journal.

    def _replay(self, lines: list[dict[str, Any]]) -> None:
        if not lines:
            return
        self._check_header(lines[0])
        self._has_header = True
        for number, line in enumerate(lines[1:], start=2):
            kind = line.get("kind")
            if kind == "proposal":
                expected = (self._round.number, len(self._round.proposals))
                if (line["generation"], line["index"]) != expected:
                    raise ValueError(
                        f"{self._journal.path}, line {number}: proposal {line['index']} of "
                        f"generation {line['generation']}, expected proposal {expected[1]} of "
                        f"generation {expected[0]}: the journal is not this driver's record"
                    )
                theta = np.array([line["params"][name] for name in self.prior.names], float)
                self._record_proposal(theta, line["param_id"])
            elif kind == "outcome" and line["param_id"] in self._pending:
                self._take(line["param_id"], line["replicates"], line["distance"], line["reason"])
            # "generation" and "stop" lines are for readers: replaying recomputes both.

    def _header(self) -> dict[str, Any]:
        return {
            "kind": JOURNAL_FORMAT, "settings": self.settings.model_dump(mode="json"),
            "prior": self.prior.describe(), "fixed": self.fixed,
        }  # fmt: skip

    def _check_header(self, line: dict[str, Any]) -> None:
        where = self._journal.path
        if line.get("kind") != JOURNAL_FORMAT:
            raise ValueError(f"{where}: not an ABC-SMC journal (its first line is not its header)")
        ours = json.loads(json.dumps(self._header()))
        differences = [
            f"{key} {line['settings'].get(key)!r} (now {value!r})"
            for key, value in ours["settings"].items()
            if key not in RESUMABLE_SETTINGS and line["settings"].get(key) != value
        ]
        differences += [
            f"{part} {line.get(part)!r} (now {ours[part]!r})"
            for part in ("prior", "fixed")
            if line.get(part) != ours[part]
        ]
        if differences:
            raise ValueError(
                f"{where} was started with {'; '.join(differences)}: a resumed run needs the "
                f"same settings but {', '.join(RESUMABLE_SETTINGS)}; restore them, or start "
                "a new journal"
            )

    # Inner steps, the same when live and when replaying.

    def _record_proposal(self, theta: np.ndarray, pid: str) -> _Proposal:
        """Add the next proposal of the round; a set already decided decides it at once."""
        round_ = self._round
        proposal = _Proposal(
            round_.number, len(round_.proposals), self._numbered, pid, theta, self._params(theta)
        )
        round_.proposals.append(proposal)
        self._numbered += 1
        self._pending.setdefault(pid, []).append(proposal)
        if pid in self._known:  # the same parameters again: the same seeds, the same outcome
            self._take(pid, 0, *self._known[pid])
        return proposal

    def _take(self, pid: str, replicates: int, distance: float | None, reason: str | None) -> None:
        """Decide the proposals awaiting a set's outcome, then close and stop as they allow."""
        self._known[pid] = (distance, reason)
        self._simulations += replicates
        for proposal in self._pending.pop(pid, []):
            proposal.decided = True
            proposal.distance = distance
            if reason is not None:
                self._failures.append(
                    Failure(proposal.generation, proposal.index, pid,
                            proposal.params, reason)
                )  # fmt: skip
            if proposal.generation != self._round.number or self.stop_reason is not None:
                continue  # a straggler, or after the end: recorded, not used
            round_ = self._round
            round_.simulations += replicates
            round_.decided += 1
            replicates = 0  # a set's replicates count once, for its first proposal
            if distance is not None and reason is None and distance <= round_.epsilon:
                proposal.accepted = True
                bisect.insort(round_.accepted, proposal.index)
                round_.accepted_ids.add(pid)
            round_.advance(self.settings.population_size)
            if len(round_.prefix_accepted) >= self.settings.population_size:
                self._close_round()
        self._check_stop()

    def _close_round(self) -> None:
        round_ = self._round
        size = self.settings.population_size
        chosen = [round_.proposals[i] for i in round_.prefix_accepted[:size]]
        particles = np.array([p.theta for p in chosen])
        distances = np.array([p.distance for p in chosen], dtype=float)
        if round_.kernel is None:
            weights = np.full(size, 1.0 / size)
        else:
            weights = importance_weights(particles, self.prior, round_.kernel)
        generation = Generation(
            number=round_.number, epsilon=round_.epsilon, particles=particles, weights=weights,
            distances=distances, param_ids=[p.param_id for p in chosen],
            proposals=round_.prefix_accepted[size - 1] + 1, failed=round_.prefix_failed,
            simulations=round_.simulations,
        )  # fmt: skip
        self.generations.append(generation)
        if not self._replaying:
            self._journal.write(generation_line(generation))
            self._journal.flush(sync=True)
        final = self.settings.epsilon
        if final is not None and generation.epsilon <= final:
            self._stop(f"epsilon {final} reached in generation {generation.number}")
        elif generation.acceptance_rate < self.settings.min_acceptance_rate:
            self._stop(
                f"acceptance rate {generation.acceptance_rate:.3g} of generation "
                f"{generation.number} below min_acceptance_rate {self.settings.min_acceptance_rate}"
            )
        elif generation.number + 1 >= self.settings.generations:
            self._stop(f"{self.settings.generations} generations")
        else:
            self._round = _Round(
                number=generation.number + 1,
                epsilon=next_epsilon(generation, self.settings),
                kernel=self._kernel(generation),
            )

    def _check_stop(self) -> None:
        """Stop on the budget, or on a generation whose acceptance can no longer suffice."""
        if self.stop_reason is not None:
            return
        settings, round_ = self.settings, self._round
        budget = settings.max_simulations
        if budget is not None and self._simulations >= budget:
            self._stop(f"budget of {budget:,} simulations spent ({self._simulations:,})")
            return
        missing = settings.population_size - len(round_.prefix_accepted)
        if round_.scan + missing > self._max_proposals():
            self._stop(
                f"acceptance rate of generation {round_.number} fell below "
                f"min_acceptance_rate {settings.min_acceptance_rate}"
            )
        elif round_.scan >= settings.population_size and round_.prefix_failed == round_.scan:
            last = self._failures[-1].reason if self._failures else "no distance"
            self._stop(
                f"the first {round_.scan} simulations of generation {round_.number} all "
                f"failed (the last: {last})"
            )

    def _stop(self, reason: str) -> None:
        self.stop_reason = reason
        if not self._replaying:
            self._journal.write({"kind": "stop", "reason": reason})

    def _max_proposals(self) -> float:
        """Return the most proposals a generation may use and still meet min_acceptance_rate."""
        rate = self.settings.min_acceptance_rate
        if rate <= 0:
            return math.inf
        return math.floor(self.settings.population_size / rate + 1e-9)

    def _kernel(self, generation: Generation) -> _Kernel:
        scaled = self.settings.kernel_scale * weighted_covariance(
            generation.particles, generation.weights
        )
        cholesky = safe_cholesky(scaled, generation.particles)
        with np.errstate(divide="ignore"):  # a particle at prior density 0 weighs 0
            log_weights = np.log(generation.weights)
        return _Kernel(generation.particles, np.cumsum(generation.weights), cholesky, log_weights)

    # Live only: proposing and submitting.

    def _fill(self) -> None:
        """Propose while the engine has room and more proposals can still matter."""
        while self.stop_reason is None and self._engine is not None:
            count = self._room()
            if count <= 0:
                break
            round_ = self._round
            first = len(round_.proposals)
            thetas = self._draw(round_, range(first, first + count))
            new: list[_Proposal] = []
            for theta in thetas:
                params = self._params(theta)
                pid = param_id({**self.fixed, **params})
                self._journal.write(
                    {"kind": "proposal", "generation": round_.number,
                     "index": len(round_.proposals), "number": self._numbered,
                     "param_id": pid, "params": params}
                )  # fmt: skip
                proposal = self._record_proposal(theta, pid)
                if not proposal.decided and pid not in self._running:
                    new.append(proposal)
                if self._round is not round_ or self.stop_reason is not None:
                    break  # a repeated set's known outcome closed the generation
            self._submit(new)
        self._journal.flush()  # what is recorded goes to disk even when nothing is proposed

    def _room(self) -> int:
        """Return how many proposals to add now: capacity, need, budget and rate allowing."""
        assert self._engine is not None
        settings, round_ = self.settings, self._round
        size = settings.population_size
        if len(round_.accepted) >= size:
            return 0  # a proposal after the N-th acceptance cannot enter the population
        threads = max(self._engine.capacity(), 0)  # re-read: the cluster may grow
        capacity = settings.parallel or SETS_PER_THREAD * threads
        over = max(1, math.ceil(OVER_PROPOSAL * capacity))
        room = capacity + over - len(self._running)
        # Expected need: the missing acceptances at this generation's rate so far (optimistic
        # while little is decided), plus the same margin for sets still out before them.
        in_flight = sum(generation == round_.number for generation in self._running.values())
        rate = (len(round_.accepted) + 1) / (round_.decided + 1)
        need = math.ceil((size - len(round_.accepted)) / rate) + over - in_flight
        room = min(room, need)
        limit = self._max_proposals()
        if limit < math.inf:
            room = min(room, int(limit) - len(round_.proposals))
        if settings.max_simulations is not None:
            left = settings.max_simulations - self._simulations
            left -= len(self._running) * settings.replicates
            room = min(room, math.ceil(left / settings.replicates))
        return room

    def _draw(self, round_: _Round, indices: range) -> list[np.ndarray]:
        """Return the parameters of proposals `indices`: each from its own seeded stream."""
        streams = [
            np.random.default_rng(
                np.random.SeedSequence(
                    self._seed, spawn_key=(PROPOSAL_STREAM, round_.number, index)
                )
            )
            for index in indices
        ]
        return [self._candidate(round_, rng) for rng in streams]

    def _candidate(self, round_: _Round, rng: np.random.Generator) -> np.ndarray:
        """Return a draw within the prior's support: from the prior, or a perturbed particle.

        The support is the box of the parameters' supports; outside it the whole draw is
        made again (see the module's docstring). A draw inside it at prior density 0 is kept
        and weighs 0 (exact importance sampling still); checking the density here would cost
        scipy's per-call overhead, which dominated the driver's time, measured.
        """
        kernel = round_.kernel
        lows, highs = self.prior.low.tolist(), self.prior.high.tolist()
        for _ in range(MAX_REDRAWS):
            if kernel is None:
                theta = round_significant(self.prior.sample(rng, 1)[0])
            else:
                cumulative = kernel.cumulative_weights
                pick = np.searchsorted(cumulative, rng.random() * cumulative[-1], side="right")
                centre = kernel.particles[min(int(pick), len(cumulative) - 1)]
                step = kernel.cholesky @ rng.standard_normal(len(centre))
                theta = round_significant(centre + step)
            values = theta.tolist()  # plain floats: 3x faster than numpy arrays here (measured)
            if all(lo <= v <= hi for lo, v, hi in zip(lows, values, highs, strict=True)):
                return theta
        raise RuntimeError(too_many_redraws(round_.number))

    def _submit(self, proposals: Sequence[_Proposal]) -> None:
        """Flush the journal, then give the engine the proposals' sets."""
        self._journal.flush()  # recorded before it runs: a kill leaves no unrecorded set
        if not proposals:
            return
        assert self._engine is not None
        sets = []
        for proposal in proposals:
            params = {**self.fixed, **proposal.params}
            sets.append(ParameterSet(param_id=proposal.param_id, index=proposal.number,
                                     params=params))  # fmt: skip
            self._running[proposal.param_id] = proposal.generation
        self._engine.add_sets(sets, self.settings.replicates)

    def _decision(self, outcome: SetOutcome) -> tuple[float | None, str | None]:
        """Return an outcome's distance, or None and why it is a rejection without one."""
        if outcome.status != "ok":
            return None, "failed: " + ("; ".join(outcome.reasons) or "no reason given")
        distance = self._distance(outcome)
        if distance is None:
            return None, "no distance (the set has no loss)"
        if math.isnan(distance):
            return None, "distance is NaN"
        return float(distance), None

    def _params(self, theta: np.ndarray) -> dict[str, float]:
        return {name: float(value) for name, value in zip(self.prior.names, theta, strict=True)}


def importance_weights(particles: np.ndarray, prior: Prior, kernel: _Kernel) -> np.ndarray:
    """Return normalised weights prior(theta) / sum_j w_j K(theta | theta_j)."""
    inverse = np.linalg.inv(kernel.cholesky)
    dimension = particles.shape[1]
    log_norm = np.sum(np.log(np.diag(kernel.cholesky))) + 0.5 * dimension * math.log(2 * math.pi)
    log_proposal = np.empty(len(particles))
    for start in range(0, len(particles), CHUNK_ROWS):
        block = particles[start : start + CHUNK_ROWS]
        standardised = (block[:, None, :] - kernel.particles[None, :, :]) @ inverse.T
        log_kernel = -0.5 * np.sum(standardised**2, axis=2) - log_norm
        log_proposal[start : start + CHUNK_ROWS] = scipy.special.logsumexp(
            log_kernel + kernel.log_weights[None, :], axis=1
        )
    log_weights = prior.logpdf(particles) - log_proposal
    weights = np.exp(log_weights - np.max(log_weights))
    return weights / np.sum(weights)


def weighted_covariance(particles: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Return the weighted covariance of the particles (d x d)."""
    return np.atleast_2d(np.cov(particles, rowvar=False, aweights=weights, bias=True))


def safe_cholesky(covariance: np.ndarray, particles: np.ndarray) -> np.ndarray:
    """Return the Cholesky factor, with a little jitter when the particles are degenerate."""
    # Collapsed particles (a parameter the data pin exactly) give a singular covariance: a
    # jitter relative to the values keeps the kernel moving without changing it otherwise.
    scale = max(float(np.max(np.abs(particles))), 1.0) * 1e-6
    jitter = 0.0
    for _ in range(20):
        try:
            return np.linalg.cholesky(covariance + jitter * np.eye(len(covariance)))
        except np.linalg.LinAlgError:
            jitter = scale**2 if jitter == 0 else jitter * 10
    raise np.linalg.LinAlgError("the kernel covariance is not positive definite")


def next_epsilon(generation: Generation, settings: AbcSmcSettings) -> float:
    """Return the epsilon of the generation after `generation`: a quantile, shrinking."""
    distances = generation.distances
    epsilon = weighted_quantiles(distances, generation.weights, [settings.epsilon_quantile])[0]
    epsilon = float(distances[distances <= epsilon].max())  # an attained distance
    if epsilon >= generation.epsilon:
        # Ties (integer distances) can make the quantile the epsilon itself, forever: take
        # the next distance below it instead.
        below = distances[distances < generation.epsilon]
        epsilon = float(below.max()) if len(below) else generation.epsilon
    return epsilon if settings.epsilon is None else max(epsilon, settings.epsilon)


def weighted_quantiles(values: np.ndarray, weights: np.ndarray, levels: list[float]) -> list[float]:
    """Return weighted quantiles, interpolated between the weights' midpoints."""
    order = np.argsort(values, kind="stable")
    ordered, mass = values[order], weights[order]
    midpoints = (np.cumsum(mass) - 0.5 * mass) / np.sum(mass)
    return [float(np.interp(level, midpoints, ordered)) for level in levels]


def generation_line(generation: Generation) -> dict[str, Any]:
    """Return a generation's journal line: its population and statistics, for readers."""
    return {
        "kind": "generation", "generation": generation.number,
        "epsilon": generation.epsilon if math.isfinite(generation.epsilon) else None,
        "proposals": generation.proposals, "failed": generation.failed,
        "acceptance_rate": generation.acceptance_rate, "ess": generation.ess,
        "simulations": generation.simulations, "param_ids": generation.param_ids,
        "weights": generation.weights.tolist(), "distances": generation.distances.tolist(),
    }  # fmt: skip


def too_many_redraws(generation: int) -> str:
    """Return the message of a kernel that keeps drawing outside the prior's support."""
    return (
        f"generation {generation}: {MAX_REDRAWS:,} draws in a row fell outside the prior's "
        "support (the kernel has almost no mass inside it); lower kernel_scale"
    )
