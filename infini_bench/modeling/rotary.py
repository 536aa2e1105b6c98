"""Rotary position embedding (Llama's rotate-half convention); positions restart at 0 in every segment."""
from __future__ import annotations

import torch


def rotary_cos_sin(
    head_dim: int, theta: float, start: int, length: int, device, dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor]:
    """cos, sin for in-segment positions start .. start+length-1, shaped [length, head_dim], computed in float32."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.int64, device=device).float() / head_dim))
    positions = torch.arange(start, start + length, device=device, dtype=torch.float32)
    emb = torch.outer(positions, inv_freq).repeat(1, 2)
    return emb.cos().to(dtype), emb.sin().to(dtype)


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat([-x[..., half:], x[..., :half]], dim=-1)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    return x * cos + rotate_half(x) * sin
