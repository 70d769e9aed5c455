"""The study file: validated pydantic models.

```python
>>> from simstudy.spec.study import Study
>>> study = Study.model_validate({
...     "name": "demo", "model": "simstudy.models.seir:simulate",
...     "parameters": {"grid": {"beta": [0.2, 0.3]}}, "replicates": 3, "seed": 1,
... })
>>> study.execution.runner
'process'
```
"""

from __future__ import annotations

import builtins
import re
import warnings
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    FiniteFloat,
    field_validator,
    model_validator,
)

from simstudy.analysis.targets import TargetsSpec
from simstudy.calibrate.spec import CalibrateSettings, Calibration, PosteriorSettings
from simstudy.spec.sample import RangeBound, SampleDesign, Scalar

ScalarParam = Scalar

NAME_PATTERN = r"^[A-Za-z0-9_-]+$"
PARAMETER_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*$"
MODEL_REF_PATTERN = r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$"

RESERVED_PARAMETER_NAMES = frozenset(
    {"param_id", "parameter_set", "output", "t", "status", "n_ok", "n_failed", "loss", "loss_se"}
)

# Limits: every value that validates must run, and `simstudy validate` must answer any
# file within seconds, so sizes are bounded before anything is built
# (docs/getting-started.md, "Limits").
MAX_STUDY_FILE_BYTES = 1024 * 1024
"""Largest study file: libyaml reads ~1 MB/s here (its resolver runs in Python)."""
MAX_YAML_NODES = 1_000_000
"""Largest YAML document after alias expansion: more means an alias bomb, not a study."""
MAX_PARAMETER_FILE_BYTES = 100 * 1024 * 1024
"""Largest parameter file (CSV or Parquet)."""
MAX_PARAMETER_SETS = 100_000
"""Most parameter sets of a design; each needs at least one task run and one aggregation."""
MAX_DESIGN_VALUES = 10_000_000
"""Most parameter values of a design (parameter sets x parameters per set)."""
MAX_BATCHES = 100_000
"""Most simulation batches (Prefect task runs) of a study."""
MAX_REPLICATES = 1_000_000
"""Most replicates per parameter set."""
MAX_SIMULATIONS = 10_000_000
"""Most replicates of a study (parameter sets x replicates): the flow keeps every record."""
MAX_RETRIES = 100
"""Most retries of a replicate."""
MAX_TIMEOUT_SECONDS = 7 * 24 * 3600.0
"""Longest `timeout_seconds` of a replicate attempt (a week)."""
MAX_RETRY_DELAY_SECONDS = 24 * 3600.0
"""Longest pause before a retry (a day)."""
MAX_WAIT_SECONDS = 1e9
"""Longest deadline the study ever waits for (~31 years): below `threading.TIMEOUT_MAX`
(~9.2e9 s), beyond which Python's waits raise OverflowError."""
MAX_WORKER_WAIT_SECONDS = 24 * 3600.0
"""Longest `worker_wait_seconds` (a day)."""
MAX_LOCAL_WORKERS = 256
"""Most worker processes of a local cluster."""
MAX_THREADS_PER_WORKER = 256
"""Most threads per worker process of a local cluster."""
MAX_ADAPT_WORKERS = 10_000
"""Most workers of an adaptive cluster (`adapt.maximum`)."""
MIN_WORKER_MEMORY_BYTES = 256 * 1024 * 1024
"""Smallest `memory_limit`: a Dask worker process alone uses ~100-150 MB, so a smaller
limit would have its nanny restart it over and over."""
MIN_MODEL_MEMORY_BYTES = 128 * 1024 * 1024
"""Smallest `model_memory_limit`: the address space of a Python process that imported
numpy is ~100 MB before the model allocates anything."""
MAX_RESUBMITS = 10
"""Most reruns of a batch lost to infrastructure."""
MAX_NAME_LENGTH = 100
"""Longest study name: it names the output folder, and file names stop at 255 bytes."""
MAX_QUANTILES = 100
"""Most quantiles per output: each is a column of every aggregate row."""
ADDRESS_PATTERN = (
    r"^(?:(?:tcp|tls|ucx|ws|wss)://)?(?:\[[0-9A-Fa-f:.]+\]|[^\s/:\[\]]+)(?::\d{1,5})?/?$"
)

