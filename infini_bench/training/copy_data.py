"""In-context copying steps: random token spans repeated after a random gap, the loss on the repeats only.

Why: to continue a passkey it has started, a full-attention model needs an induction circuit (a head that looks up
what followed the last occurrence of the current token, built on a previous-token head). A tiny model does not
form one from minutes of text and answer-only retrieval steps: the quickstart's Llama found the first digit and
then drifted (6-12 % passkey at its own length), its loss on a repeated random sequence equal to its loss on the
first copy. A dense copy objective forms the circuit within ~1,500 steps (benchmarks/RESULTS_train.md §9). The
finetuning recipe's `copy_steps` puts these steps first, for every model it finetunes, so the Infini model and its
full-attention control start their retrieval steps from the same curriculum.
"""
from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch

from .batches import Batch

SPAN = (8, 32)  # tokens per copied span (inclusive): long enough to need matching, short enough to pack several
GAP = (0, 64)  # random tokens between a span and its repeat (inclusive), so no fixed offset solves the task


class CopySpans:
    """Rows of `length` tokens packed with (span, gap, span) triples of random token ids drawn from `token_ids`;
    labels on every repeated token but the first (which nothing announces), -100 elsewhere. Row `i` of the
    stream is a pure function of the seed and `i`, so resume is exact."""

    def __init__(self, length: int, token_ids: Iterable[int], seed: int):
        self.ids = np.asarray(sorted(set(token_ids)), dtype=np.int64)
        if len(self.ids) < 2:
            raise ValueError(f"copy steps need at least 2 ordinary token ids to draw from, got {len(self.ids)}")
        if length < 2 * SPAN[0] + 1:
            raise ValueError(f"copy rows of {length} tokens cannot hold a span of {SPAN[0]} and its repeat")
        self.length, self.seed = length, seed
        self.shortest = length

    def row(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        rng = np.random.default_rng([self.seed, index])
        ids = self.ids[rng.integers(0, len(self.ids), self.length)]  # gaps and the tail stay random
        labels = np.full(self.length, -100, dtype=np.int64)
        pos = 0
        while True:
            span = int(rng.integers(SPAN[0], SPAN[1] + 1))
            gap = int(rng.integers(GAP[0], GAP[1] + 1))
            if pos + 2 * span + gap > self.length:
                span = min(span, (self.length - pos) // 2)
                gap = min(gap, self.length - pos - 2 * span)
                if span < SPAN[0]:
                    return ids, labels
            repeat = pos + span + gap
            ids[repeat : repeat + span] = ids[pos : pos + span]
            labels[repeat + 1 : repeat + span] = ids[repeat + 1 : repeat + span]
            pos = repeat + span

    def global_batch(self, step: int, size: int, cursors: dict[str, int], done: float) -> Batch:
        start = cursors.get("copy", 0)
        rows = [self.row(start + i) for i in range(size)]
        cursors["copy"] = start + size
        ids = torch.from_numpy(np.stack([r[0] for r in rows]))
        return Batch(ids, torch.from_numpy(np.stack([r[1] for r in rows])), "copy")


class CopyFirst:
    """The first `steps` optimizer steps are copy steps; then `rest` (retrieval, with or without text steps)
    trains as if it started there (its own step count from 0; `done` stays the whole run's)."""

    def __init__(self, copy: CopySpans, rest, steps: int):
        self.copy, self.rest, self.steps = copy, rest, steps
        self.shortest = min(copy.shortest, rest.shortest)

    def global_batch(self, step: int, size: int, cursors: dict[str, int], done: float) -> Batch:
        if step < self.steps:
            return self.copy.global_batch(step, size, cursors, done)
        return self.rest.global_batch(step - self.steps, size, cursors, done)


def ordinary_ids(tokenizer) -> list[int]:
    """Every token id of `tokenizer` but its special tokens (BOS, EOS, padding never appear inside text)."""
    special = set(tokenizer.all_special_ids)
    return [i for i in range(len(tokenizer)) if i not in special]
