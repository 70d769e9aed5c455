"""Statistics: `partial.py` mergeable statistics and sketches; `aggregate.py` per set and study."""
