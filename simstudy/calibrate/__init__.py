"""Sequential calibration without orchestration: the study file's `calibrate` section, the
search space, the Optuna ask/tell loop on a journal file, adaptive replicates and the trials
table. Nothing here imports Prefect; `search.py` is a driver of the engine
(`simstudy.run.engine`), which `flows/calibrate.py` runs.

Modules: `spec.py` (settings, pydantic only), `space.py` (bounds as Optuna distributions),
`optimizer.py` (ask, tell, resume), `adaptive.py` (replicates per trial), `trials.py`
(`trials.parquet`). This package's `__init__` imports nothing, so the study spec stays
light to import.
"""
