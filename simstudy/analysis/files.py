"""Write what a finished study's results say: observed targets, ranking, sensitivity indices.

```python
>>> ranking = write_analysis(store, study, sets, aggregates, targets)  # None without targets
```

Each file is written only when the study has what it needs: `targets.parquet` and
`ranking.parquet` with targets, `sensitivity.parquet` with a saltelli or morris design.
"""

from __future__ import annotations

import pyarrow as pa

from simstudy.analysis.ranking import ranking_table
from simstudy.analysis.sensitivity import sensitivity_table
from simstudy.analysis.targets import Targets, observed_table
from simstudy.design.expand import ParameterSet
from simstudy.display import split_parameters
from simstudy.output.location import OutputStore
from simstudy.output.results import RANKING_FILE, SENSITIVITY_FILE, TARGETS_FILE, write_table
from simstudy.spec.study import Study
from simstudy.stats.aggregate import ParameterSetAggregate


def write_analysis(
    store: OutputStore,
    study: Study,
    sets: list[ParameterSet],
    aggregates: list[ParameterSetAggregate],
    targets: Targets | None,
) -> pa.Table | None:
    """Write the study's targets, ranking and sensitivity files; return the ranking (or None)."""
    ranking = None
    if targets is not None:
        write_table(store, TARGETS_FILE, observed_table(targets))
        varied, _ = split_parameters([ps.params for ps in sets])
        ranking = ranking_table(aggregates, varied)
        write_table(store, RANKING_FILE, ranking)
    sensitivity = sensitivity_table(study, sets, aggregates)
    if sensitivity is not None:
        write_table(store, SENSITIVITY_FILE, sensitivity)
    return ranking
