"""Workers of a local cluster die with the flow process, even while a task holds the GIL.

```python
>>> LocalCluster(plugins=(LifelinePlugin(os.getpid()),))
```

distributed's own guard (a thread in each worker reading a pipe from its parent) cannot
run while a task holds the GIL, such as a thread-runner model in one long C call: after a
SIGKILLed `simstudy run` such a worker went on at full CPU. Each worker instead gets a
lifeline, a separate small process (`simstudy.run.runners.reaper`) that waits for the flow
process to die and then SIGKILLs the worker with everything it started.
"""

from __future__ import annotations

import distributed
from distributed.diagnostics.plugin import WorkerPlugin

from simstudy.run.runners import reaper


class LifelinePlugin(WorkerPlugin):
    """Start a lifeline next to each worker that kills it when `flow_pid` dies."""

    name = "simstudy-lifeline"

    def __init__(self, flow_pid: int):
        self.flow_pid = flow_pid
        self.lifeline_pid: int | None = None

    def setup(self, worker: distributed.Worker) -> None:
        """Start the lifeline of this worker process."""
        self.lifeline_pid = reaper.start_lifeline(self.flow_pid)
