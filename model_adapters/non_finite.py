"""Non-finite logits stop an evaluation, or (behind `non_finite=invalid`) mark the document invalid.

A model whose logits turn NaN or infinite part-way through a document used to answer garbage (or nothing) and
score 0 %, indistinguishable from a memory that fails. The streaming code records, per row, the first input
position whose hidden state or logits were not finite (`streaming.prefill` / `score`); generation records the
first decoding step whose scores were not (`FiniteScores`). The adapter then asks `NonFiniteGuard` what to do:

- `non_finite=error` (the default): stop with one sentence naming the request (task and document) and the
  segment where it happened;
- `non_finite=invalid`: log that sentence as a warning, answer `infini_bench.invalid.INVALID_ANSWER` (or NaN),
  never cache it, and let the task count the document in its `invalid` metric.
"""
from __future__ import annotations

import logging

import torch
from transformers import LogitsProcessor

from infini_bench.invalid import NON_FINITE_MODES

logger = logging.getLogger(__name__)


class NonFiniteLogitsError(ValueError):
    """The model's logits were NaN or infinite for a request; the message names the request and the segment."""


def request_label(request: object, index: int) -> str:
    """How a message names a request: its task and document when lm-eval's `Instance` says, else its index."""
    task, doc = getattr(request, "task_name", None), getattr(request, "doc_id", None)
    if task is not None and doc is not None:
        return f"task {task}, document {doc}"
    return f"request {index}"


class NonFiniteGuard:
    """Decides, per request, what a non-finite position means: an error (`mode="error"`) or an invalid document
    (`mode="invalid"`)."""

    def __init__(self, mode: str, segment_length: int) -> None:
        if mode not in NON_FINITE_MODES:
            raise ValueError(f"non_finite={mode!r} is unknown: choose one of {', '.join(NON_FINITE_MODES)}")
        self.mode, self.segment_length = mode, segment_length

    def message(self, kind: str, label: str, position: int) -> str:
        """The sentence for a request whose logits were first not finite at input `position` (0-based)."""
        seg = self.segment_length
        segment = position // seg
        return (
            f"non-finite logits (NaN or inf) in {kind} for {label}: first at input token {position:,}, in segment "
            f"{segment + 1:,} (tokens {segment * seg:,}-{segment * seg + seg - 1:,} of {seg} per segment); the model "
            "computes NaN or infinite values there, so any score would be meaningless: evaluate an earlier "
            "checkpoint, or pass non_finite=invalid in --model_args to mark such documents invalid and go on"
        )

    def found(self, kind: str, label: str, position: int) -> None:
        """Raise (mode error) or warn and count (mode invalid) for one request."""
        text = self.message(kind, label, position)
        if self.mode == "error":
            raise NonFiniteLogitsError(text)
        logger.warning("%s; marked invalid (non_finite=invalid)", text.split("; the model computes")[0])


class FiniteScores(LogitsProcessor):
    """Records, per row, the first decoding step whose scores hold a NaN or +inf (generation goes on: the caller
    decides once it returns). A -inf score is not counted: it is how other processors forbid a token. The record
    stays on the scores' device until `first_bad` is read, so a step adds no host sync."""

    def __init__(self, rows: int) -> None:
        self.rows = rows
        self.step = 0
        self._first: torch.Tensor | None = None  # per prompt: the first bad step, -1 while none

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        bad = (torch.isnan(scores) | torch.isposinf(scores)).any(dim=-1)
        bad = bad.view(self.rows, -1).any(dim=-1)  # beams or num_return_sequences: rows per prompt
        if self._first is None:
            self._first = torch.full((self.rows,), -1, dtype=torch.long, device=scores.device)
        self._first = torch.where((self._first < 0) & bad, self.step, self._first)
        self.step += 1
        return scores

    @property
    def first_bad(self) -> list[int | None]:
        if self._first is None:
            return [None] * self.rows
        return [None if step < 0 else step for step in self._first.tolist()]
