"""Scoring generated answers: the strict `acc` and RULER's `ruler_match`.

`acc` (strict, all-or-nothing) reads the values out of the answer by their shape: integers for number values
(compared as numbers, so " 09054" counts for 9054; Landmark's passkey scoring), UUIDs for uuid values, and
adjective-noun words for word values (both case-insensitive). One expected value: the answer's *first* value must
be it ("The pass key is 9054 and 1234" counts, "the 1st number is 9054" does not). Several: every expected value
must be among the answer's values.

`ruler_match` is RULER's ``string_match_all`` (NVIDIA/RULER ``scripts/eval/synthetic/constants.py``) after its
``postprocess_pred`` (``scripts/eval/evaluate.py``): the answer is stripped, control characters become newlines,
and each expected value scores 1 when it occurs in the answer as a case-insensitive substring; the document's
score is the mean over its values (three of four = 0.75).
"""
from __future__ import annotations

import re

_INTEGER = re.compile(r"\d+")
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_WORD = re.compile(r"[A-Za-z]+-[A-Za-z]+")
_CONTROL = re.compile(r"[\x00-\x1f]")


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


def _values(text: str, kind: str) -> list[str]:
    """The answer's values of one kind, in order, normalised for comparison."""
    if kind == "numbers":
        return [str(int(m)) for m in _INTEGER.findall(text or "")]
    pattern = _UUID if kind == "uuids" else _WORD
    return [m.lower() for m in pattern.findall(text or "")]


def _normal(value: str, kind: str) -> str:
    return str(int(value)) if kind == "numbers" else value.lower()


def strict_match(response: str, answers: list[str], kind: str = "numbers") -> float:
    """`acc`: 1.0 when the first value of the response is the single expected value, or every expected value is
    among the response's values; else 0.0 (see the module docstring)."""
    found = _values(response, kind)
    expected = [_normal(a, kind) for a in answers]
    if len(expected) == 1:
        return float(bool(found) and found[0] == expected[0])
    return float(set(expected) <= set(found))


def ruler_postprocess(response: str) -> str:
    """RULER's ``postprocess_pred``: strip, control characters to newlines, strip again."""
    return _CONTROL.sub("\n", (response or "").strip()).strip()


def ruler_match(response: str, answers: list[str]) -> float:
    """RULER's ``string_match_all`` for one document: the share of expected values found (case-insensitive)."""
    if not answers:
        return 0.0
    prediction = ruler_postprocess(response).lower()
    return sum(1.0 for a in answers if str(a).lower() in prediction) / len(answers)
