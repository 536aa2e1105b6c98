"""Infini-attention (arXiv 2404.07143): local causal attention within a segment, mixed per head with retrieval
from a compressive memory of all earlier segments. The maths is docs/ARCHITECTURE.md §2."""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .configuration_infini import InfiniConfig
from .local_attention import local_causal_attention
from .memory import LayerState
from .memory_features import sigma, unit
from .memory_ops import memory_read, segment_retrievals
from .rotary import apply_rotary


def gate_values(beta: torch.Tensor, activation: str) -> torch.Tensor:
    """g = act(β), one value per query head: in [0, 1], or [−1, 1] for nanotron's orig_tanh."""
    if activation == "sigmoid":
        return torch.sigmoid(beta)
    if activation == "hard_sigmoid":
        return torch.clamp(0.2 * beta + 0.5, 0.0, 1.0)
    if activation == "tanh":
        return 0.5 * (1.0 + torch.tanh(beta))
    if activation == "orig_tanh":  # nanotron's: g in [-1, 1]
        return torch.tanh(beta)
    if activation == "tanh_abs":
        return torch.tanh(beta).abs()
    raise ValueError(f"gate_activation={activation!r} is unknown")


def causal_depthwise_conv(stream: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """y_t = Σ_j w_j x_{t+j} per channel over `stream` [B, K − 1 + n, C] (its first K − 1 rows are history), as
    [B, n, C]; `weight` is a depthwise Conv1d's [C, 1, K].

    On a CPU without gradients (evaluation, generation) it is K multiply-adds on the [B, n, C] layout: as fast as
    Conv1d, which copies the rows to [B, C, T] for a slow depthwise kernel, at one segment, and 3.4x faster on a
    2,048-token prefill chunk, 2.8x on one decoding step (a 4k-token evaluation had spent a fifth of its time in
    Conv1d; benchmarks/RESULTS_adapter.md §6). Training keeps Conv1d, whose backward is the faster one (0.7x
    otherwise), and so does CUDA, where cuDNN's kernel accumulates half-precision inputs in float32."""
    needs_grad = torch.is_grad_enabled() and (stream.requires_grad or weight.requires_grad)
    if needs_grad or stream.device.type != "cpu":
        return F.conv1d(stream.transpose(1, 2), weight, groups=weight.shape[0]).transpose(1, 2)
    taps = weight[:, 0].to(stream.dtype)  # [C, K]
    width, n = taps.shape[1], stream.shape[1] - taps.shape[1] + 1
    out = stream[:, :n] * taps[:, 0]
    for j in range(1, width):
        out.addcmul_(stream[:, j : j + n], taps[:, j])
    return out


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
        # opt-in hook (`infini-bench inspect`): called with the two terms g·A_mem and (1 − g)·A_local that `_mix`
        # adds; None (the default) costs nothing and no observer changes the output
        self.mix_observer: Callable[[torch.Tensor, torch.Tensor], None] | None = None
        self.memory_conv = None  # the memory's short convolution over [queries | keys], one filter per channel
        if config.memory_conv_size:
            channels = (self.num_heads + self.num_kv_heads) * self.head_dim
            self.memory_conv = nn.Conv1d(channels, channels, config.memory_conv_size, groups=channels, bias=False)
        if config.memory_update in ("delta_l2", "gated_delta"):  # per-token, per-kv-head write strength β_t
            self.write_strength = nn.Linear(config.hidden_size, self.num_kv_heads, bias=True)
        if config.memory_update == "gated_delta":  # Gated DeltaNet's decay: log α_t = −exp(A_log)·softplus(a_t + dt_bias)
            self.decay_proj = nn.Linear(config.hidden_size, self.num_kv_heads, bias=False)
            self.decay_log_rate = nn.Parameter(torch.zeros(self.num_kv_heads))  # A_log
            self.decay_bias = nn.Parameter(torch.zeros(self.num_kv_heads))  # dt_bias

    def forward(self, hidden: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, state: LayerState) -> torch.Tensor:
        """The segment-by-segment form (decoding, partial segments, the reference): `hidden` [B, n, D] lies inside
        one segment, after the `state.keys.shape[2]` tokens already cached.

        Updates `state` (the caller's copy): appends this piece's keys/values to the segment cache."""
        b, n, _ = hidden.shape
        q, k, v = self._project(hidden)
        state.keys = torch.cat([state.keys, apply_rotary(k, cos, sin)], dim=2)
        state.values = torch.cat([state.values, v], dim=2)
        out = self._local(apply_rotary(q, cos, sin), state.keys, state.values)
        if self.config.use_memory:
            q, k = self._memory_queries_keys(q, k, state)
            state.memory_keys = torch.cat([state.memory_keys, self._memory_keys(hidden, k)], dim=2)
            if self.config.memory_update == "gated_delta":  # the other rules keep an empty log_decay
                state.log_decay = torch.cat([state.log_decay, self._log_decay(hidden)], dim=2)
            groups = (b, self.num_kv_heads, self.num_heads // self.num_kv_heads, n, self.head_dim)
            retrieved = memory_read(
                self.config.memory_update, q.view(groups), state.memory[:, :, None], state.norm[:, :, None],
                self.config.memory_eps,
            )
            out = self._mix(retrieved.view_as(q), out)
        return self.o_proj(out.to(hidden.dtype).transpose(1, 2).reshape(b, n, self.num_heads * self.head_dim))

    def forward_segments(
        self,
        hidden: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        state: LayerState,
        detach_after: Sequence[bool],
        kernel: str = "torch",
    ) -> torch.Tensor:
        """The parallel form (training, prefill): `hidden` [B, S·L, D] is S whole segments of L tokens, starting on
        a segment boundary (the local cache in `state` is empty). Local attention runs as one batched call with the
        segments in the batch; every segment's retrieval from the memory as it was before it, and the memory after
        the last one (left in `state`), come from one op (`segment_retrievals`: a scan and one batched read, or a
        single fla-core kernel call; `kernel`, resolved once per forward call by the model, says which)."""
        b, total, _ = hidden.shape
        seg = cos.shape[0]
        s = total // seg
        q, k, v = self._project(hidden)  # [B, H, S·L, d]

        def by_segment(x: torch.Tensor) -> torch.Tensor:  # [B, H, S·L, d] -> [B·S, H, L, d]
            return x.unflatten(2, (s, seg)).transpose(1, 2).flatten(0, 1)

        out = self._local(by_segment(apply_rotary(q, cos.repeat(s, 1), sin.repeat(s, 1))),
                          by_segment(apply_rotary(k, cos.repeat(s, 1), sin.repeat(s, 1))), by_segment(v))
        out = out.unflatten(0, (b, s)).transpose(1, 2).flatten(2, 3)  # [B, H, S·L, d]
        if self.config.use_memory:
            c = self.config
            q, k = self._memory_queries_keys(q, k, state)
            keys = self._memory_keys(hidden, k).unflatten(2, (s, seg))  # [B, H_kv, S, L, d]
            queries = q.view(b, self.num_kv_heads, self.num_heads // self.num_kv_heads, s, seg, self.head_dim)
            gated = c.memory_update == "gated_delta"
            log_decay = self._log_decay(hidden).unflatten(2, (s, seg)) if gated else None  # [B, H_kv, S, L]
            with torch.autocast(hidden.device.type, enabled=False):  # the memory accumulates in float32
                retrieved, state.memory, state.norm = segment_retrievals(
                    c.memory_update, state.memory, state.norm, keys, v.unflatten(2, (s, seg)), queries,
                    c.memory_eps, detach_after=detach_after, kernel=kernel, log_decay=log_decay,
                )
            out = self._mix(retrieved.reshape(q.shape), out)
        return self.o_proj(out.to(hidden.dtype).transpose(1, 2).reshape(b, total, self.num_heads * self.head_dim))

    def _project(self, hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        b, n, _ = hidden.shape
        q = self.q_proj(hidden).view(b, n, self.num_heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(hidden).view(b, n, self.num_kv_heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(hidden).view(b, n, self.num_kv_heads, self.head_dim).transpose(1, 2)
        return q, k, v

    def _memory_queries_keys(
        self, q: torch.Tensor, k: torch.Tensor, state: LayerState
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The memory's queries and keys: q and k themselves, or with `memory_conv_size` their depthwise causal
        convolution over the token stream, continued from `state.conv_tail` (which it advances)."""
        if self.memory_conv is None:
            return q, k
        b, _, n, d = q.shape
        rows = torch.cat([q.transpose(1, 2).flatten(2), k.transpose(1, 2).flatten(2)], dim=-1)  # [B, n, C]
        stream = torch.cat([state.conv_tail.to(rows.dtype), rows], dim=1)
        state.conv_tail = stream[:, stream.shape[1] - state.conv_tail.shape[1] :]
        mixed = causal_depthwise_conv(stream, self.memory_conv.weight)  # [B, n, C]: no padding, the tail is history
        queries, keys = mixed.split([self.num_heads * d, self.num_kv_heads * d], dim=-1)
        queries = queries.view(b, n, self.num_heads, d).transpose(1, 2)
        return queries, keys.view(b, n, self.num_kv_heads, d).transpose(1, 2)

    def _local(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return local_causal_attention(q, k, v, self.scale, self.config._attn_implementation or "sdpa")

    def _mix(self, retrieved: torch.Tensor, local: torch.Tensor) -> torch.Tensor:
        """A = g·A_mem + (1 − g)·A_local, g = act(β) per query head."""
        g = gate_values(self.gate, self.config.gate_activation).view(1, -1, *([1] * (local.dim() - 2)))
        memory_term, local_term = g * retrieved.to(local.dtype), (1.0 - g) * local
        if self.mix_observer is not None:
            self.mix_observer(memory_term, local_term)
        return memory_term + local_term

    def _memory_keys(self, hidden: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        if self.config.memory_update not in ("delta_l2", "gated_delta"):
            return sigma(k)
        beta = torch.sigmoid(self.write_strength(hidden).float()).transpose(1, 2).unsqueeze(-1)  # [B, H_kv, n, 1]
        return beta.sqrt() * unit(k)

    def _log_decay(self, hidden: torch.Tensor) -> torch.Tensor:
        """gated_delta's log α_t ≤ 0 per token and kv head, float32 [B, H_kv, n], as Gated DeltaNet / Mamba-2
        parameterise it: −exp(A_log)·softplus(a_t + dt_bias)."""
        rate = self.decay_log_rate.float().exp()
        return (-rate * F.softplus(self.decay_proj(hidden).float() + self.decay_bias.float())).transpose(1, 2)
