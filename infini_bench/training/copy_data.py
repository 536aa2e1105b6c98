"""In-context copying steps: random token spans repeated after a random gap, the loss on the repeats only.

Why: to continue a passkey it has started, a full-attention model needs an induction circuit (a head that looks up
what followed the last occurrence of the current token, built on a previous-token head). A tiny model does not
form one from minutes of text and answer-only retrieval steps: the quickstart's Llama found the first digit and
then drifted (6-12 % passkey at its own length), its loss on a repeated random sequence equal to its loss on the
first copy. A dense copy objective forms the circuit within ~1,500 steps (benchmarks/RESULTS_train.md §9). The
finetuning recipe's `copy_steps` puts these steps first, at their own learning rate `copy_lr` (at the finetuning's
3e-3 the circuit did not form in 1,500 steps; at 1e-3 it does), for every model it finetunes, so the Infini model
and its full-attention control start their retrieval steps from the same curriculum.
"""
from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch

from .batches import Batch

SPAN = (8, 32)  # tokens per copied span (inclusive)
GAP = (0, 64)  # random tokens between a span and its repeat (inclusive), so no fixed offset solves the task


class CopySpans:
    """Rows of one span of random token ids from `token_ids`, a gap of random ids, then the span again; labels on
    every repeated token but the first (which nothing announces), -100 elsewhere. The rows of one step share the
    span's and the gap's lengths (drawn per step), so they batch without padding; one row per sequence, not
    several packed: packed rows of 128 tokens had not formed the circuit after 2,000 steps, where these form it in
    ~1,200 (RESULTS_train.md §10). Everything is a pure function of the seed and the data position (exact resume)."""

    def __init__(self, token_ids: Iterable[int], seed: int):
        self.ids = np.asarray(sorted(set(token_ids)), dtype=np.int64)
        if len(self.ids) < 2:
            raise ValueError(f"copy steps need at least 2 ordinary token ids to draw from, got {len(self.ids)}")
        self.seed = seed
        self.shortest = 2 * SPAN[0] + GAP[0]

    def rows(self, start: int, size: int) -> tuple[np.ndarray, np.ndarray]:
        """The `size` rows from data position `start` on: token ids and labels, [size, 2 * span + gap]."""
        shape = np.random.default_rng([self.seed, start, 0])
        span = int(shape.integers(SPAN[0], SPAN[1] + 1))
        gap = int(shape.integers(GAP[0], GAP[1] + 1))
        first = [np.random.default_rng([self.seed, start + i, 1]).integers(0, len(self.ids), span + gap) for i in range(size)]
        drawn = self.ids[np.stack(first)]
        ids = np.concatenate([drawn, drawn[:, :span]], axis=1)
        labels = np.full_like(ids, -100)
        labels[:, span + gap + 1 :] = ids[:, span + gap + 1 :]
        return ids, labels

    def global_batch(self, step: int, size: int, cursors: dict[str, int], done: float) -> Batch:
        start = cursors.get("copy", 0)
        cursors["copy"] = start + size
        ids, labels = self.rows(start, size)
        return Batch(torch.from_numpy(ids), torch.from_numpy(labels), "copy")


def ordinary_ids(tokenizer) -> list[int]:
    """Every token id of `tokenizer` but its special tokens (BOS, EOS, padding never appear inside text)."""
    special = set(tokenizer.all_special_ids)
    return [i for i in range(len(tokenizer)) if i not in special]
