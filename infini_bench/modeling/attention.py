"""Infini-attention (arXiv 2404.07143): local causal attention within a segment, mixed per head with retrieval
from a compressive memory of all earlier segments. The maths is DESIGN.md §4."""
from __future__ import annotations

import math

import torch
from torch import nn

from .configuration_infini import InfiniConfig
from .local_attention import local_causal_attention
from .memory import LayerState, sigma, unit
from .rotary import apply_rotary


def gate_values(beta: torch.Tensor, activation: str) -> torch.Tensor:
    """g = act(β), one value per query head, in [0, 1]."""
    if activation == "sigmoid":
        return torch.sigmoid(beta)
    if activation == "hard_sigmoid":
        return torch.clamp(0.2 * beta + 0.5, 0.0, 1.0)
    if activation == "tanh":
        return 0.5 * (1.0 + torch.tanh(beta))
    raise ValueError(f"gate_activation={activation!r} is unknown")


class InfiniAttention(nn.Module):
    def __init__(self, config: InfiniConfig, layer_idx: int):
        super().__init__()
        self.config = config
        self.layer_idx = layer_idx
        self.num_heads = config.num_attention_heads
        self.num_kv_heads = config.num_key_value_heads
        self.head_dim = config.head_dim
        self.scale = 1.0 / math.sqrt(self.head_dim)
        bias = config.attention_bias
        self.q_proj = nn.Linear(config.hidden_size, self.num_heads * self.head_dim, bias=bias)
        self.k_proj = nn.Linear(config.hidden_size, self.num_kv_heads * self.head_dim, bias=bias)
        self.v_proj = nn.Linear(config.hidden_size, self.num_kv_heads * self.head_dim, bias=bias)
        self.o_proj = nn.Linear(self.num_heads * self.head_dim, config.hidden_size, bias=bias)
        self.gate = nn.Parameter(torch.zeros(self.num_heads))  # β, one per query head
        if config.memory_update == "delta_l2":  # per-token, per-kv-head write strength of the delta rule
            self.write_strength = nn.Linear(config.hidden_size, self.num_kv_heads, bias=True)

    def forward(self, hidden: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, state: LayerState) -> torch.Tensor:
        """`hidden` [B, n, D] lies inside one segment, after the `state.keys.shape[2]` tokens already cached.

        Updates `state` (the caller's copy): appends this piece's keys/values to the segment cache."""
        b, n, _ = hidden.shape
        q = self.q_proj(hidden).view(b, n, self.num_heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(hidden).view(b, n, self.num_kv_heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(hidden).view(b, n, self.num_kv_heads, self.head_dim).transpose(1, 2)

        state.keys = torch.cat([state.keys, apply_rotary(k, cos, sin)], dim=2)
        state.values = torch.cat([state.values, v], dim=2)
        out = local_causal_attention(apply_rotary(q, cos, sin), state.keys, state.values, self.scale)

        if self.config.use_memory:
            state.memory_keys = torch.cat([state.memory_keys, self._memory_keys(hidden, k)], dim=2)
            retrieved = self._retrieve(q, state)
            g = gate_values(self.gate, self.config.gate_activation).view(1, -1, 1, 1)
            out = g * retrieved.to(out.dtype) + (1.0 - g) * out
        out = out.to(hidden.dtype).transpose(1, 2).reshape(b, n, self.num_heads * self.head_dim)
        return self.o_proj(out)

    def _memory_keys(self, hidden: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        if self.config.memory_update != "delta_l2":
            return sigma(k)
        beta = torch.sigmoid(self.write_strength(hidden).float()).transpose(1, 2).unsqueeze(-1)  # [B, H_kv, n, 1]
        return beta.sqrt() * unit(k)

    def _retrieve(self, q: torch.Tensor, state: LayerState) -> torch.Tensor:
        """A_mem = σ(Q) M / (σ(Q) z + eps), or Q/|Q| M for delta_l2 (no normaliser), each query head reading its
        key/value group's memory (float32)."""
        b, h, n, d = q.shape
        groups = (b, self.num_kv_heads, h // self.num_kv_heads, n, d)
        if self.config.memory_update == "delta_l2":
            return (unit(q).view(groups) @ state.memory.unsqueeze(2)).view(b, h, n, -1)
        sq = sigma(q).view(groups)
        num = sq @ state.memory.unsqueeze(2)
        den = sq @ state.norm[:, :, None, :, None] + self.config.memory_eps
        return (num / den).view(b, h, n, -1)
