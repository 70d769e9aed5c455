"""Limits on text values from study files and data tables, checked before they are used.

Every parameter set stores all of its parameters (study.json, the result files, every
task), and a table's text is decoded in full when read: a 900 kB `fixed` text in a
100 x 100 grid made validation take 89 s and study.json ~9 GB; a 5 kB Parquet file of one
100 kB text repeated 2,000 times decoded to 500 MB.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pyarrow as pa

MAX_TEXT_VALUE_CHARS = 1000
"""Longest text value: a label, a path or a name, not data."""

LONG_TEXT_FIX = "put long data in a file and give its path"


def short_text(value: Any) -> Any:
    """Return `value`, or raise ValueError when it is a text over MAX_TEXT_VALUE_CHARS."""
    if isinstance(value, str) and len(value) > MAX_TEXT_VALUE_CHARS:
        raise ValueError(
            f"a text value of {len(value):,} characters, more than {MAX_TEXT_VALUE_CHARS:,}: "
            f"parameters are stored with every set; {LONG_TEXT_FIX}"
        )
    return value


def check_column_text(name: str, column: pa.ChunkedArray) -> None:
    """Raise ValueError naming the column when one of its texts is over the limit.

    A dictionary column is checked on its dictionary: nothing is decoded.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    arrays = [c.dictionary if pa.types.is_dictionary(c.type) else c for c in column.chunks]
    texts = [
        a
        for a in arrays
        if len(a) and (pa.types.is_string(a.type) or pa.types.is_large_string(a.type))
    ]
    longest = max((pc.max(pc.utf8_length(a)).as_py() or 0 for a in texts), default=0)
    if longest > MAX_TEXT_VALUE_CHARS:
        raise ValueError(
            f"column {name!r} holds a text of {longest:,} characters, more than "
            f"{MAX_TEXT_VALUE_CHARS:,}; {LONG_TEXT_FIX}"
        )


def text_columns(schema: pa.Schema) -> list[str]:
    """Return the names of a schema's text columns (to read as dictionaries)."""
    import pyarrow as pa

    return [
        f.name for f in schema if pa.types.is_string(f.type) or pa.types.is_large_string(f.type)
    ]
