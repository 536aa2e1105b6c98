"""The streaming state of an Infini model: per layer the compressive memory (M, z) in float32 and the local
key/value cache of the current, unfinished segment.

One state object serves streaming evaluation, training across segments and generation: a forward call continues
the stream exactly where the state left off.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers.cache_utils import Cache

from .memory_ops import memory_scan


@dataclass
class LayerState:
    memory: torch.Tensor  # M: [batch, kv_heads, head_dim, head_dim], float32
    norm: torch.Tensor  # z: [batch, kv_heads, head_dim], float32
    keys: torch.Tensor  # RoPE'd keys of the current segment so far: [batch, kv_heads, t, head_dim]
    values: torch.Tensor  # values of the current segment so far: [batch, kv_heads, t, head_dim]
    # Memory features of the segment's keys (before RoPE), float32 [batch, kv_heads, t, head_dim]: σ(K) for the
    # paper's updates; √β·K/|K| for delta_l2 and gated_delta, whose write strength β is then the row's squared norm.
    memory_keys: torch.Tensor
    # log α_t of the segment's tokens, float32 [batch, kv_heads, t]: gated_delta's decay (empty for other rules).
    log_decay: torch.Tensor
    # The queries and keys (before RoPE) of the last memory_conv_size − 1 tokens of the stream, [batch, K − 1,
    # (heads + kv_heads)·head_dim]: the history of the memory's short convolution. It runs over the whole stream,
    # across segment boundaries, so it is kept when a segment is folded (0 rows without the convolution).
    conv_tail: torch.Tensor

    def fold(self, update: str, eps: float, detach: bool, write: bool = True, kernel: str = "torch") -> None:
        """Write the finished segment into memory (docs/ARCHITECTURE.md §2; skipped when `write` is False, the memory-off
        control) and start an empty local cache."""
        if write:
            with torch.autocast(self.memory.device.type, enabled=False):  # the memory accumulates in float32
                _, _, self.memory, self.norm = memory_scan(
                    update, self.memory, self.norm, self.memory_keys.unsqueeze(2), self.values.unsqueeze(2),
                    eps, detach_after=[detach], kernel=kernel, log_decay=self.log_decay.unsqueeze(2),
                )
        self.keys, self.values = self.keys[:, :, :0], self.values[:, :, :0]
        self.memory_keys, self.log_decay = self.memory_keys[:, :, :0], self.log_decay[:, :, :0]


class InfiniCacheBase(Cache):
    """What transformers' `generate` asks of every Infini cache beyond its tensors: the number of tokens consumed
    (`generate` feeds only the tokens after it), no length limit (the memory has a fixed size), never cropped (what
    was folded into the memory cannot be removed), never sliding. Subclasses say whether they are `linear` (a
    fixed-size state: `generate` then builds no attention mask) and `compileable`."""

    linear = False
    compileable = False
    seen_tokens: int

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(layers={len(self.layers)}, batch={self.batch_size}, "
                f"seen_tokens={self.seen_tokens}, segments={self.segments}, position={self.position})")

    @property
    def batch_size(self) -> int:
        return self.layers[0].memory.shape[0]

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return self.seen_tokens

    def get_max_length(self, layer_idx: int | None = None) -> int:
        return -1  # no limit: the memory has a fixed size

    def crop(self, tokens_to_remove: int) -> None:
        raise NotImplementedError("an Infini cache cannot be cropped: tokens folded into the memory cannot be removed")

    @property
    def is_linear(self) -> list[bool]:
        return [self.linear] * len(self.layers)

    @property
    def is_sliding(self) -> list[bool]:
        return [False] * len(self.layers)

    @property
    def is_dummy(self) -> list[bool]:
        return [False] * len(self.layers)

    @property
    def is_compileable(self) -> bool:
        return self.compileable

    @property
    def is_croppable(self) -> bool:
        return False

    @property
    def is_initialized(self) -> bool:
        return True


class InfiniCache(InfiniCacheBase):
    """The state of an Infini model as a transformers `Cache`: what `InfiniForCausalLM` returns as `out.cache` and
    takes back as `cache=`, and what `generate` carries between steps (greedy, sampling, beams).

    `layers` holds one `LayerState` per decoder layer; `position` is the number of tokens already in the current
    segment, `segments` the number of segments folded into memory, `seen_tokens` the total tokens consumed
    (`get_seq_length`: `generate` feeds only the tokens after it). A forward call never mutates the cache it was
    given, so one prefilled cache can be continued many ways; the batch methods `generate` calls (beam reordering,
    expansion) act in place, as on any transformers cache.
    """

    def __init__(self, layers: list[LayerState], position: int = 0, segments: int = 0, seen_tokens: int = 0):
        super().__init__(layers=layers)
        self.position, self.segments, self.seen_tokens = position, segments, seen_tokens

    @classmethod
    def empty(
        cls, num_layers: int, batch: int, kv_heads: int, head_dim: int, device, dtype, conv_tail: tuple[int, int]
    ) -> "InfiniCache":
        """`conv_tail`: (rows, channels) of each layer's convolution history, zeros (the stream's start)."""

        def layer() -> LayerState:
            return LayerState(
                memory=torch.zeros(batch, kv_heads, head_dim, head_dim, device=device, dtype=torch.float32),
                norm=torch.zeros(batch, kv_heads, head_dim, device=device, dtype=torch.float32),
                keys=torch.zeros(batch, kv_heads, 0, head_dim, device=device, dtype=dtype),
                values=torch.zeros(batch, kv_heads, 0, head_dim, device=device, dtype=dtype),
                memory_keys=torch.zeros(batch, kv_heads, 0, head_dim, device=device, dtype=torch.float32),
                log_decay=torch.zeros(batch, kv_heads, 0, device=device, dtype=torch.float32),
                conv_tail=torch.zeros(batch, *conv_tail, device=device, dtype=dtype),
            )

        return cls(layers=[layer() for _ in range(num_layers)])

    def map(self, fn) -> "InfiniCache":
        """A new cache with `fn` applied to every tensor (the original is left as it was)."""
        return InfiniCache(
            layers=[
                LayerState(*(fn(t) for t in (l.memory, l.norm, l.keys, l.values, l.memory_keys, l.log_decay,
                                             l.conv_tail)))
                for l in self.layers
            ],
            position=self.position,
            segments=self.segments,
            seen_tokens=self.seen_tokens,
        )

    def copy(self) -> "InfiniCache":
        return self.map(lambda t: t)

    def detach(self) -> "InfiniCache":
        """A copy with no autograd history (truncated backpropagation by the caller)."""
        return self.map(torch.Tensor.detach)

    def select(self, index: torch.Tensor) -> "InfiniCache":
        """Rows `index` of the batch, as a new cache: one prefilled context expanded to many requests."""
        return self.map(lambda t: t.index_select(0, index.to(t.device)))

    def to(self, device) -> "InfiniCache":
        return self.map(lambda t: t.to(device))

    # --- transformers' Cache interface, as `generate` uses it --------------------------------------------------
    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        self.layers = self.select(beam_idx).layers

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        self.layers = self.select(indices).layers

    def batch_repeat_interleave(self, repeats: int) -> None:
        self.layers = self.select(torch.arange(self.batch_size).repeat_interleave(repeats)).layers

    def reset(self) -> None:
        self.layers = [
            LayerState(torch.zeros_like(l.memory), torch.zeros_like(l.norm), l.keys[:, :, :0], l.values[:, :, :0],
                       l.memory_keys[:, :, :0], l.log_decay[:, :, :0], torch.zeros_like(l.conv_tail))
            for l in self.layers
        ]
        self.position = self.segments = self.seen_tokens = 0
