"""Causal softmax attention inside one segment: flash-attn on CUDA when installed, PyTorch SDPA otherwise."""
from __future__ import annotations

import importlib.util

import torch
import torch.nn.functional as F

HAS_FLASH_ATTN = importlib.util.find_spec("flash_attn") is not None


def _use_flash(q: torch.Tensor) -> bool:
    return HAS_FLASH_ATTN and q.is_cuda and q.dtype in (torch.float16, torch.bfloat16)


def local_causal_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float) -> torch.Tensor:
    """q: [B, H, n, d] are the last n of the t = k.shape[2] positions; k, v: [B, H_kv, t, d] (GQA when H_kv < H).

    Query i (absolute position t - n + i) sees keys 0 .. t - n + i: causal with the cache as a prefix.
    Returns [B, H, n, d].
    """
    n, t = q.shape[2], k.shape[2]
    if _use_flash(q):
        from flash_attn import flash_attn_func  # bottom-right aligned causal mask == cache-as-prefix semantics

        out = flash_attn_func(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), softmax_scale=scale, causal=True)
        return out.transpose(1, 2)
    groups = q.shape[1] // k.shape[1]
    if groups > 1:
        k = k.repeat_interleave(groups, dim=1)
        v = v.repeat_interleave(groups, dim=1)
    if n == 1:
        return F.scaled_dot_product_attention(q, k, v, scale=scale)
    if n == t:
        return F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=scale)
    mask = torch.ones(n, t, dtype=torch.bool, device=q.device).tril(diagonal=t - n)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale)
