"""A study's output folder.

`location.py` a local folder or an fsspec URL; `locking.py` one run per folder;
`results.py` the result files; `parts.py` finished batches for resume; `fingerprint.py`
the model fingerprint and the cache keys of replicates.
"""
