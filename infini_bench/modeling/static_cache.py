"""`InfiniStaticCache`: an Infini model's state in preallocated buffers that are updated in place, so a decoding
step has fixed shapes and fixed addresses and can be captured by CUDA graphs (what transformers' `StaticCache` is
to a Llama).

Per layer it holds the memory M and normaliser z, and buffers of `segment_length` rows for the current segment's
keys, values, memory features and (gated_delta) log decays, plus the memory convolution's history. Which rows
are filled is `position`: a Python int for the host's decisions (when to fold) and the same number as a 0-d tensor
(`position_tensor`) that the captured step reads, so a step never depends on a Python value that changes from token
to token. Unlike an `InfiniCache`, a forward call continues this cache in place (as transformers' static caches
do); `to_dynamic()` views it as an `InfiniCache` and `load_()` writes one back, which is how a prompt of several
tokens (prefill) runs through the ordinary forward.
"""
from __future__ import annotations

from dataclasses import dataclass, fields

import torch

from .configuration_infini import InfiniConfig
from .fla_ops import resolve_kernel
from .memory import InfiniCache, InfiniCacheBase, LayerState
from .memory_ops import memory_scan


@dataclass
class StaticLayer:
    """One layer's buffers: the `LayerState` fields, with `segment_length` rows for the segment's tokens."""

    memory: torch.Tensor  # [B, H_kv, d, d] float32
    norm: torch.Tensor  # [B, H_kv, d] float32
    keys: torch.Tensor  # [B, H_kv, L, d], RoPE'd, model dtype
    values: torch.Tensor  # [B, H_kv, L, d], model dtype
    memory_keys: torch.Tensor  # [B, H_kv, L, d] float32
    log_decay: torch.Tensor  # [B, H_kv, L] float32 for gated_delta, [B, H_kv, 0] otherwise
    conv_tail: torch.Tensor  # [B, K - 1, C], model dtype

    def tensors(self) -> list[torch.Tensor]:
        return [getattr(self, f.name) for f in fields(self)]


