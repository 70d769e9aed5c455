"""How results are shown to people: numbers, parameters and the spread next to a mean.

The terminal table (`simstudy.summary_table`) and the Prefect UI table (`flows.artifacts`) both
show numbers through `format_number`, so a value reads the same everywhere.

```python
>>> format_number(0.32116600000000006), format_number(101823.0), format_number(3)
('0.3212', '1.018e+05', '3')
>>> split_parameters([{"beta": 0.1, "n": 100}, {"beta": 0.2, "n": 100}])
(['beta'], {'n': 100})
>>> spread = Spread.for_rows([{"mean": 2.0, "q0.05": 1.0, "q0.95": 3.5}])
>>> spread.label, spread.format({"mean": 2.0, "q0.05": 1.0, "q0.95": 3.5})
('5-95% of replicates', '[1, 3.5]')

```
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from simstudy.stats.partial import quantile_column

SIGNIFICANT_DIGITS = 4
"""Digits shown of a float: results are statistics of random replicates, not exact values."""

# C0 and C1 control characters but tab and newline (a NUL ends a C string, an ESC starts
# a terminal command), and the Unicode controls that reorder or hide text (U+202E shows
# "txt.exe" as "exe.txt"): user text shows them as escapes, never acts on them.
INVISIBLE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u200b-\u200f\u202a-\u202e\u2066-\u2069\ufeff]")

LOWER_QUANTILE, UPPER_QUANTILE = 0.05, 0.95
Z_95 = 1.959963984540054
"""Standard normal quantile of 0.975: a 95% confidence interval is mean +- Z_95 * sem."""


def visible(text: str) -> str:
    """Return `text` with control and bidirectional characters written as escapes."""
    return INVISIBLE.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), text)


SHOWN_NAMES = 10
"""Names listed in a message about outputs that differ; the rest are counted."""


def describe_outputs(found: Mapping[str, Any], names: Sequence[str]) -> str:
    """Return "{'name': value, ...}" for the first SHOWN_NAMES `names`, and how many more."""
    shown = ", ".join(f"{name!r}: {found.get(name, 'missing')!r}" for name in names[:SHOWN_NAMES])
    more = len(names) - SHOWN_NAMES
    return "{" + shown + (f", and {more} more" if more > 0 else "") + "}"


def format_number(value: Any) -> str:
    """Return a value as shown to people: floats to 4 significant digits, None as '-'."""
    if value is None:
        return "-"
    if isinstance(value, bool) or not isinstance(value, float):
        return str(value)
    if math.isnan(value):
        return "nan"
    text = f"{value:.{SIGNIFICANT_DIGITS}g}"
    return "0" if text == "-0" else text


def format_parameters(params: Mapping[str, Any], names: Iterable[str] | None = None) -> str:
    """Return `name=value` pairs separated by ', ' (all parameters, or only `names`)."""
    chosen = list(params) if names is None else list(names)
    return ", ".join(f"{name}={format_number(params.get(name))}" for name in chosen)


def split_parameters(param_sets: Sequence[Mapping[str, Any]]) -> tuple[list[str], dict[str, Any]]:
    """Return the names that vary between parameter sets, and the fixed values of the others."""
    names = list(dict.fromkeys(name for params in param_sets for name in params))
    varied: list[str] = []
    fixed: dict[str, Any] = {}
    for name in names:
        # repr: 1 and 1.0 or [1] and (1,) are different inputs to a model.
        values = {repr(params[name]) if name in params else None for params in param_sets}
        if len(values) > 1 or None in values:
            varied.append(name)
        else:
            fixed[name] = param_sets[0][name]
    return varied, fixed


@dataclass(frozen=True)
class Spread:
    """What is shown next to a mean: the replicates' 5-95% band, or a 95% CI of the mean."""

    quantile_band: bool

    @classmethod
    def for_rows(cls, rows: Iterable[Mapping[str, Any]]) -> Spread:
        """Use the 5-95% band when every row has both quantiles, else the CI of the mean."""
        columns = (quantile_column(LOWER_QUANTILE), quantile_column(UPPER_QUANTILE))
        rows = list(rows)
        return cls(quantile_band=bool(rows) and all(c in r for r in rows for c in columns))

    @property
    def label(self) -> str:
        """Return what the interval is, for a column header."""
        return "5-95% of replicates" if self.quantile_band else "95% CI of mean"

    @property
    def description(self) -> str:
        """Return what the interval is and how it is computed, in a sentence."""
        if self.quantile_band:
            return "the 5-95% band of the replicates (quantiles 0.05 and 0.95)"
        return (
            "the 95% confidence interval of the mean, mean ± 1.96·std/√n_ok "
            "(add 0.05 and 0.95 to aggregate.quantiles for the replicates' 5-95% band)"
        )

    def bounds(self, row: Mapping[str, Any]) -> tuple[float, float] | None:
        """Return the interval of a scalar aggregate row, or None if it has none."""
        if self.quantile_band:
            lower = row.get(quantile_column(LOWER_QUANTILE))
            upper = row.get(quantile_column(UPPER_QUANTILE))
        else:
            mean, std, n_ok = row.get("mean"), row.get("std"), row.get("n_ok")
            if mean is None or std is None or not n_ok or n_ok < 2:
                return None
            half = Z_95 * std / math.sqrt(n_ok)
            lower, upper = mean - half, mean + half
        if lower is None or upper is None or math.isnan(lower) or math.isnan(upper):
            return None
        return float(lower), float(upper)

    def format(self, row: Mapping[str, Any] | None) -> str:
        """Return the interval as '[lower, upper]', or '-' when there is none."""
        bounds = None if row is None else self.bounds(row)
        if bounds is None:
            return "-"
        return f"[{format_number(bounds[0])}, {format_number(bounds[1])}]"
