"""Streaming token rows through an Infini model side by side, one chunk of whole segments at a time, never
padding.

An Infini model folds every token it reads into its memory, so a pad token would corrupt the state. Rows are
therefore batched in lockstep: all rows of a batch have read the same number of tokens, each step feeds every
active row its next piece (up to `chunk_tokens`, ending on a segment boundary where it can, and no longer than
what is left of the shortest row), and a row leaves the batch the moment it ends. A piece of whole segments runs
in the model's parallel form; each step holds one chunk of activations per row and logits for at most
`LOGITS_SLICE` positions, so memory does not grow with the length of the rows.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

import torch

from infini_bench.modeling import InfiniForCausalLM, InfiniCache

Progress = Callable[[int], None] | None
NonFinite = dict[int, int] | None  # filled with row -> first input position whose hidden state or logits were not finite
Tokens = Sequence[int] | torch.Tensor  # a row of token ids: a list, or a 1-D tensor (4 bytes a token in int32)

# The adapter's `prefill_chunk_tokens` default, by device. On a GPU larger chunks feed the kernels better (and peak
# memory follows the chunk); on a CPU, freshly allocated chunk-sized tensors cost page faults and cache misses, and
# a tiny model read 64K tokens 1.3x faster in chunks of 2,048 than of 16,384 (benchmarks/RESULTS_adapter.md).
DEFAULT_CHUNK_TOKENS = {"cuda": 16_384, "cpu": 2_048}
LOGITS_SLICE = 2_048  # positions per float32 log-softmax: [rows, LOGITS_SLICE, vocab] at a time


def piece_length(model: InfiniForCausalLM, state: InfiniCache | None, remaining: int, chunk_tokens: int) -> int:
    """Tokens to feed next: the rest of the current segment plus as many whole segments as fit in `chunk_tokens`
    (at least the rest of the segment), and no more than the shortest row has left."""
    seg = model.config.segment_length
    position = 0 if state is None else state.position
    to_boundary = seg - position
    whole = max(0, (chunk_tokens - to_boundary) // seg) * seg
    return min(to_boundary + whole, remaining)


def _rows_tensor(rows: Sequence[Tokens], index: Sequence[int], start: int, n: int, device) -> torch.Tensor:
    """Tokens [start, start + n) of the rows `index`, as one [len(index), n] batch of token ids."""
    pieces = [torch.as_tensor(rows[i][start : start + n], dtype=torch.long) for i in index]
    return torch.stack(pieces).to(device)


def _keep(state: InfiniCache, keep: Sequence[int]) -> InfiniCache:
    return state.select(torch.tensor(list(keep), dtype=torch.long))


@torch.no_grad()
def prefill(
    model: InfiniForCausalLM,
    rows: Sequence[Tokens],
    device: torch.device,
    progress: Progress = None,
    chunk_tokens: int = DEFAULT_CHUNK_TOKENS["cpu"],
    non_finite: NonFinite = None,
) -> Iterator[tuple[list[int], InfiniCache | None]]:
    """Read every row into a fresh memory, batched, without computing logits.

    With `non_finite` (a dict), the final hidden states of every position are checked and each row's first
    non-finite position is recorded there (without it only the last position's hidden state is kept).

    Yields `(row indices, state)` each time some rows end: those rows have equal lengths and `state` holds exactly
    them, in that order, at the same position, so they can be continued together. Empty rows come first, with
    `None` (a fresh memory). Consume each yield before asking for the next: only one batch is alive at a time."""
    empty = [i for i, row in enumerate(rows) if len(row) == 0]
    if empty:
        yield empty, None
    active = [i for i, row in enumerate(rows) if len(row) > 0]
    state: InfiniCache | None = None
    done = 0
    while active:
        n = piece_length(model, state, min(len(rows[i]) for i in active) - done, chunk_tokens)
        hidden, state = model.model(
            _rows_tensor(rows, active, done, n, device), cache=state, keep_last=0 if non_finite is not None else 1
        )
        if non_finite is not None:
            _record_non_finite(non_finite, active, done, ~torch.isfinite(hidden).all(dim=-1))
        del hidden
        done += n
        if progress is not None:
            progress(n * len(active))
        ended = [j for j, i in enumerate(active) if len(rows[i]) == done]
        if not ended:
            continue
        left = [j for j, i in enumerate(active) if len(rows[i]) != done]
        yield [active[j] for j in ended], (state if not left else _keep(state, ended))
        if left:
            state = _keep(state, left)
        active = [active[j] for j in left]


@torch.no_grad()
def score(
    model: InfiniForCausalLM,
    state: InfiniCache | None,
    inputs: Sequence[Tokens],
    targets: Sequence[Tokens],
    device: torch.device,
    progress: Progress = None,
    chunk_tokens: int = DEFAULT_CHUNK_TOKENS["cpu"],
    non_finite: NonFinite = None,
) -> list[tuple[float, bool]]:
    """Continue `state` (one row per input, all at one position; None for fresh memories) with each row's
    `inputs`, where `targets[i][t]` is the token that follows `inputs[i][t]`.

    Returns per row the summed log-probability of its targets (log-softmax in float32, summed in float64 so that
    a million tokens lose no precision) and whether every target was the model's argmax. With `non_finite` (a
    dict), each row's first position whose logits hold a NaN or an infinity is recorded there (its sum is then
    not finite either)."""
    if len(inputs) != len(targets) or any(len(x) != len(y) or len(x) == 0 for x, y in zip(inputs, targets)):
        raise ValueError("score() needs non-empty rows with one target per input token")
    if state is not None and state.batch_size != len(inputs):
        raise ValueError(f"state holds {state.batch_size} rows for {len(inputs)} inputs")
    totals = [0.0] * len(inputs)
    greedy = [True] * len(inputs)
    active = list(range(len(inputs)))
    done = 0
    while active:
        n = piece_length(model, state, min(len(inputs[i]) for i in active) - done, chunk_tokens)
        hidden, state = model.model(_rows_tensor(inputs, active, done, n, device), cache=state)
        wanted = _rows_tensor(targets, active, done, n, device)
        sums, hits, bad = _logprob_sums(model, hidden, wanted)
        del hidden
        if non_finite is not None:
            _record_non_finite(non_finite, active, done, bad)
        for j, i in enumerate(active):
            totals[i] += sums[j]
            greedy[i] = greedy[i] and hits[j]
        done += n
        if progress is not None:
            progress(n * len(active))
        left = [j for j, i in enumerate(active) if len(inputs[i]) != done]
        if left and len(left) < len(active):
            state = _keep(state, left)
        active = [active[j] for j in left]
    return list(zip(totals, greedy))


def _logprob_sums(
    model: InfiniForCausalLM, hidden: torch.Tensor, wanted: torch.Tensor
) -> tuple[list[float], list[bool], torch.Tensor]:
    """Per row: the summed log-probability of `wanted` under the logits of `hidden` (float32 log-softmax, float64
    sums), whether every wanted token was the argmax, computed `LOGITS_SLICE` positions at a time, and per
    position whether the logits held a NaN or an infinity (their logsumexp is then not finite: no extra pass)."""
    sums = torch.zeros(hidden.shape[0], dtype=torch.float64, device=hidden.device)
    hits = torch.ones(hidden.shape[0], dtype=torch.bool, device=hidden.device)
    bad = []
    for a in range(0, hidden.shape[1], LOGITS_SLICE):
        logits = model.lm_head(hidden[:, a : a + LOGITS_SLICE]).float()
        target = wanted[:, a : a + LOGITS_SLICE]
        norm = torch.logsumexp(logits, dim=-1)
        logprobs = logits.gather(-1, target.unsqueeze(-1)).squeeze(-1) - norm
        sums += logprobs.double().sum(dim=-1)
        hits &= (logits.argmax(dim=-1) == target).all(dim=-1)
        bad.append(~torch.isfinite(norm))
    return sums.tolist(), hits.tolist(), torch.cat(bad, dim=1)


def _record_non_finite(found: dict[int, int], active: Sequence[int], done: int, bad: torch.Tensor) -> None:
    """Note, for each active row not yet noted, its first position marked in `bad` ([rows, n], offset `done`)."""
    rows = bad.any(dim=-1)
    if not bool(rows.any()):
        return
    first = bad.float().argmax(dim=-1)
    for j in rows.nonzero().flatten().tolist():
        found.setdefault(active[j], done + int(first[j]))
