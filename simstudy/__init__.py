"""simstudy: simulation studies (parameter sets x replicates) that never hang silently.

This package is the orchestration-free core: the study file (`spec`, `loading`),
parameter ids and seeds (`identity`, `design`), batching, runners, statistics
(`stats`, `aggregate`) and result storage. It never imports Prefect; `flows/` and
`tasks/` are the Prefect layer over it. The package root imports nothing, so model
processes that import `simstudy.run.runners` start fast. `__version__` names a release and
stays the same across commits; `simstudy.run.source_digest` tells two checkouts apart (the
preflight compares both between the flow and every worker).
"""

__version__ = "0.1.0"
