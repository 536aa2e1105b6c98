"""How much of each layer's attention output comes from memory, measured on one document.

Every Infini layer adds two terms per query head h and token t (`InfiniAttention._mix`): the memory term
``m = g_h·A_mem[h, t]`` and the local term ``l = (1 − g_h)·A_local[h, t]``, vectors of the head's width. The
**memory share** of that head and token is

    share(h, t) = ‖m‖₂ / (‖m‖₂ + ‖l‖₂)        (0 when both are 0)

so 0 means the head's output is all local attention and 1 all memory retrieval. Unlike g it sees what the memory
actually returns: a head with g = 0.5 whose memory reads near zero has a share near 0. The share of a layer in a
segment is the mean over its query heads and the segment's tokens; per head and per layer, the mean over the
tokens of segments 1, 2, ... (segment 0 reads an empty memory, so its share is 0 by construction and is left out
of those two means, though it stays in the per-segment row). The norms come from `InfiniAttention.mix_observer`,
an opt-in hook that sees the two terms and changes nothing.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class MemoryShare:
    """The memory share of one document (see the module doc): `per_token` [layers, heads, tokens] and its means."""

    per_token: np.ndarray
    segment_length: int

    @property
    def segments(self) -> int:
        return -(-self.per_token.shape[2] // self.segment_length)

    def per_layer_segment(self) -> np.ndarray:
        """[layers, segments]: the mean over heads and the segment's tokens (the last segment may be partial)."""
        return np.stack([self.per_token[:, :, s * self.segment_length : (s + 1) * self.segment_length].mean(axis=(1, 2))
                         for s in range(self.segments)], axis=1)

    def per_layer_head(self) -> np.ndarray | None:
        """[layers, heads]: the mean over the tokens after the first segment; None for a one-segment document."""
        after = self.per_token[:, :, self.segment_length :]
        return after.mean(axis=2) if after.shape[2] else None

    def per_layer(self) -> np.ndarray | None:
        """[layers]: the mean over heads and the tokens after the first segment; None for a one-segment document."""
        per_head = self.per_layer_head()
        return None if per_head is None else per_head.mean(axis=1)


def share_from_norms(memory_norm: np.ndarray, local_norm: np.ndarray) -> np.ndarray:
    """‖m‖ / (‖m‖ + ‖l‖) elementwise, 0 where both norms are 0."""
    total = memory_norm + local_norm
    return np.divide(memory_norm, total, out=np.zeros_like(total), where=total > 0)


@contextmanager
def observe_mix(model: torch.nn.Module) -> Iterator[list[list[tuple[torch.Tensor, torch.Tensor]]]]:
    """While open, every layer's `mix_observer` appends (‖memory term‖, ‖local term‖), each [batch, heads, tokens]
    in float32, to its own list, in the order the model processes tokens; the observers are removed on exit."""
    attentions = [layer.self_attn for layer in model.model.layers]
    calls: list[list[tuple[torch.Tensor, torch.Tensor]]] = [[] for _ in attentions]

    def observer(into: list) -> Callable[[torch.Tensor, torch.Tensor], None]:
        def record(memory_term: torch.Tensor, local_term: torch.Tensor) -> None:
            into.append((memory_term.detach().float().norm(dim=-1).cpu(), local_term.detach().float().norm(dim=-1).cpu()))
        return record

    for attention, into in zip(attentions, calls):
        attention.mix_observer = observer(into)
    try:
        yield calls
    finally:
        for attention in attentions:
            attention.mix_observer = None


@torch.no_grad()
def measure_memory_share(model: torch.nn.Module, input_ids: torch.Tensor, chunk_tokens: int = 2048) -> MemoryShare:
    """Run `input_ids` [1, T] through `model` in chunks of whole segments (carrying the cache, as the lm-eval
    adapter streams a document) and return its memory share. The model's outputs are those of an ordinary call."""
    if input_ids.dim() != 2 or input_ids.shape[0] != 1:
        raise ValueError(f"input_ids must be one document of shape [1, T], got {tuple(input_ids.shape)}")
    if not model.config.use_memory:
        raise ValueError("the model's memory is off (use_memory=False): no output comes from memory")
    seg = model.config.segment_length
    step = max(seg, chunk_tokens // seg * seg)
    cache = None
    with observe_mix(model) as calls:
        for start in range(0, input_ids.shape[1], step):
            cache = model(input_ids[:, start : start + step], cache=cache, logits_to_keep=1).cache
    per_layer = []
    for layer, pieces in enumerate(calls):
        memory = torch.cat([m for m, _ in pieces], dim=2)[0].double().numpy()
        local = torch.cat([lo for _, lo in pieces], dim=2)[0].double().numpy()
        if memory.shape[1] != input_ids.shape[1]:
            raise RuntimeError(f"layer {layer}'s observer saw {memory.shape[1]} tokens of {input_ids.shape[1]}")
        per_layer.append(share_from_norms(memory, local))
    return MemoryShare(np.stack(per_layer), seg)
