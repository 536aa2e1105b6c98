"""Rotary position embedding (Llama's rotate-half convention) with transformers' own RoPE variants; positions
restart at 0 in every segment.

The frequencies and the attention scaling come from transformers (`ROPE_INIT_FUNCTIONS`, the functions its Llama
uses), so every `rope_type` it supports means here what it means there. Two types depend on the sequence length
in transformers: `dynamic` (NTK scaling once the input is longer than `max_position_embeddings`) and `longrope`
(long factors once it is longer than `original_max_position_embeddings`). Positions here never exceed a segment,
so both are computed once for a sequence of `segment_length` tokens: the frequencies transformers' Llama uses for
an input of that length, the same for every segment, every call and every decoding step (streaming then equals one
call, which transformers' per-call rescaling does not promise).
"""
from __future__ import annotations

import torch
from transformers import PretrainedConfig
from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS
from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding

_LENGTH_DEPENDENT = ("dynamic", "longrope")


def inverse_frequencies(config: PretrainedConfig, device=None) -> tuple[torch.Tensor, float]:
    """(inv_freq [head_dim / 2] float32, attention scaling) for `config.rope_parameters`, by transformers."""
    rope_type = config.rope_parameters["rope_type"]
    if rope_type == "default":
        return LlamaRotaryEmbedding.compute_default_rope_parameters(config, device=device)
    if rope_type in _LENGTH_DEPENDENT:
        return ROPE_INIT_FUNCTIONS[rope_type](config, device, seq_len=config.segment_length)
    return ROPE_INIT_FUNCTIONS[rope_type](config, device)


class SegmentRotary:
    """cos, sin of in-segment positions, from frequencies computed once per device (float32, not a buffer, so a
    model cast to bf16 keeps exact frequencies)."""

    def __init__(self, config: PretrainedConfig):
        self.config = config
        self._frequencies: dict[str, tuple[torch.Tensor, float]] = {}

    def __call__(self, start: int, length: int, device, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """cos, sin for positions start .. start+length-1, shaped [length, head_dim], computed in float32."""
        key = str(device)
        if key not in self._frequencies:
            inv_freq, scaling = inverse_frequencies(self.config, device)
            self._frequencies[key] = (inv_freq.to(device=device, dtype=torch.float32), float(scaling))
        inv_freq, scaling = self._frequencies[key]
        positions = torch.arange(start, start + length, device=device, dtype=torch.float32)
        emb = torch.outer(positions, inv_freq).repeat(1, 2)
        return (emb.cos() * scaling).to(dtype), (emb.sin() * scaling).to(dtype)


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat([-x[..., half:], x[..., :half]], dim=-1)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    return x * cos + rotate_half(x) * sin
