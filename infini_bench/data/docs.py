"""How a prompt reaches the model (`PromptFrame`) and documents built one at a time (`DocPlan`).

A retrieval prompt has a user part (instruction, haystack, question) and an answer prefix ("The pass key is",
"The special magic number for ... is"). `PromptFrame` says what surrounds them: plainly, ``user + " " + prefix``
(Landmark's and RULER's text); with a chat template, the template's text before the user turn, between the user
turn and the answer prefix (the end of the user turn and the assistant header, so the prefix opens the assistant's
answer as lm-eval's ``gen_prefix`` and RULER put it) and after it. The frame's text is part of the prompt and its
tokens count in the context length.

`DocPlan` lists a task's grid cells and builds a cell's document only when asked, each cached on disk on its own
(key: the plan's options plus the cell), so ``--limit`` bounds the work and a larger ``samples`` reuses what was
built.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any, Callable

from infini_bench.data import cache
from infini_bench.data.grid import grid_cell


@dataclass(frozen=True)
class PromptFrame:
    """Text around a prompt's user part and answer prefix: ``before + user + between + prefix + after``."""

    before: str = ""
    between: str = " "
    after: str = ""

    @property
    def fingerprint(self) -> str:
        return hashlib.sha256(json.dumps([self.before, self.between, self.after]).encode()).hexdigest()[:16]

    @property
    def plain(self) -> bool:
        return self == PromptFrame()

    def wrap(self, user: str, prefix: str) -> str:
        return self.before + user + self.between + prefix + self.after


class DocPlan:
    """A task's documents: `cell(i)` = (sample index, depth) in `grid_order`; `doc(i)` builds or loads document i."""

    def __init__(
        self,
        family: str,
        depths: list[Any],
        samples: int,
        cache_key: Callable[[], dict[str, Any]],
        build: Callable[[int, int, Any], dict[str, Any]],
    ) -> None:
        self.family = family
        self.depths = list(depths)
        self.samples = int(samples)
        self._cache_key = cache_key
        self._key: dict[str, Any] | None = None
        self._build = build

    def __len__(self) -> int:
        return len(self.depths) * self.samples

    def cell(self, index: int) -> tuple[int, Any]:
        if not 0 <= index < len(self):
            raise IndexError(f"document {index} of {len(self)}")
        return grid_cell(self.depths, index)

    @property
    def key(self) -> dict[str, Any]:
        """The options every document's cache key shares (computed once, on first use: it may read essays)."""
        if self._key is None:
            self._key = self._cache_key()
        return self._key

    def doc(self, index: int) -> tuple[dict[str, Any], bool]:
        """Document `index` and whether it came from the disk cache."""
        sample_index, depth = self.cell(index)
        key = {**self.key, "sample_index": int(sample_index), "depth": depth}
        docs, hit = cache.cached_docs(f"docs_{self.family}", key, lambda: [self._build(index, sample_index, depth)])
        return docs[0], hit

    def build_all(self) -> tuple[list[dict[str, Any]], bool]:
        """Every document (built or loaded now) and whether all came from the cache."""
        pairs = [self.doc(i) for i in range(len(self))]
        return [d for d, _ in pairs], all(hit for _, hit in pairs)