CLUSTER_CLASS_PATTERN = r"^[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)+$"
"""An import path `package.module.Class`, the form prefect-dask resolves."""

Seconds = Annotated[float, Field(allow_inf_nan=False)]
"""A duration: finite (pydantic accepts .inf and .nan for float fields otherwise)."""


class StudyModel(BaseModel):
    """Base of every study-file model: unknown fields are errors, not silently ignored."""

    model_config = ConfigDict(extra="forbid")


class CommandModel(StudyModel):
    """An external program run once per replicate (JSON on stdin, JSON on stdout)."""

    command: list[str] = Field(
        min_length=1,
        description='Program and arguments, e.g. ["python3", "models/my_model.py"]. '
        "Never run through a shell.",
    )
    cwd: str = Field(
        default=".",
        description="Working directory of the program, relative to the study file.",
    )


class AdaptSettings(StudyModel):
    """Adaptive scaling: Dask adds and removes workers between two bounds as work waits."""

    minimum: int = Field(
        ge=1,
        le=MAX_ADAPT_WORKERS,
        description="Fewest workers (at least 1: preflight checks the model on a worker "
        "before any task is submitted, and Dask adds workers only for submitted tasks).",
    )
    maximum: int = Field(
        ge=1,
        le=MAX_ADAPT_WORKERS,
        description=f"Most workers (at most {MAX_ADAPT_WORKERS}).",
    )

    @model_validator(mode="after")
    def _minimum_not_above_maximum(self) -> AdaptSettings:
        if self.minimum > self.maximum:
            raise ValueError(
                f"minimum {self.minimum} is above maximum {self.maximum}; give a minimum <= maximum"
            )
        return self


