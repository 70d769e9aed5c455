"""Running replicates.

`runners/` thread, process and command runners; `batch.py` one batch; `records.py` and
`columns.py` replicate records and their Arrow columns; `engine.py` the protocol a driver
uses; `ledger.py` and `events.py` what a running study knows and the events that change
it; `reruns.py` what runs again; `stall.py` and `tracking.py` stall reports and progress;
`deadlines.py` every wait; `memory.py` freed memory; `source_digest.py` simstudy's code.
"""