class InfiniStaticCache(InfiniCacheBase):
    """The state of an Infini model in fixed buffers, for compiled (CUDA-graph) decoding.

    Made by `generate(..., cache_implementation="static")`, or from a prefilled `InfiniCache` with
    `InfiniStaticCache.from_cache(model, cache)`. A one-token forward call runs the fixed-shape decode step
    (`static_decode.py`); any other call runs the ordinary forward on `to_dynamic()` and writes the result back.
    Inference only: the buffers are written in place."""

    # A fixed-size state (the memory and one segment's buffer): "linear" in transformers' sense, so `generate`
    # builds no 4D attention mask for it, and compileable, so `generate` compiles the decode step on CUDA.
    linear = True
    compileable = True

    def __init__(self, config: InfiniConfig, batch_size: int, device, dtype: torch.dtype):
        self.config = config
        b, h, d, seg = batch_size, config.num_key_value_heads, config.head_dim, config.segment_length
        tail = (max(config.memory_conv_size - 1, 0), (config.num_attention_heads + h) * d)
        decay_rows = seg if config.memory_update == "gated_delta" else 0

        def zeros(*shape: int, dtype: torch.dtype = dtype) -> torch.Tensor:
            return torch.zeros(*shape, device=device, dtype=dtype)

        layers = [
            StaticLayer(
                memory=zeros(b, h, d, d, dtype=torch.float32), norm=zeros(b, h, d, dtype=torch.float32),
                keys=zeros(b, h, seg, d), values=zeros(b, h, seg, d),
                memory_keys=zeros(b, h, seg, d, dtype=torch.float32),
                log_decay=zeros(b, h, decay_rows, dtype=torch.float32), conv_tail=zeros(b, *tail),
            )
            for _ in range(config.num_hidden_layers)
        ]
        super().__init__(layers=layers)
        self.dtype, self.device = dtype, torch.device(device)
        self.position_tensor = torch.zeros((), dtype=torch.long, device=device)
        self.position = self.segments = self.seen_tokens = 0
        self._mark_static()

    def _mark_static(self) -> None:
        """Tell dynamo (and so CUDA graphs) that these tensors keep their address: the captured step writes into
        them instead of copying them in and out at every replay (transformers' StaticLayer does the same)."""
        for t in self.tensors():
            torch._dynamo.mark_static_address(t)

    @classmethod
    def from_cache(cls, config: InfiniConfig, cache: InfiniCache) -> "InfiniStaticCache":
        """A static cache holding the state of `cache` (left as it was)."""
        first = cache.layers[0]
        static = cls(config, cache.batch_size, first.memory.device, first.keys.dtype)
        static.load_(cache)
        return static

    def tensors(self) -> list[torch.Tensor]:
        return [t for layer in self.layers for t in layer.tensors()] + [self.position_tensor]

    # --- to and from the dynamic form (prefill and every call that is not one decoding step) -------------------
    def to_dynamic(self) -> InfiniCache:
        """An `InfiniCache` viewing the filled rows (no copy; the forward never writes into the tensors it is
        given, it builds new ones)."""
        p = self.position
        gated = self.config.memory_update == "gated_delta"
        layers = [
            LayerState(l.memory, l.norm, l.keys[:, :, :p], l.values[:, :, :p], l.memory_keys[:, :, :p],
                       l.log_decay[:, :, :p] if gated else l.log_decay, l.conv_tail)
            for l in self.layers
        ]
        return InfiniCache(layers, position=p, segments=self.segments, seen_tokens=self.seen_tokens)

    def load_(self, cache: InfiniCache) -> "InfiniStaticCache":
        """Write the state of `cache` into the buffers (same batch size), keeping their addresses."""
        if cache.batch_size != self.batch_size:
            raise ValueError(f"a static cache of batch {self.batch_size} cannot hold an InfiniCache of batch "
                             f"{cache.batch_size}")
        p = cache.position
        gated = self.config.memory_update == "gated_delta"
        for mine, theirs in zip(self.layers, cache.layers):
            mine.memory.copy_(theirs.memory)
            mine.norm.copy_(theirs.norm)
            mine.conv_tail.copy_(theirs.conv_tail)
            mine.keys[:, :, :p].copy_(theirs.keys)
            mine.values[:, :, :p].copy_(theirs.values)
            mine.memory_keys[:, :, :p].copy_(theirs.memory_keys)
            if gated:
                mine.log_decay[:, :, :p].copy_(theirs.log_decay)
        self.position, self.segments, self.seen_tokens = p, cache.segments, cache.seen_tokens
        self.position_tensor.fill_(p)
        return self

    # --- the segment boundary, outside the captured step -------------------------------------------------------
    def advance(self, model_dtype: torch.dtype) -> None:
        """Count the token the decode step just wrote (the step itself advanced `position_tensor`); when it
        filled the segment, fold the segment into memory, as `LayerState.fold` does, into the same buffers."""
        self.position += 1
        self.seen_tokens += 1
        if self.position < self.config.segment_length:
            return
        c = self.config
        if c.use_memory:
            kernel = resolve_kernel(c.memory_kernel, c.memory_update, self.device, model_dtype)
            for layer in self.layers:
                with torch.autocast(self.device.type, enabled=False):  # the memory accumulates in float32
                    _, _, memory, norm = memory_scan(
                        c.memory_update, layer.memory, layer.norm, layer.memory_keys.unsqueeze(2),
                        layer.values.unsqueeze(2), c.memory_eps, detach_after=[False], kernel=kernel,
                        log_decay=layer.log_decay.unsqueeze(2),
                    )
                layer.memory.copy_(memory)
                layer.norm.copy_(norm)
        self.segments += 1
        self.position = 0
        self.position_tensor.zero_()

    # --- transformers' Cache interface, as `generate` uses it --------------------------------------------------
    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        """Beam search: rows reordered in place (same addresses, so a captured step stays valid)."""
        for t in self.tensors()[:-1]:
            t.copy_(t.index_select(0, beam_idx.to(t.device)))

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        self._replace_rows(indices.to(self.device))

    def batch_repeat_interleave(self, repeats: int) -> None:
        self._replace_rows(torch.arange(self.batch_size, device=self.device).repeat_interleave(repeats))

    def _replace_rows(self, index: torch.Tensor) -> None:
        """A new batch made of rows `index`: new buffers (a captured step for the old batch size does not apply)."""
        for layer in self.layers:
            for f in fields(layer):
                setattr(layer, f.name, getattr(layer, f.name).index_select(0, index))
        self._mark_static()

    def reset(self) -> None:
        for t in self.tensors():
            t.zero_()
        self.position = self.segments = self.seen_tokens = 0
