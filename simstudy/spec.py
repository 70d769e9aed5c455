"""The study file: validated pydantic models.

```python
>>> from simstudy.spec import Study
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
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    field_validator,
    model_validator,
)

# Strict members: in lax mode pydantic would turn 1.0 into True.
ScalarParam = StrictBool | StrictInt | StrictFloat | StrictStr

NAME_PATTERN = r"^[A-Za-z0-9_-]+$"
PARAMETER_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*$"
MODEL_REF_PATTERN = r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$"

RESERVED_PARAMETER_NAMES = frozenset(
    {"param_id", "parameter_set", "output", "t", "status", "n_ok", "n_failed"}
)


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


class DaskSettings(StudyModel):
    """Where the Dask work runs: a local cluster (default) or an existing scheduler."""

    address: str | None = Field(
        default=None,
        description="Address of a running Dask scheduler, e.g. tcp://127.0.0.1:8786. "
        "When unset, a local cluster is started for the study.",
    )
    n_workers: int | None = Field(
        default=None, ge=1, description="Worker processes of the local cluster (default: 2)."
    )
    threads_per_worker: int | None = Field(
        default=None,
        ge=1,
        description="Threads per worker process of the local cluster (default: 1).",
    )
    memory_limit: str | None = Field(
        default=None,
        description="Memory limit per worker of the local cluster, e.g. '4GiB' (default: Dask's).",
    )

    @model_validator(mode="after")
    def _address_excludes_local_settings(self) -> DaskSettings:
        local = [
            name
            for name in ("n_workers", "threads_per_worker", "memory_limit")
            if getattr(self, name) is not None
        ]
        if self.address and local:
            raise ValueError(
                f"address is set, so {', '.join(local)} cannot be: the size of an existing "
                "cluster is set where its workers are started; remove one or the other"
            )
        return self


class Execution(StudyModel):
    """How replicates are run: runner, timeouts, retries, batching, cluster."""

    runner: Literal["thread", "process", "subprocess"] | None = Field(
        default=None,
        description="thread: in the Dask worker thread (fastest, CANNOT enforce timeout_seconds); "
        "process: warm child processes, killed on timeout (default for Python models); "
        "subprocess: one process per replicate (command models).",
    )
    timeout_seconds: float = Field(
        default=600.0, gt=0, description="Hard wall-clock limit per replicate attempt, in seconds."
    )
    retries: int = Field(
        default=1, ge=0, le=100, description="Extra attempts of a failed replicate after the first."
    )
    retry_delay_seconds: float = Field(
        default=0.0, ge=0, description="Pause before each retry of a replicate, in seconds."
    )
    batch_size: int | Literal["auto"] = Field(
        default="auto",
        description="Replicates per Prefect task run. 'auto': about 40 task runs per study, "
        "at least 25 replicates per batch (see README).",
    )
    min_success_fraction: float = Field(
        default=1.0,
        ge=0,
        le=1,
        description="Fraction of a parameter set's replicates that must succeed to aggregate it.",
    )
    dask: DaskSettings = Field(default_factory=DaskSettings, description="Dask cluster to run on.")
    stall_timeout_seconds: float | None = Field(
        default=None,
        gt=0,
        description="Seconds without any replicate or aggregation finishing before a stall "
        "report is written. Default: (retries + 1) x timeout_seconds + retries x "
        "retry_delay_seconds + 60, the longest one replicate can legitimately take.",
    )
    on_stall: Literal["report", "fail"] = Field(
        default="fail",
        description="report: write a stall report at every stall interval and keep waiting; "
        "fail: write it, and end the study Failed after a second interval without progress.",
    )
    aggregation_resources: dict[str, float] = Field(
        default_factory=dict,
        description="Dask resources each aggregation task asks for, e.g. {aggregation: 1}; "
        "checked against the workers before anything is submitted.",
    )
    max_batches_in_flight: int | Literal["auto"] = Field(
        default="auto",
        description="Simulation batches submitted ahead of completion. 'auto': 4 per worker "
        "thread at start, at least 8.",
    )
    worker_wait_seconds: float = Field(
        default=60.0, gt=0, description="How long preflight waits for the first Dask worker."
    )
    max_resubmits: int = Field(
        default=2,
        ge=0,
        le=10,
        description="Reruns of a replicate whose batch task was lost while it ran (a lost "
        "worker, an error outside the model); only replicates without a result run again.",
    )

    @field_validator("batch_size", "max_batches_in_flight")
    @classmethod
    def _positive_or_auto(cls, value: int | str) -> int | str:
        if isinstance(value, int) and value < 1:
            raise ValueError("must be a positive integer or 'auto'")
        return value

    @field_validator("aggregation_resources")
    @classmethod
    def _positive_resources(cls, value: dict[str, float]) -> dict[str, float]:
        bad = {name: amount for name, amount in value.items() if amount <= 0}
        if bad:
            raise ValueError(f"resource amounts must be positive, got {bad}")
        return value

    def stall_timeout(self) -> float:
        """Return the stall timeout: the setting, or the longest a replicate may take + 60 s."""
        if self.stall_timeout_seconds is not None:
            return self.stall_timeout_seconds
        longest_replicate = (self.retries + 1) * self.timeout_seconds
        return longest_replicate + self.retries * self.retry_delay_seconds + 60.0

    def batches_in_flight(self, worker_threads: int) -> int:
        """Return how many simulation batches may be submitted ahead of completion."""
        if self.max_batches_in_flight == "auto":
            return max(8, 4 * worker_threads)
        return int(self.max_batches_in_flight)


class ParameterDesign(StudyModel):
    """The varying parameters: exactly one of grid, list or file."""

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

    @model_validator(mode="after")
    def _exactly_one(self) -> ParameterDesign:
        given = [k for k in ("grid", "list", "file") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(
                f"give exactly one of grid, list or file (got {', '.join(given) or 'none'})"
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
        description="Quantiles of each output, each between 0 and 1.",
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
        description="Study name ([A-Za-z0-9_-]+); names runs and the output folder.",
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
    replicates: int = Field(ge=1, le=10_000_000, description="Replicates per parameter set.")
    seed: int = Field(
        ge=0, lt=2**63, description="Study seed; every replicate seed derives from it."
    )
    execution: Execution = Field(default_factory=Execution, description="How replicates run.")
    aggregate: Aggregate = Field(default_factory=Aggregate, description="Statistics to compute.")
    output: str | None = Field(
        default=None,
        description="Output folder (default: results/<name>), relative to the working directory.",
    )
    base_dir: str = Field(
        default=".",
        description="Folder that relative paths in the study (parameter file, command cwd) "
        "are resolved against; set to the study file's folder when loaded from a file.",
    )

    @field_validator("model")
    @classmethod
    def _model_ref(cls, value: str | CommandModel) -> str | CommandModel:
        if isinstance(value, str) and not re.match(MODEL_REF_PATTERN, value):
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
        return self

    @property
    def output_dir(self) -> str:
        """Return the output folder (the `output` field, or results/<name>)."""
        return self.output or str(Path("results") / self.name)

    def resolve(self, path: str) -> Path:
        """Return `path` resolved against the study's base folder."""
        candidate = Path(path)
        return candidate if candidate.is_absolute() else Path(self.base_dir) / candidate


def check_parameter_names(values: dict[str, Any], where: str) -> None:
    """Raise naming the field when a parameter name is not an identifier or is reserved."""
    for name in values:
        if not re.match(PARAMETER_NAME_PATTERN, name):
            raise ValueError(
                f"{where}: parameter name {name!r} must be an identifier "
                "(letters, digits, underscore; not starting with a digit)"
            )
        if name in RESERVED_PARAMETER_NAMES:
            raise ValueError(
                f"{where}: parameter name {name!r} is reserved for an output column; rename it"
            )
