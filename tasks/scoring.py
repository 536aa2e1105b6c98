"""Scoring generated answers by the numbers they contain, so a wordy answer is not punished."""
from __future__ import annotations

import re

_INTEGER = re.compile(r"\d+")


def first_integer(text: str) -> int | None:
    """The first run of digits in `text` as an integer ("The pass key is 9054 and 1234" -> 9054), or None."""
    match = _INTEGER.search(text or "")
    return int(match.group()) if match else None


def all_integers(text: str) -> set[int]:
    """Every run of digits in `text`, as integers."""
    return {int(m) for m in _INTEGER.findall(text or "")}


def first_integer_matches(response: str, answer: str) -> bool:
    """True when the first integer of the response equals the answer as a number (" 09054" counts for 9054)."""
    found = first_integer(response)
    return found is not None and found == int(answer)


def all_values_recalled(response: str, answers: list[str]) -> bool:
    """True when every expected value appears as an integer somewhere in the response."""
    return {int(a) for a in answers} <= all_integers(response)
