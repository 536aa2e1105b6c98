"""`--metadata protocol=...`: which documents a NIAH task builds.

``grid`` (the default) is this project's depth x length grid: 11 depths x `samples` documents, each needle at
its grid depth, keys from this project's word lists. ``ruler`` builds RULER's own documents
(`infini_bench.data.ruler_niah`): 500 per length, seed 42, RULER's draws, depths and haystacks, made exact in the
model's tokens. RULER has no passkey task, so passkey tasks keep Landmark's protocol and say so once.
"""
from __future__ import annotations

import logging
from typing import Any

from infini_bench.data.haystack import HaystackSpec

log = logging.getLogger(__name__)

PROTOCOLS = ("grid", "ruler")
_warned: set[str] = set()


def read_protocol(metadata: dict[str, Any], task: str) -> str:
    """The `protocol` option, checked: ``grid`` (default) or ``ruler``."""
    value = metadata.get("protocol")
    if value in (None, ""):
        return "grid"
    text = str(value).strip().lower()
    if text not in PROTOCOLS:
        raise ValueError(
            f"{task}: protocol must be 'grid' (the default: the depth x length grid) or 'ruler' (RULER's own "
            f"documents: 500 per length, seed 42), got {value!r}"
        )
    return text


def check_ruler_essays(task: str, spec: HaystackSpec) -> None:
    """protocol=ruler on an essay haystack needs RULER's essays, never the standard-library stand-in."""
    if spec.kind == "essay" and spec.source == "stdlib":
        raise ValueError(
            f"{task}: protocol=ruler needs RULER's essay haystack, Paul Graham's essays: pass "
            "essays=/path/to/PaulGrahamEssays.json (written by RULER's "
            "scripts/data/synthetic/json/download_paulgraham_essay.py), or essays=hf:baber/paul_graham_essays "
            "(lm-eval's copy); the default essays=stdlib is not RULER's text"
        )


def warn_protocol_once(task: str, value: Any) -> None:
    """A passkey task given protocol=...: RULER has no passkey task, so the option changes nothing there."""
    key = str(value)
    if key not in _warned:
        _warned.add(key)
        log.warning("%s: protocol=%s applies to the niah_* tasks only (RULER has no passkey task); passkey tasks "
                    "keep Landmark Attention's protocol", task, value)
