"""One rule for whole-number and true/false options, wherever they are read: task metadata (`tasks/options.py`),
`--model infini`'s model args (`model_adapters/options.py`) and the data builders' arguments (`data/`).

A value may arrive as a Python value (a recipe, a YAML task config), already cast by lm-eval
(`simple_parse_args_string` turns "16" into 16 and "true" into True, but leaves "yes" a string) or as text, so the
rule reads all three the same way. `as_whole` and `as_truth` only decide; `whole_number` and `true_or_false` also
raise, in the wording tasks and builders use; the model adapter raises its own error type in its own words.
"""
from __future__ import annotations

TRUE_WORDS = frozenset({"1", "true", "yes", "on"})
FALSE_WORDS = frozenset({"0", "false", "no", "off"})


def as_whole(value: object, minimum: int) -> int | None:
    """``value`` as an int when it is a whole number >= ``minimum``, else None. An int, or a float or numeric text
    with nothing after the point (16.0, "16", "1e3") counts; a bool never does (True is not a count)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        number = value
    else:
        try:
            real = float(value)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            return None
        if not real.is_integer():  # also NaN and infinity
            return None
        number = int(real)
    return number if number >= minimum else None


def whole_number(value: object, what: str, minimum: int = 1) -> int:
    """`as_whole`, or a ValueError naming ``what`` and the value."""
    number = as_whole(value, minimum)
    if number is None:
        raise ValueError(f"{what} must be a whole number >= {minimum}, got {value!r}")
    return number


def as_truth(value: object) -> bool | None:
    """A bool, or its text (true/false, yes/no, on/off, 1/0, any case), as a bool; None for anything else."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    return True if text in TRUE_WORDS else False if text in FALSE_WORDS else None


def true_or_false(value: object, what: str) -> bool:
    """`as_truth`, or a ValueError naming ``what`` and the value."""
    truth = as_truth(value)
    if truth is None:
        raise ValueError(f"{what} must be true or false, got {value!r}")
    return truth
