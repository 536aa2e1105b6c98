"""The streaming state of an Infini model: per layer the compressive memory (M, z) in float32 and the local
key/value cache of the current, unfinished segment.

One state object serves streaming evaluation, training across segments and generation: a forward call continues
the stream exactly where the state left off.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .memory_ops import DELTA_CHUNK, memory_scan, sigma, unit  # noqa: F401  (re-exported: the state's features)


@dataclass
class LayerState:
    memory: torch.Tensor  # M: [batch, kv_heads, head_dim, head_dim], float32
    norm: torch.Tensor  # z: [batch, kv_heads, head_dim], float32
    keys: torch.Tensor  # RoPE'd keys of the current segment so far: [batch, kv_heads, t, head_dim]
    values: torch.Tensor  # values of the current segment so far: [batch, kv_heads, t, head_dim]
    # Memory features of the segment's keys (before RoPE), float32 [batch, kv_heads, t, head_dim]: σ(K) for the
    # paper's updates; √β·K/|K| for delta_l2, whose write strength β is then the row's squared norm.
    memory_keys: torch.Tensor

    def fold(self, update: str, eps: float, detach: bool, write: bool = True, kernel: str = "torch") -> None:
        """Write the finished segment into memory (DESIGN §4; skipped when `write` is False, the memory-off
        control) and start an empty local cache."""
        if write:
            with torch.autocast(self.memory.device.type, enabled=False):  # the memory accumulates in float32
                _, _, self.memory, self.norm = memory_scan(
                    update, self.memory, self.norm, self.memory_keys.unsqueeze(2), self.values.unsqueeze(2),
                    eps, detach_after=[detach], kernel=kernel,
                )
        self.keys, self.values, self.memory_keys = self.keys[:, :, :0], self.values[:, :, :0], self.memory_keys[:, :, :0]


@dataclass
class InfiniState:
    """What `InfiniForCausalLM` returns as `out.memory` and takes back as `memory=`.

    `position` is the number of tokens already in the current segment, `segments` the number of segments folded
    into memory, `seen_tokens` the total tokens consumed (generation uses it to feed only new tokens).
    A forward call never mutates the state it was given, so one prefilled state can be continued many ways.
    """

    layers: list[LayerState]
    position: int = 0
    segments: int = 0
    seen_tokens: int = 0

    @classmethod
    def empty(cls, num_layers: int, batch: int, kv_heads: int, head_dim: int, device, dtype) -> "InfiniState":
        def layer() -> LayerState:
            return LayerState(
                memory=torch.zeros(batch, kv_heads, head_dim, head_dim, device=device, dtype=torch.float32),
                norm=torch.zeros(batch, kv_heads, head_dim, device=device, dtype=torch.float32),
                keys=torch.zeros(batch, kv_heads, 0, head_dim, device=device, dtype=dtype),
                values=torch.zeros(batch, kv_heads, 0, head_dim, device=device, dtype=dtype),
                memory_keys=torch.zeros(batch, kv_heads, 0, head_dim, device=device, dtype=torch.float32),
            )

        return cls(layers=[layer() for _ in range(num_layers)])

    @property
    def batch_size(self) -> int:
        return self.layers[0].memory.shape[0]

    def map(self, fn) -> "InfiniState":
        """A new state with `fn` applied to every tensor (the original is left as it was)."""
        return InfiniState(
            layers=[
                LayerState(*(fn(t) for t in (l.memory, l.norm, l.keys, l.values, l.memory_keys))) for l in self.layers
            ],
            position=self.position,
            segments=self.segments,
            seen_tokens=self.seen_tokens,
        )

    def copy(self) -> "InfiniState":
        return self.map(lambda t: t)

    def detach(self) -> "InfiniState":
        """A copy with no autograd history (truncated backpropagation by the caller)."""
        return self.map(torch.Tensor.detach)

    def select(self, index: torch.Tensor) -> "InfiniState":
        """Rows `index` of the batch: beam reordering, or one prefilled context expanded to many requests."""
        return self.map(lambda t: t.index_select(0, index.to(t.device)))

    def to(self, device) -> "InfiniState":
        return self.map(lambda t: t.to(device))
