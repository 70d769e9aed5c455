"""Parameter sets.

`identity.py` parameter ids and replicate seeds; `expand.py` a design's sets; `sampling.py`
sampled designs; `plan.py` batches, task runs and aggregation groups.
"""
