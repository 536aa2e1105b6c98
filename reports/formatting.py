"""How a report writes its numbers, one module for the HTML page (`html.py`), the terminal view (`text.py`) and
the figures: token lengths and depths as the tasks name them, scores as percents, seed ranges, effective lengths.
"""
from __future__ import annotations

import math

from infini_bench.tasks.names import format_length as _format_length


def format_length(n: int | float | None) -> str:
    """4096 -> ``4k``, 1048576 -> ``1m``, 1000 -> ``1000`` (the tasks' own way); ``-`` for an unknown length."""
    if n is None or (isinstance(n, float) and math.isnan(n)):
        return "-"
    return _format_length(int(n))


def format_depth(d: float) -> str:
    return f"{d:g}%"


def format_bucket(lo: int, hi: int | None) -> str:
    """Position bucket label: ``0–1k``, ``4k–end``."""
    return f"{format_length(lo) if lo else '0'}–{'end' if hi is None else format_length(hi)}"


def percent(value: float | None, digits: int = 0, *, unit: str = "%", missing: str = "–") -> str:
    """A fraction as a percent (``0.953`` -> ``95%``); ``missing`` for no value (None or NaN). The terminal view
    drops the unit (its headers say %) and marks a missing value with an ASCII ``-``."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return missing
    return f"{value * 100:.{digits}f}{unit}"


def percent_range(low: float | None, high: float | None) -> str:
    """``85–95`` (whole percents) for a range over seed replicates; empty for a single run."""
    return "" if low is None or high is None else f"{low * 100:.0f}–{high * 100:.0f}"


def effective(length: int | None) -> str:
    """An effective length, or ``none`` when not even the shortest length reaches the threshold."""
    return format_length(length) if length else "none"
