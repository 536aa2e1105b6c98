"""Control models that fail at their own training length.

A comparison such as "the memory model holds 100 % at 16×, the full-attention control 0 %" says something about
memory only if the control works where it was trained: a control that cannot retrieve inside its own window fails
at every longer length for that reason alone. `control_warnings` finds, per task family, each model named as a
control (`--control NAME`) whose accuracy at its training length is below the report's threshold (or that was not
evaluated there, or whose training length is unknown), so the headline can say so.
"""
from __future__ import annotations

import math
from typing import Any

from .formatting import format_length
from .grid import Grid

CONSEQUENCE = "comparisons beyond it measure the control's failure, not memory"


def control_warnings(grids: list[Grid], controls: list[str], threshold: float) -> list[dict[str, Any]]:
    """One record per (control model, task family) that cannot serve as a control at its training length: the
    model, family, training length, the accuracy there (None when not measured) and the sentence to show."""
    warnings = []
    for grid in grids:
        if grid.model not in controls:
            continue
        train = grid.train_length
        acc = _accuracy_at(grid, train) if train else None
        if train is None:
            reason = (f"its training length is unknown (give --train-length {grid.model}=N), so whether it works "
                      f"where it was trained cannot be checked")
        elif acc is None:
            reason = f"it was not evaluated at its training length ({format_length(train)})"
        elif acc < threshold:
            reason = (f"it scores {acc * 100:.0f} % at its training length ({format_length(train)}), below the "
                      f"threshold of {threshold * 100:.0f} %: {CONSEQUENCE}")
        else:
            continue
        warnings.append({"model": grid.model, "family": grid.family, "train_length": train, "acc": acc,
                         "text": f"control {grid.model} on {grid.family}: {reason}"})
    return warnings


def unknown_controls(grids: list[Grid], controls: list[str]) -> list[str]:
    """Control names that match no model of the report (a typo would otherwise silently check nothing)."""
    models = {grid.model for grid in grids}
    return [name for name in controls if name not in models]


def _accuracy_at(grid: Grid, length: int) -> float | None:
    """The grid's mean accuracy at `length` (over depths; over seeds for replicates), None when not evaluated."""
    per_length = grid.per_length()["acc"]
    matches = [float(v) for k, v in per_length.items() if int(k) == length]
    return matches[0] if matches and not math.isnan(matches[0]) else None
