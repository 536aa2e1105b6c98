"""Causal softmax attention inside one segment, by the backend `config._attn_implementation` names, as transformers
chooses it: "sdpa" (PyTorch's scaled_dot_product_attention, the default), "flash_attention_2" (flash-attn, on
CUDA in bf16/fp16; transformers checks at load time that it is installed) or "eager" (plain matmuls)."""
from __future__ import annotations

import torch
import torch.nn.functional as F

ATTN_IMPLEMENTATIONS = ("sdpa", "flash_attention_2", "eager")


def local_causal_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float, implementation: str = "sdpa"
) -> torch.Tensor:
    """q: [B, H, n, d] are the last n of the t = k.shape[2] positions; k, v: [B, H_kv, t, d] (GQA when H_kv < H).

    Query i (absolute position t - n + i) sees keys 0 .. t - n + i: causal with the cache as a prefix.
    Returns [B, H, n, d].
    """
    n, t = q.shape[2], k.shape[2]
    if implementation == "flash_attention_2":
        if not q.is_cuda or q.dtype not in (torch.float16, torch.bfloat16):
            raise ValueError(
                f"attn_implementation='flash_attention_2' runs on CUDA in bf16/fp16, not on {q.device} in {q.dtype}: "
                "load with dtype=bfloat16 on a GPU, or attn_implementation='sdpa'"
            )
        from flash_attn import flash_attn_func  # bottom-right aligned causal mask == cache-as-prefix semantics

        out = flash_attn_func(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), softmax_scale=scale, causal=True)
        return out.transpose(1, 2)
    mask = None if n == 1 else torch.ones(n, t, dtype=torch.bool, device=q.device).tril(diagonal=t - n)
    if implementation == "eager":
        groups = q.shape[1] // k.shape[1]
        k, v = k.repeat_interleave(groups, dim=1), v.repeat_interleave(groups, dim=1)
        scores = (q @ k.transpose(-1, -2)).float() * scale
        if mask is not None:
            scores = scores.masked_fill(~mask, float("-inf"))
        return torch.softmax(scores, dim=-1).to(v.dtype) @ v
    if implementation != "sdpa":
        raise ValueError(f"attn_implementation={implementation!r} is not supported: choose one of {ATTN_IMPLEMENTATIONS}")
    gqa = q.shape[1] != k.shape[1]
    if n == t and n > 1:  # a whole segment (or a prefix of one): the plain causal kernel
        return F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=scale, enable_gqa=gqa)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale, enable_gqa=gqa)
