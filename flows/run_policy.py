"""The run policy of the current flow run: its deployment's, or none for a local run.

A deployment's owner sets SIMSTUDY_POLICY in the environment of the process that runs
the flows (`deployments/serve.py`, or the work pool's worker): a path to a YAML or JSON
policy file, or the policy as JSON. A caller of `prefect deployment run` chooses flow
parameters only, so it cannot widen the policy. A run of a deployment without
SIMSTUDY_POLICY gets `RunPolicy()`, which allows the shipped example only. Runs that
belong to no deployment (`simstudy run`, a flow called from Python) are not restricted.

```python
>>> policy = run_policy()   # inside the flow; None outside deployments
```
"""

from __future__ import annotations

import os

from prefect.context import FlowRunContext

from simstudy.spec.policy import RunPolicy, policy_from_setting

POLICY_VARIABLE = "SIMSTUDY_POLICY"


def policy_for(deployment_id: object | None, setting: str | None) -> RunPolicy | None:
    """Return a run's policy: none outside deployments, else the setting's or the default."""
    if deployment_id is None:
        return None
    return policy_from_setting(setting) if setting else RunPolicy()


def run_policy() -> RunPolicy | None:
    """Return the policy of the flow run in progress (raises `PolicyError` if unreadable)."""
    # The flow run in the context is the one the API returned, so its deployment_id is
    # the server's record, not a parameter (prefect.runtime.deployment.id reads the same,
    # but asks the API again when a run has no deployment).
    context = FlowRunContext.get()
    flow_run = context.flow_run if context is not None else None
    deployment_id = flow_run.deployment_id if flow_run is not None else None
    return policy_for(deployment_id, os.environ.get(POLICY_VARIABLE))