class DaskSettings(StudyModel):
    """Where the Dask work runs: a local cluster (default), a cluster class, or a scheduler."""

    address: str | None = Field(
        default=None,
        description="Address of a running Dask scheduler, e.g. tcp://127.0.0.1:8786. "
        "When unset, a cluster is started for the study (cluster_class, by default a "
        "local one).",
    )
    cluster_class: str | None = Field(
        default=None,
        description="Import path of a Dask cluster class the study starts and stops, e.g. "
        "dask_jobqueue.SLURMCluster (pip install 'simstudy[slurm]'), "
        "dask_kubernetes.operator.KubeCluster ('simstudy[kubernetes]') or "
        "distributed.LocalCluster. Default: a local cluster on 127.0.0.1.",
    )
    cluster_kwargs: dict[str, Any] = Field(
        default_factory=dict,
        description="Keyword arguments of cluster_class, e.g. {queue: normal, cores: 8, "
        "memory: 16GB} for SLURMCluster.",
    )
    adapt: AdaptSettings | None = Field(
        default=None,
        description="Adaptive scaling of the started cluster between minimum and maximum "
        "workers (Dask's cluster.adapt); instead of n_workers.",
    )
    n_workers: int | None = Field(
        default=None,
        ge=1,
        le=MAX_LOCAL_WORKERS,
        description=f"Worker processes of the local cluster (default: one per CPU this "
        "process may use: a Slurm job's allocation, a cgroup's limit, or the machine's; at "
        f"most {MAX_LOCAL_WORKERS}).",
    )
    threads_per_worker: int | None = Field(
        default=None,
        ge=1,
        le=MAX_THREADS_PER_WORKER,
        description=f"Threads per worker process of the local cluster (default: 1, at most "
        f"{MAX_THREADS_PER_WORKER}).",
    )
    memory_limit: str | None = Field(
        default=None,
        description="Memory limit per worker of the local cluster: a size such as '4GiB' or "
        "'500MB' (at least 256 MiB), or 'auto' (system memory shared by the workers). "
        "Default: the Slurm job's or cgroup's memory shared by the workers, else Dask's.",
    )
    shared_output: bool = Field(
        default=False,
        description="The output folder is at the same path on every worker's host: the "
        "workers of cluster_class run on this one node (a single-node Slurm), or share a "
        "filesystem that simstudy does not recognise as shared. Without it, a study whose "
        "workers run on other hosts is refused when its output is a folder on a local disk.",
    )

    @field_validator("address")
    @classmethod
    def _address_form(cls, value: str | None) -> str | None:
        if value is None:
            return value
        match = re.fullmatch(ADDRESS_PATTERN, value)
        port = value.rstrip("/").rsplit(":", 1)[-1] if match else ""
        if not match or (port.isdigit() and not 0 < int(port) < 65536):
            raise ValueError(
                f"{value!r} is not a Dask scheduler address; write it as "
                "tcp://HOST:PORT, e.g. tcp://127.0.0.1:8786"
            )
        return value

    @field_validator("cluster_class")
    @classmethod
    def _cluster_class_form(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(CLUSTER_CLASS_PATTERN, value):
            raise ValueError(
                f"{value!r} is not an import path of a class; write it as package.module.Class, "
                "e.g. dask_jobqueue.SLURMCluster"
            )
        return value

    @field_validator("cluster_kwargs")
    @classmethod
    def _cluster_kwargs_keys(cls, value: dict[str, Any]) -> dict[str, Any]:
        # prefect-dask runs the cluster itself, synchronously, and refuses this key.
        if "asynchronous" in value:
            raise ValueError("'asynchronous' is set by prefect-dask; remove it")
        return value

    @field_validator("memory_limit")
    @classmethod
    def _memory_size(cls, value: str | None) -> str | None:
        if value is None or value == "auto":
            return value
        memory_size_bytes(value, MIN_WORKER_MEMORY_BYTES, "a Dask worker needs for itself")
        return value

    @model_validator(mode="after")
    def _one_way_to_each_cluster(self) -> DaskSettings:
        local = [
            name
            for name in ("n_workers", "threads_per_worker", "memory_limit")
            if getattr(self, name) is not None
        ]
        started = [
            name for name in ("cluster_class", "cluster_kwargs", "adapt") if getattr(self, name)
        ]
        if self.address and (local or started):
            raise ValueError(
                f"address is set, so {', '.join(local + started)} cannot be: an existing "
                "cluster is sized and scaled where its workers are started; remove one or "
                "the other"
            )
        if self.cluster_class and local:
            raise ValueError(
                f"cluster_class is set, so {', '.join(local)} cannot be: they are options of "
                "the default local cluster; give them to cluster_class in cluster_kwargs "
                "(e.g. {n_workers: 4} for distributed.LocalCluster)"
            )
        if self.cluster_kwargs and not self.cluster_class:
            raise ValueError(
                "cluster_kwargs is set without cluster_class; name the class they are for, "
                "e.g. cluster_class: distributed.LocalCluster"
            )
        if self.adapt and self.n_workers is not None:
            raise ValueError(
                "adapt and n_workers are both set: adapt.minimum and adapt.maximum decide "
                "the number of workers; remove n_workers"
            )
        return self


def memory_size_bytes(value: str, minimum: int, why: str) -> int:
    """Return a size such as '4GiB' in bytes, or raise ValueError saying how to write it."""
    # The parser LocalCluster itself uses, imported here: dask costs ~0.25 s to import.
    from dask.utils import parse_bytes

    try:
        size = int(parse_bytes(value))
    except (ValueError, OverflowError):
        raise ValueError(f"{value!r} is not a memory size; write e.g. '4GiB' or '500MB'") from None
    if size < minimum:
        raise ValueError(
            f"{value!r} is {size} bytes, less than the {minimum // 2**20} MiB {why}; "
            f"give at least '{minimum // 2**20}MiB'"
        )
    return size


class Execution(StudyModel):
    """How replicates are run: runner, timeouts, retries, batching, cluster."""

    runner: Literal["thread", "process", "subprocess"] | None = Field(
        default=None,
        description="thread: in the Dask worker thread (fastest, CANNOT enforce timeout_seconds); "
        "process: warm child processes, killed on timeout (default for Python models); "
        "subprocess: one process per replicate (command models).",
    )
    timeout_seconds: Seconds = Field(
        default=600.0,
        gt=0,
        le=MAX_TIMEOUT_SECONDS,
        description="Hard wall-clock limit per replicate attempt, in seconds (at most a week, "
        "604800).",
    )
    retries: int = Field(
        default=1,
        ge=0,
        le=MAX_RETRIES,
        description="Extra attempts of a failed replicate after the first (at most 100).",
    )
    retry_delay_seconds: Seconds = Field(
        default=0.0,
        ge=0,
        le=MAX_RETRY_DELAY_SECONDS,
        description="Pause before each retry of a replicate, in seconds (at most a day, 86400).",
    )
    batch_size: int | Literal["auto"] = Field(
        default="auto",
        description="Replicates per Prefect task run (a run may hold several parameter sets). "
        "'auto': about 40 task runs per study, 25 to 5,000 replicates each "
        "(docs/concepts/flow.md, 'Batch size').",
    )
    min_success_fraction: float = Field(
        default=1.0,
        ge=0,
        le=1,
        description="Fraction of a parameter set's replicates that must succeed to aggregate it.",
    )
    dask: DaskSettings = Field(default_factory=DaskSettings, description="Dask cluster to run on.")
    stall_timeout_seconds: Seconds | None = Field(
        default=None,
        gt=0,
        le=MAX_WAIT_SECONDS,
        description="Seconds without any replicate or aggregation finishing before a stall "
        "report is written. Default: (retries + 1) x timeout_seconds + retries x "
        "retry_delay_seconds + 60, the longest one replicate can legitimately take.",
    )
    on_stall: Literal["report", "fail"] = Field(
        default="fail",
        description="report: write a stall report at every stall interval and keep waiting; "
        "fail: write it, and end the study Failed after a second interval without progress.",
    )
    aggregation_resources: dict[str, FiniteFloat] = Field(
        default_factory=dict,
        description="Dask resources each aggregation task asks for, e.g. {aggregation: 1}; "
        "checked against the workers before anything is submitted.",
    )
    max_batches_in_flight: int | Literal["auto"] = Field(
        default="auto",
        description="Simulation batches submitted ahead of completion. 'auto': 4 per worker "
        "thread at start, at least 8.",
    )
    worker_wait_seconds: Seconds = Field(
        default=60.0,
        gt=0,
        le=MAX_WORKER_WAIT_SECONDS,
        description="How long preflight waits for the first Dask worker (at most a day).",
    )
    model_memory_limit: str | None = Field(
        default=None,
        description="Address-space limit (RLIMIT_AS) of each model process, e.g. '2GiB' (at "
        "least 128 MiB): a model over it fails its replicate saying so. Process and "
        "subprocess runners only. Default: none (the worker's memory_limit still applies).",
    )
    part_files: Literal["flow", "workers"] = Field(
        default="flow",
        description="Who writes the part files of finished batches: 'flow' (the workers "
        "send every output to the flow) or 'workers' (each worker writes its runs' parts "
        "straight to the output, which every worker must reach, and the flow receives "
        "statistics and record fields only). See docs/guides/clusters.md, 'Storage'.",
    )
    max_resubmits: int = Field(
        default=2,
        ge=0,
        le=MAX_RESUBMITS,
        description="Reruns of a replicate whose batch task was lost while it ran (a lost "
        "worker, an error outside the model); only replicates without a result run again.",
    )

    @field_validator("batch_size", "max_batches_in_flight")
    @classmethod
    def _positive_or_auto(cls, value: int | str) -> int | str:
        if isinstance(value, int) and not 1 <= value <= MAX_BATCHES:
            raise ValueError(f"must be an integer from 1 to {MAX_BATCHES:,} or 'auto'")
        return value

    @field_validator("aggregation_resources")
    @classmethod
    def _positive_resources(cls, value: dict[str, float]) -> dict[str, float]:
        bad = {name: amount for name, amount in value.items() if amount <= 0}
        if bad:
            raise ValueError(f"resource amounts must be positive, got {bad}")
        return value

    @field_validator("model_memory_limit")
    @classmethod
    def _model_memory_size(cls, value: str | None) -> str | None:
        if value is not None:
            memory_size_bytes(value, MIN_MODEL_MEMORY_BYTES, "a Python model process needs")
        return value

    def model_memory_limit_bytes(self) -> int | None:
        """Return the model processes' memory limit in bytes (None: unlimited)."""
        if self.model_memory_limit is None:
            return None
        return memory_size_bytes(self.model_memory_limit, 0, "")

    def replicate_worst_case_seconds(self) -> float:
        """Return the longest one replicate may take: every attempt timing out, every delay."""
        attempts = (self.retries + 1) * self.timeout_seconds
        return attempts + self.retries * self.retry_delay_seconds

    def batch_worst_case_seconds(self, batch_size: int) -> float:
        """Return the longest a batch of `batch_size` replicates may take (<= MAX_WAIT_SECONDS)."""
        return min(self.replicate_worst_case_seconds() * batch_size, MAX_WAIT_SECONDS)

    def stall_timeout(self) -> float:
        """Return the stall timeout: the setting, or the longest a replicate may take + 60 s."""
        if self.stall_timeout_seconds is not None:
            return self.stall_timeout_seconds
        return self.replicate_worst_case_seconds() + 60.0

    def batches_in_flight(self, worker_threads: int) -> int:
        """Return how many simulation batches may be submitted ahead of completion."""
        if self.max_batches_in_flight == "auto":
            return max(8, 4 * worker_threads)
        return int(self.max_batches_in_flight)


class ParameterDesign(StudyModel):
    """The varying parameters: exactly one of grid, list, file or sample."""

    grid: dict[str, builtins.list[ScalarParam]] | None = Field(
        default=None,
        description="Cartesian product of the listed values, "
        "e.g. {beta: [0.2, 0.3], gamma: [0.1]}.",
    )
    list: builtins.list[dict[str, ScalarParam]] | None = Field(
        default=None, description="Explicit parameter sets, one mapping each."
    )
    file: str | None = Field(
        default=None,
        description="CSV or Parquet file, one row per parameter set, relative to the study file.",
    )
    sample: SampleDesign | None = Field(
        default=None,
        description="Parameter sets sampled from bounds (random, lhs, sobol, halton, saltelli, "
        "morris); see docs/guides/designs.md.",
    )

    @model_validator(mode="after")
    def _exactly_one(self) -> ParameterDesign:
        given = [k for k in ("grid", "list", "file", "sample") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(
                "give exactly one of grid, list or file, or a sample "
                f"(got {', '.join(given) or 'none'})"
            )
        if self.grid is not None:
            for name, values in self.grid.items():
                if not values:
                    raise ValueError(f"grid.{name} is empty: give at least one value")
        if self.list is not None and not self.list:
            raise ValueError("list is empty: give at least one parameter set")
        return self


class Aggregate(StudyModel):
    """Per-parameter-set statistics."""

    quantiles: list[float] = Field(
        default_factory=lambda: [0.05, 0.5, 0.95],
        max_length=MAX_QUANTILES,
        description=f"Quantiles of each output, each between 0 and 1 (at most {MAX_QUANTILES}).",
    )

    @field_validator("quantiles")
    @classmethod
    def _quantiles_in_range(cls, values: list[float]) -> list[float]:
        bad = [q for q in values if not 0.0 <= q <= 1.0]
        if bad:
            raise ValueError(f"quantiles must lie between 0 and 1, got {bad}")
        return sorted(set(values))


class Study(StudyModel):
    """A simulation study: parameter sets x replicates of one model."""

    name: str = Field(
        pattern=NAME_PATTERN,
        max_length=MAX_NAME_LENGTH,
        description=f"Study name ([A-Za-z0-9_-]+, at most {MAX_NAME_LENGTH} characters); "
        "names runs and the output folder.",
    )
    model: str | CommandModel = Field(
        description="Python callable as 'module:function', or {command: [...], cwd: '.'} "
        "for an external program."
    )
    model_version: str | None = Field(
        default=None,
        description="Your version of the model; change it when something the model depends "
        "on changes (imported modules, data files), so earlier results are not reused.",
    )
    fixed: dict[str, ScalarParam] = Field(
        default_factory=dict, description="Parameters shared by every parameter set."
    )
    parameters: ParameterDesign = Field(description="The varying parameters.")
    replicates: int = Field(
        ge=1,
        le=MAX_REPLICATES,
        description=f"Replicates per parameter set (at most {MAX_REPLICATES:,}; parameter sets "
        f"x replicates at most {MAX_SIMULATIONS:,}). In a calibration: optional, "
        "calibrate.replicates' max.",
    )
    seed: int = Field(
        ge=0, lt=2**63, description="Study seed; every replicate seed derives from it."
    )
    execution: Execution = Field(default_factory=Execution, description="How replicates run.")
    aggregate: Aggregate = Field(default_factory=Aggregate, description="Statistics to compute.")
    targets: TargetsSpec | None = Field(
        default=None,
        description="Observed data every parameter set is compared with, and the loss that "
        "compares them (docs/guides/targets.md). Not part of a replicate's identity: "
        "changing it reuses every replicate.",
    )
    calibrate: Calibration | None = Field(
        default=None,
        description="A calibration instead of a fixed design: trials from Optuna within "
        "parameters.sample's bounds, asked as capacity frees and scored against targets, "
        "with adaptive replicates; or with method abc-smc, a posterior sample "
        "(docs/guides/calibration.md, docs/guides/posterior.md).",
    )
    output: str | None = Field(
        default=None,
        description="Output folder (default: results/<name>), relative to the working directory.",
    )
    base_dir: str = Field(
        default=".",
        description="Folder that relative paths in the study (parameter file, command cwd) "
        "are resolved against; set to the study file's folder when loaded from a file.",
    )

    @model_validator(mode="before")
    @classmethod
    def _calibration_replicates(cls, data: Any) -> Any:
        # A calibration's replicates are calibrate.replicates; the top-level field, which
        # plans the batches of the best trials' study, defaults to their max.
        if not isinstance(data, dict) or data.get("calibrate") is None or "replicates" in data:
            return data
        given = data["calibrate"]
        replicates = given.get("replicates") if isinstance(given, dict) else given.replicates
        if (
            replicates is None
            and isinstance(given, dict)
            and given.get("method", "optuna") != "optuna"
        ):
            replicates = 1  # abc-smc's default per particle (another method is refused anyway)
        if isinstance(replicates, dict):
            replicates = replicates.get("max")
        elif replicates is not None and not isinstance(replicates, int):
            replicates = getattr(replicates, "max", None)
        if isinstance(replicates, int):
            return {**data, "replicates": replicates}
        return data

    @field_validator("model")
    @classmethod
    def _model_ref(cls, value: str | CommandModel) -> str | CommandModel:
        if isinstance(value, str) and not re.fullmatch(MODEL_REF_PATTERN, value):
            raise ValueError(
                f"model {value!r} is not 'module:function' (e.g. simstudy.models.seir:simulate); "
                "for an external program write {command: [...]}"
            )
        return value

    @field_validator("fixed")
    @classmethod
    def _fixed_names(cls, values: dict[str, Any]) -> dict[str, Any]:
        check_parameter_names(values, "fixed")
        return values

    @model_validator(mode="after")
    def _consistent(self) -> Study:
        is_command = isinstance(self.model, CommandModel)
        runner = self.execution.runner
        if runner is None:
            self.execution.runner = "subprocess" if is_command else "process"
        elif is_command and runner != "subprocess":
            raise ValueError(
                f"execution.runner is {runner!r} but model is a command: command models run "
                "with runner 'subprocess'"
            )
        elif not is_command and runner == "subprocess":
            raise ValueError(
                "execution.runner is 'subprocess' but model is a Python callable: use "
                "'process' (killable) or 'thread'"
            )
        if self.execution.runner == "thread" and self.execution.model_memory_limit:
            raise ValueError(
                "execution.model_memory_limit cannot apply to runner 'thread': the model runs "
                "inside the Dask worker; use runner 'process', or limit the worker with "
                "execution.dask.memory_limit"
            )
        if self.execution.runner == "thread":
            warnings.warn(
                "execution.runner 'thread' cannot enforce timeout_seconds: a replicate that "
                "hangs keeps its worker thread; use runner 'process' for a hard timeout",
                UserWarning,
                stacklevel=2,
            )
        if self.parameters.grid is not None:
            check_parameter_names(self.parameters.grid, "parameters.grid")
            overlap = sorted(set(self.parameters.grid) & set(self.fixed))
            if overlap:
                raise ValueError(
                    f"parameters.grid and fixed both set {overlap}: a parameter is either "
                    "fixed or varying"
                )
        if self.parameters.sample is not None:
            check_parameter_names(self.parameters.sample.bounds, "parameters.sample.bounds")
            overlap = sorted(set(self.parameters.sample.bounds) & set(self.fixed))
            if overlap:
                raise ValueError(
                    f"parameters.sample.bounds and fixed both set {overlap}: a parameter is "
                    "either fixed or sampled; remove it from one of them"
                )
        if self.execution.part_files == "workers" and (self.output or "").startswith("memory:"):
            raise ValueError(
                "execution.part_files is 'workers' but output is a memory:// URL, which each "
                "process has its own of: the flow would not see the workers' parts; use a "
                "folder, a file:// or a shared URL (s3://...), or part_files: flow"
            )
        return self

    @model_validator(mode="after")
    def _design_or_calibration(self) -> Study:
        sample = self.parameters.sample
        if self.calibrate is None:
            if sample is not None and (sample.method is None or sample.n is None):
                raise ValueError(
                    "parameters.sample.method and n are required (method: random, lhs, sobol, "
                    "halton, saltelli or morris; n: its size); only a calibration "
                    "(calibrate) takes bounds alone"
                )
            return self
        calibrate = self.calibrate
        problems = []
        if self.targets is None:
            problems.append(
                "calibrate needs targets: a trial's loss against observed data is what the "
                "sampler minimises; add targets: {data: observed.csv, loss: ...}"
            )
        if sample is None:
            given = next(
                k for k in ("grid", "list", "file") if getattr(self.parameters, k) is not None
            )
            problems.append(
                f"calibrate needs parameters.sample with bounds, not parameters.{given}: "
                "trials are drawn within the bounds, e.g. sample: {bounds: {beta: [0.1, 0.6]}}"
            )
        else:
            fixed_design = [k for k in ("method", "n", "seed") if getattr(sample, k) is not None]
            if fixed_design:
                problems.append(
                    f"parameters.sample.{fixed_design[0]} does not apply to a calibration: its "
                    "trials come from calibrate (seeded by calibrate.seed); keep only the bounds"
                )
        if sample is not None and isinstance(calibrate, PosteriorSettings):
            problems += posterior_problems(sample, calibrate)
        if self.replicates != calibrate.max_replicates:
            problems.append(
                f"replicates is {self.replicates} but calibrate.replicates' max is "
                f"{calibrate.max_replicates}: a calibration's replicates are set by "
                "calibrate.replicates; remove the top-level replicates"
            )
        # A posterior's budget is calibrate.max_simulations, checked as it runs.
        if isinstance(calibrate, CalibrateSettings):
            problems += search_size_problems(calibrate)
        if problems:
            raise ValueError("; ".join(problems))
        if calibrate.seed is None:
            calibrate.seed = self.seed
        return self

    @property
    def output_dir(self) -> str:
        """Return the output folder (the `output` field, or results/<name>)."""
        return self.output or str(Path("results") / self.name)

    def resolve(self, path: str) -> Path:
        """Return `path` resolved against the study's base folder."""
        candidate = Path(path)
        return candidate if candidate.is_absolute() else Path(self.base_dir) / candidate

    def size_problems(self, n_sets: int, names_per_set: int) -> list[str]:
        """Return why `n_sets` parameter sets are too many for this study (empty if they fit).

        Counted before anything is built, so a design too large to run is refused at once.
        """
        problems = []
        if n_sets > MAX_PARAMETER_SETS:
            problems.append(
                f"parameters: the design has {n_sets:,} parameter sets, more than the maximum "
                f"of {MAX_PARAMETER_SETS:,}; vary fewer parameters or values, or split the study"
            )
        values = n_sets * names_per_set
        if values > MAX_DESIGN_VALUES and n_sets <= MAX_PARAMETER_SETS:
            problems.append(
                f"parameters: the design has {n_sets:,} sets x {names_per_set:,} parameters = "
                f"{values:,} values, more than the maximum of {MAX_DESIGN_VALUES:,}; "
                "use fewer parameters or parameter sets"
            )
        simulations = n_sets * self.replicates
        if simulations > MAX_SIMULATIONS:
            problems.append(
                f"replicates: {n_sets:,} parameter sets x {self.replicates:,} replicates = "
                f"{simulations:,} simulations, more than the maximum of {MAX_SIMULATIONS:,}; "
                "lower replicates or the number of parameter sets"
            )
        # 'auto' never plans more than max(n_sets, 79) batches (docs/concepts/flow.md).
        size = self.execution.batch_size
        if size != "auto":
            runs = -(-n_sets * self.replicates // int(size))
            if runs > MAX_BATCHES:
                problems.append(
                    f"execution.batch_size: {size} replicates per task run gives {runs:,} "
                    f"task runs, more than the maximum of {MAX_BATCHES:,}; raise batch_size "
                    "or use 'auto'"
                )
        return problems


def check_parameter_names(values: dict[str, Any], where: str) -> None:
    """Raise naming the field when a parameter name is not an identifier or is reserved."""
    for name in values:
        if not re.fullmatch(PARAMETER_NAME_PATTERN, name):
            raise ValueError(
                f"{where}: parameter name {name!r} must be an identifier "
                "(letters, digits, underscore; not starting with a digit)"
            )
        if name in RESERVED_PARAMETER_NAMES:
            raise ValueError(
                f"{where}: parameter name {name!r} is reserved for an output column; rename it"
            )


def posterior_problems(sample: SampleDesign, settings: PosteriorSettings) -> list[str]:
    """Return why an ABC-SMC posterior cannot take these bounds and priors (empty: it can)."""
    problems = []
    for name, bound in sample.bounds.items():
        if not isinstance(bound, RangeBound) or bound.integer:
            kind = "choices" if not isinstance(bound, RangeBound) else "integer"
            problems.append(
                f"parameters.sample.bounds.{name} is {kind}: ABC-SMC perturbs particles with a "
                "continuous kernel; give it [low, high] (round it in the model) or fix it"
            )
    for name in settings.priors:
        if name not in sample.bounds:
            problems.append(
                f"calibrate.priors.{name}: {name} is not in parameters.sample.bounds, the "
                f"parameters the posterior is over; add it there (e.g. {name}: [0, 1])"
            )
    return problems


def search_size_problems(settings: CalibrateSettings) -> list[str]:
    """Return why a search is too large to run (empty: it is not)."""
    simulations = settings.trials * settings.max_replicates
    if simulations <= MAX_SIMULATIONS:
        return []
    return [
        f"calibrate: {settings.trials:,} trials x {settings.max_replicates:,} replicates (max) "
        f"= {simulations:,} simulations, more than the maximum of {MAX_SIMULATIONS:,}; lower "
        "calibrate.trials or calibrate.replicates"
    ]
