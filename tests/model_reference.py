"""An independent float64 re-computation of the equations in docs/ARCHITECTURE.md §2, written from the equations, for checking the model.

It processes the whole sequence segment by segment with plain loops and explicit head indexing; it shares no code
with `infini_bench.modeling`."""
from __future__ import annotations

import math

import torch


def _rms(x, w, eps):
    return w * (x / torch.sqrt((x * x).mean(-1, keepdim=True) + eps))


def _rope(x, positions, theta):
    d = x.shape[-1]
    inv = torch.tensor([1.0 / theta ** (2 * i / d) for i in range(d // 2)], dtype=torch.float64)
    ang = positions[:, None].double() * inv[None, :]
    cos, sin = torch.cos(ang), torch.sin(ang)
    x1, x2 = x[..., : d // 2], x[..., d // 2 :]
    return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1)


def _sigma(x):
    return torch.where(x > 0, x + 1.0, torch.exp(x))  # ELU + 1


def _unit(x):
    return x / torch.sqrt((x * x).sum(-1, keepdim=True)).clamp_min(1e-6)


def _gate(beta, kind):
    if kind == "sigmoid":
        return 1.0 / (1.0 + torch.exp(-beta))
    if kind == "hard_sigmoid":
        return torch.clamp(0.2 * beta + 0.5, 0.0, 1.0)
    if kind == "orig_tanh":
        return torch.tanh(beta)
    if kind == "tanh_abs":
        return torch.abs(torch.tanh(beta))
    return (1.0 + torch.tanh(beta)) / 2.0


def reference_logits(model, input_ids: torch.Tensor, terms: list | None = None) -> torch.Tensor:
    """Logits [B, T, V] in float64 for the whole sequence. With `terms` (a list), each layer appends its two mix
    terms (g·A_mem, (1 − g)·A_local), [B, T, H, d] each (zero when the memory is off), for `infini-bench inspect`."""
    c = model.config
    sd = {k: v.detach().double() for k, v in model.state_dict().items()}
    H, Hkv, d = c.num_attention_heads, c.num_key_value_heads, c.head_dim
    group = H // Hkv
    L = c.segment_length
    B, T = input_ids.shape
    x = sd["model.embed_tokens.weight"][input_ids]  # [B, T, D]
    for layer in range(c.num_hidden_layers):
        p = f"model.layers.{layer}."
        h = _rms(x, sd[p + "input_layernorm.weight"], c.rms_norm_eps)
        q = (h @ sd[p + "self_attn.q_proj.weight"].T).view(B, T, H, d)
        k = (h @ sd[p + "self_attn.k_proj.weight"].T).view(B, T, Hkv, d)
        v = (h @ sd[p + "self_attn.v_proj.weight"].T).view(B, T, Hkv, d)
        g = _gate(sd[p + "self_attn.gate"], c.gate_activation)
        qm, km = q, k  # the memory's queries and keys
        if c.memory_conv_size:  # y_t = Σ_j w_j x_{t−K+1+j} per channel over the stream, x = 0 before its start
            w = sd[p + "self_attn.memory_conv.weight"][:, 0]  # [channels, K]
            K = c.memory_conv_size
            rows = torch.cat([q.reshape(B, T, H * d), k.reshape(B, T, Hkv * d)], dim=-1)
            mixed = torch.zeros_like(rows)
            for t in range(T):
                for j in range(K):
                    if t - K + 1 + j >= 0:
                        mixed[:, t] += w[:, j] * rows[:, t - K + 1 + j]
            qm, km = mixed[..., : H * d].view(B, T, H, d), mixed[..., H * d :].view(B, T, Hkv, d)
        bounded = c.memory_update in ("delta_l2", "gated_delta")  # unit keys, no normaliser
        if bounded:  # write strength β_t per token and kv head
            w, bias = sd[p + "self_attn.write_strength.weight"], sd[p + "self_attn.write_strength.bias"]
            write = 1.0 / (1.0 + torch.exp(-(h @ w.T + bias)))  # [B, T, Hkv]
        decay = torch.ones(B, T, Hkv, dtype=torch.float64)  # α_t: 1 except for gated_delta
        if c.memory_update == "gated_delta":  # α_t = exp(−exp(A_log)·softplus(a_t + dt_bias))
            a = h @ sd[p + "self_attn.decay_proj.weight"].T + sd[p + "self_attn.decay_bias"]
            softplus = torch.where(a > 30, a, torch.log1p(torch.exp(a)))
            decay = torch.exp(-torch.exp(sd[p + "self_attn.decay_log_rate"]) * softplus)
        M = torch.zeros(B, Hkv, d, d, dtype=torch.float64)
        z = torch.zeros(B, Hkv, d, dtype=torch.float64)
        attn_out = torch.zeros(B, T, H, d, dtype=torch.float64)
        mem_term, local_term = torch.zeros(B, T, H, d, dtype=torch.float64), torch.zeros(B, T, H, d, dtype=torch.float64)
        for s0 in range(0, T, L):
            s1 = min(s0 + L, T)
            n = s1 - s0
            pos = torch.arange(n)
            for b in range(B):
                for head in range(H):
                    kv = head // group
                    qs, ks, vs = q[b, s0:s1, head], k[b, s0:s1, kv], v[b, s0:s1, kv]
                    qr, kr = _rope(qs, pos, c.rope_theta), _rope(ks, pos, c.rope_theta)
                    scores = qr @ kr.T / math.sqrt(d)
                    scores = scores.masked_fill(torch.triu(torch.ones(n, n, dtype=torch.bool), 1), float("-inf"))
                    local = torch.softmax(scores, dim=-1) @ vs
                    if c.use_memory and bounded:
                        mem = _unit(qm[b, s0:s1, head]) @ M[b, kv]
                        mem_term[b, s0:s1, head], local_term[b, s0:s1, head] = g[head] * mem, (1 - g[head]) * local
                        local = g[head] * mem + (1 - g[head]) * local
                    elif c.use_memory:
                        sq = _sigma(qm[b, s0:s1, head])
                        den = (sq @ z[b, kv])[:, None] + c.memory_eps
                        mem = (sq @ M[b, kv]) / den if s0 else torch.zeros_like(local)  # an empty memory reads 0
                        mem_term[b, s0:s1, head], local_term[b, s0:s1, head] = g[head] * mem, (1 - g[head]) * local
                        local = g[head] * mem + (1 - g[head]) * local
                    attn_out[b, s0:s1, head] = local
            if c.use_memory and s1 - s0 == L:  # a finished segment is written into memory
                for b in range(B):
                    for kv in range(Hkv):
                        if bounded:  # one token at a time: M ← αM, then M += β k̂ᵀ(v − k̂M)
                            for t in range(s0, s1):
                                kt = _unit(km[b, t, kv])
                                M[b, kv] = decay[b, t, kv] * M[b, kv]
                                err = v[b, t, kv] - kt @ M[b, kv]
                                M[b, kv] = M[b, kv] + write[b, t, kv] * torch.outer(kt, err)
                            continue
                        sk, vs = _sigma(km[b, s0:s1, kv]), v[b, s0:s1, kv]
                        if c.memory_update == "delta" and s0:
                            vs = vs - (sk @ M[b, kv]) / ((sk @ z[b, kv])[:, None] + c.memory_eps)
                        M[b, kv] = M[b, kv] + sk.T @ vs
                        z[b, kv] = z[b, kv] + sk.sum(0)
        if terms is not None:
            terms.append((mem_term, local_term))
        x = x + attn_out.reshape(B, T, H * d) @ sd[p + "self_attn.o_proj.weight"].T
        h = _rms(x, sd[p + "post_attention_layernorm.weight"], c.rms_norm_eps)
        gate = h @ sd[p + "mlp.gate_proj.weight"].T
        up = h @ sd[p + "mlp.up_proj.weight"].T
        x = x + (gate * torch.sigmoid(gate) * up) @ sd[p + "mlp.down_proj.weight"].T
    x = _rms(x, sd["model.norm.weight"], c.rms_norm_eps)
    head = sd.get("lm_head.weight", sd["model.embed_tokens.weight"])
    return x @ head.T
