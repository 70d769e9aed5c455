"""The `simulation-study` flow: a study file in, its results (or a calibration's) out.

```python
>>> from flows.study import simulation_study
>>> state = simulation_study(study_path="examples/seir.yaml", return_state=True)
```

The flow checks a deployment's policy, resolves the study (file, overrides), and runs it:
a study through `flows/study_run.py`, a study with `calibrate` through
`flows/calibrate.py`, each on one cluster and in this one flow run.
"""

from __future__ import annotations

from prefect import flow, get_run_logger
from prefect.states import State

from flows.run_policy import run_policy
from flows.study_run import run_study
from simstudy.calibrate.spec import PosteriorSettings
from simstudy.run.memory import return_freed_memory
from simstudy.spec.loading import resolve_study
from simstudy.spec.policy import check_request, check_study
from simstudy.spec.study import Execution, Study
from simstudy.stats.aggregate import StudySummary

__all__ = ["resolve_study", "simulation_study"]


@flow(name="simulation-study", validate_parameters=True)
def simulation_study(
    study_path: str | None = None,
    study: Study | None = None,
    output: str | None = None,
    replicates: int | None = None,
    seed: int | None = None,
    execution: Execution | None = None,
    overwrite: bool = False,
    fresh: bool = False,
) -> State[StudySummary]:
    """Run a simulation study on Dask: every replicate, every aggregate, the summary.

    A study with `calibrate` runs as a calibration instead (flows/calibrate.py): trials
    asked from Optuna as capacity frees, on the same cluster, in this flow run.

    Args:
        study_path: Study file (YAML or JSON), relative to the working directory.
        study: The study itself, instead of a file.
        output: Output folder or fsspec URL, instead of the study's.
        replicates: Replicates per parameter set, instead of the study's.
        seed: Study seed, instead of the study's (a new seed is a new study).
        execution: Execution settings, merged into the study's (the ones given win).
        overwrite: Replace another study's results in the output folder.
        fresh: Discard finished replicates of an earlier run instead of resuming.
    """
    logger = get_run_logger()
    return_freed_memory()
    overrides = {
        "output": output,
        "replicates": replicates,
        "seed": seed,
        "execution": execution.model_dump(exclude_unset=True) if execution else None,
    }
    # A deployment's policy is checked before any file is read or anything started.
    policy = run_policy()
    if policy is not None:
        check_request(policy, study_path, study)
    study = resolve_study(study_path, study, overrides)
    if policy is not None:
        check_study(policy, study)
    if isinstance(study.calibrate, PosteriorSettings):
        from flows.posterior import run_posterior  # imported here, as the calibration below

        return run_posterior(study, logger, overwrite=overwrite, fresh=fresh)
    if study.calibrate is not None:
        # Imported here: Dask workers import this module with every task run (its flow is
        # in the task's context), and Optuna with scipy.stats cost each of them ~1 s.
        from flows.calibrate import run_calibration

        return run_calibration(study, logger, overwrite=overwrite, fresh=fresh)
    return run_study(study, logger, overwrite=overwrite, fresh=fresh)
