"""The depth x length grid: depth lists, validation, and a document order that survives `--limit`."""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any, Iterable

from infini_bench.data.seeds import EVAL_SEED_BASE
from infini_bench.validation import whole_number

PASSKEY_DEPTHS: tuple[int, ...] = tuple(range(0, 101, 5))  # 21 depths, 5 % apart
NIAH_DEPTHS: tuple[int, ...] = tuple(range(0, 101, 10))  # 11 depths


def _number(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        try:
            value = float(str(value))
        except ValueError:
            raise ValueError(f"{what} must be a number, got {value!r}") from None
    return float(value)


def clean_depth(value: Any) -> int | float:
    """A depth in percent as int when whole, else float; raises for anything outside 0-100."""
    depth = _number(value, "depth")
    if not 0.0 <= depth <= 100.0:
        raise ValueError(f"depth {value!r} is outside 0-100 % (depths are percent of the haystack before the needle)")
    return int(depth) if depth.is_integer() else depth


def depths_from_count(n_depths: Any) -> list[int | float]:
    """`n_depths` evenly spaced depths from 0 to 100 %, whole numbers when they stay distinct."""
    n_depths = whole_number(n_depths, "n_depths")
    if n_depths == 1:
        return [0]
    exact = [100.0 * i / (n_depths - 1) for i in range(n_depths)]
    whole = [round(d) for d in exact]
    if len(set(whole)) == n_depths:
        return whole
    return [clean_depth(round(d, 1)) for d in exact]


def resolve_depths(depths: Iterable[Any] | Any | None, n_depths: Any | None, default: Iterable[int]) -> list[int | float]:
    """The depth list from an explicit list, else a count, else the default; validated, duplicates refused."""
    if depths is not None:
        if isinstance(depths, (int, float, str)) and not isinstance(depths, bool):
            depths = [depths]
        chosen = [clean_depth(d) for d in depths]
    elif n_depths is not None:
        chosen = depths_from_count(n_depths)
    else:
        chosen = list(default)
    if not chosen:
        raise ValueError("depths is empty: give at least one depth in 0-100 %")
    if len(set(chosen)) != len(chosen):
        raise ValueError(f"depths contain duplicates: {chosen}")
    return chosen


def spread_order(n: int) -> list[int]:
    """Indices 0..n-1 ordered so that every prefix spreads over the range: ends first, then midpoints."""
    if n <= 0:
        return []
    if n == 1:
        return [0]
    order, seen = [0, n - 1], {0, n - 1}
    intervals = deque([(0, n - 1)])
    while intervals:
        lo, hi = intervals.popleft()
        if hi - lo < 2:
            continue
        mid = (lo + hi) // 2
        if mid not in seen:
            order.append(mid)
            seen.add(mid)
        intervals.extend([(lo, mid), (mid, hi)])
    return order


def grid_order(depths: list[int | float], samples: int) -> list[tuple[int, int | float]]:
    """(sample index, depth) pairs: sample-major, depths spread, so the first N documents cover the depth range."""
    return [(i, depths[j]) for i in range(samples) for j in spread_order(len(depths))]


def grid_cell(depths: list[int | float], index: int) -> tuple[int, int | float]:
    """`grid_order(depths, samples)[index]` without listing the grid (any number of samples)."""
    sample, j = divmod(int(index), len(depths))
    return sample, depths[spread_order(len(depths))[j]]


@dataclass(frozen=True)
class Cell:
    """One document's place: its exact length in tokens, the first needle's depth in percent and its seed. Validated
    here, so a builder reads plain numbers."""

    context_length: int
    depth: int | float
    seed: int

    def __post_init__(self) -> None:
        object.__setattr__(self, "context_length", whole_number(self.context_length, "context_length"))
        object.__setattr__(self, "depth", clean_depth(self.depth))
        object.__setattr__(self, "seed", int(self.seed))


@dataclass(frozen=True)
class Grid:
    """A task's documents at one length: `samples` documents at each of `depths` (`resolve_depths` rules), their
    seeds derived from `base_seed` and the cell (`infini_bench.data.seeds.eval_doc_seed`)."""

    context_length: int
    depths: tuple[int | float, ...]
    samples: int = 5
    base_seed: int = EVAL_SEED_BASE

    def __post_init__(self) -> None:
        object.__setattr__(self, "context_length", whole_number(self.context_length, "context_length"))
        object.__setattr__(self, "depths", tuple(resolve_depths(self.depths, None, ())))
        object.__setattr__(self, "samples", whole_number(self.samples, "samples"))
        object.__setattr__(self, "base_seed", int(self.base_seed))
