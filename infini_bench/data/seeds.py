"""Seed namespaces: which seeds make evaluation documents, so training can never draw one.

The rule, in one line: **an evaluation document's seed has bit 62 set** (``seed >= EVAL_SEED_FLAG == 2**62``);
training seeds are ordinary integers below that.

Every document the lm-eval tasks build carries ``seed = eval_doc_seed(base_seed, family, *coordinates)``, where the
base seed is ``EVAL_SEED_BASE`` (1234) unless ``--metadata seed=N`` says otherwise and the coordinates are the grid
cell (context length, depth, sample index, ...). The same seed rebuilds the same document. A trainer that draws its
seeds with ``check_training_seed`` (or any integer in ``[0, 2**62)``) therefore never generates an evaluation
document's random choices.
"""
from __future__ import annotations

import hashlib
import json

EVAL_SEED_BASE = 1234
EVAL_SEED_FLAG = 1 << 62
_SEED_LIMIT = 1 << 63


def eval_doc_seed(base_seed: int, family: str, *coordinates: int | float | str) -> int:
    """Seed of one evaluation document: a hash of (base seed, task family, grid coordinates) with bit 62 set."""
    payload = json.dumps([int(base_seed), family, *[_canonical(c) for c in coordinates]])
    digest = int.from_bytes(hashlib.sha256(payload.encode()).digest()[:8], "big")
    return EVAL_SEED_FLAG | (digest & (EVAL_SEED_FLAG - 1))


def is_eval_seed(seed: int) -> bool:
    """True when `seed` lies in the evaluation namespace [2**62, 2**63)."""
    return EVAL_SEED_FLAG <= int(seed) < _SEED_LIMIT


def check_training_seed(seed: int) -> int:
    """Return `seed` if a trainer may use it; raise if it could reproduce an evaluation document."""
    seed = int(seed)
    if seed < 0:
        raise ValueError(f"training seed must be >= 0, got {seed}")
    if seed >= EVAL_SEED_FLAG:
        raise ValueError(
            f"seed {seed} is in the evaluation namespace [2**62, 2**63): training seeds must be below 2**62 "
            "so that no evaluation document is ever generated for training"
        )
    return seed


def _canonical(value: int | float | str) -> int | float | str:
    """Make 50 and 50.0 hash alike, so a depth written either way gives the same document."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value
