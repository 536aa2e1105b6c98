"""The memory-update op: from the state before a run of whole segments and their key/value features, the state
before every segment and after the last one. One signature, two implementations, as flash-linear-attention
arranges its ops: this pure-torch one (the CPU path and the reference) and fla-core's Triton kernel on CUDA
(`fla_ops.py`, delta_l2 only; the paper's rules are a cumulative sum and one matmul per segment already).

Shapes: memory [B, H, d, d] and norm [B, H, d] in float32; keys, values [B, H, S, L, d] for S segments of L tokens.
Keys are the memory features: σ(K) for the paper's rules, √β·K/|K| for delta_l2 and gated_delta (so β is the row's
squared norm). gated_delta also takes `log_decay` [B, H, S, L]: log α_t ≤ 0 of every written token.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch

from .fla_ops import fla_delta_l2_read, fla_delta_l2_scan
from .memory_features import sigma, unit

# Rows of the exact in-segment delta-rule solve at a time: the unit-triangular system stays well conditioned.
DELTA_CHUNK = 64

Scan = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]


def memory_scan(
    update: str,
    memory: torch.Tensor,
    norm: torch.Tensor,
    keys: torch.Tensor,
    values: torch.Tensor,
    eps: float,
    detach_after: Sequence[bool] = (),
    kernel: str = "torch",
    log_decay: torch.Tensor | None = None,
) -> Scan:
    """Write S whole segments into memory one after another (docs/ARCHITECTURE.md §2).

    Returns (memory before each segment [B, H, S, d, d], norm before each [B, H, S, d], final memory, final norm).
    `detach_after[s]` cuts the gradient through the state written by segment s (truncated backpropagation);
    `kernel="fla"` runs delta_l2 / gated_delta through fla-core (bf16 inputs, float32 state); `log_decay` is
    gated_delta's log α per written token (required there, ignored by the other rules)."""
    values = values.float()
    detach = list(detach_after) or [False] * keys.shape[2]
    if update == "linear":
        return _linear_scan(memory, norm, keys, values, detach)
    if update == "delta":
        return _delta_scan(memory, norm, keys, values, eps, detach)
    if update in ("delta_l2", "gated_delta"):
        decay = _required_decay(update, log_decay)
        if kernel == "fla":
            befores, final = fla_delta_l2_scan(memory, keys, values, detach, decay)
        else:
            befores, final = _delta_l2_scan(memory, keys, values, detach, decay)
        return befores, norm.unsqueeze(2).expand(-1, -1, keys.shape[2], -1), final, norm
    raise ValueError(f"memory_update={update!r} is unknown")


def _required_decay(update: str, log_decay: torch.Tensor | None) -> torch.Tensor | None:
    """gated_delta's log decays as float32, None for delta_l2 (no decay: α = 1)."""
    if update != "gated_delta":
        return None
    if log_decay is None:
        raise ValueError("memory_update='gated_delta' needs log_decay, the log α of every written token")
    return log_decay.float()


def _linear_scan(memory, norm, keys, values, detach: list[bool]) -> Scan:
    """M += σ(K)ᵀV, z += Σσ(K): exclusive cumulative sums, restarted (detached) after each cut."""
    writes = keys.transpose(-1, -2) @ values  # [B, H, S, d, d]
    norm_writes = keys.sum(dim=-2)  # [B, H, S, d]
    mem_before, norm_before = [], []
    start = 0
    for end in [s + 1 for s, cut in enumerate(detach) if cut] + [len(detach)]:
        if end <= start:
            continue
        m = torch.cumsum(writes[:, :, start:end], dim=2)
        z = torch.cumsum(norm_writes[:, :, start:end], dim=2)
        mem_before.append(torch.cat([memory.unsqueeze(2), memory.unsqueeze(2) + m[:, :, :-1]], dim=2))
        norm_before.append(torch.cat([norm.unsqueeze(2), norm.unsqueeze(2) + z[:, :, :-1]], dim=2))
        memory, norm = memory + m[:, :, -1], norm + z[:, :, -1]
        if detach[end - 1]:
            memory, norm = memory.detach(), norm.detach()
        start = end
    return torch.cat(mem_before, dim=2), torch.cat(norm_before, dim=2), memory, norm


def _delta_scan(memory, norm, keys, values, eps: float, detach: list[bool]) -> Scan:
    """The paper's delta rule, segment by segment: M += σ(K)ᵀ(V − σ(K)M/(σ(K)z + eps)), z += Σσ(K)."""
    mem_before, norm_before = [], []
    for s, cut in enumerate(detach):
        mem_before.append(memory)
        norm_before.append(norm)
        sk = keys[:, :, s]
        v = values[:, :, s] - normalised(sk @ memory, sk @ norm.unsqueeze(-1) + eps)
        memory, norm = memory + sk.transpose(-1, -2) @ v, norm + sk.sum(dim=-2)
        if cut:
            memory, norm = memory.detach(), norm.detach()
    return torch.stack(mem_before, dim=2), torch.stack(norm_before, dim=2), memory, norm


def _delta_l2_scan(
    memory, keys, values, detach: list[bool], log_decay: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """The token-by-token delta rule M ← α_t M + β_t k̂_tᵀ(v_t − α_t k̂_t M) (α = 1 for delta_l2; Gated DeltaNet's
    data-dependent decay for gated_delta), in the chunked WY form of DeltaNet (Yang et al. 2024, 2025).

    With k̃ = √β·k̂, ṽ = √β·v and, inside a chunk of n rows, Γ_i = α_1⋯α_i, a chunk gives
    M_new = Γ_n M + ((Γ_n/Γ) ⊙ K̃)ᵀ(U − W M), where W = A⁻¹(Γ ⊙ K̃), U = A⁻¹Ṽ and A = I + tril((Γ_i/Γ_j) K̃K̃ᵀ, −1)
    is unit lower triangular; only ratios Γ_i/Γ_j with j ≤ i appear, so no factor exceeds 1. The solves of every
    chunk of every segment run as one batch; only the two small matmuls per chunk are sequential. Each step is a
    contraction (|k̂| = 1, β ≤ 1, α ≤ 1), so M stays bounded however many tokens are written."""
    seg_len = keys.shape[-2]
    chunks = []  # per chunk offset: (Γ_n, (Γ_n/Γ)⊙K̃, W, U), solved for all segments at once
    for c0 in range(0, seg_len, DELTA_CHUNK):
        k = keys[..., c0 : c0 + DELTA_CHUNK, :]
        v = values[..., c0 : c0 + DELTA_CHUNK, :] * k.norm(dim=-1, keepdim=True)
        n = k.shape[-2]
        eye = torch.eye(n, dtype=k.dtype, device=k.device)
        gram = k @ k.transpose(-1, -2)
        if log_decay is None:
            system, scaled_k, out_k, total = eye + gram.tril(-1), k, k, None
        else:
            g = log_decay[..., c0 : c0 + DELTA_CHUNK].cumsum(-1)  # log Γ_i, [B, H, S, n]
            below = torch.ones(n, n, dtype=torch.bool, device=k.device).tril(-1)
            ratio = (g.unsqueeze(-1) - g.unsqueeze(-2)).masked_fill(~below, float("-inf")).exp()  # Γ_i/Γ_j, i > j
            system = eye + ratio * gram
            scaled_k, out_k = k * g.exp().unsqueeze(-1), k * (g[..., -1:] - g).exp().unsqueeze(-1)
            total = g[..., -1].exp()[..., None, None]  # Γ_n, [B, H, S, 1, 1]
        wu = torch.linalg.solve_triangular(system, torch.cat([scaled_k, v], dim=-1), upper=False, unitriangular=True)
        chunks.append((total, out_k, wu[..., : k.shape[-1]], wu[..., k.shape[-1] :]))
    befores = []
    for s, cut in enumerate(detach):
        befores.append(memory)
        for total, k, w, u in chunks:
            decayed = memory if total is None else total[:, :, s] * memory
            memory = decayed + k[:, :, s].transpose(-1, -2) @ (u[:, :, s] - w[:, :, s] @ memory)
        if cut:
            memory = memory.detach()
    return torch.stack(befores, dim=2), memory


def segment_retrievals(
    update: str,
    memory: torch.Tensor,
    norm: torch.Tensor,
    keys: torch.Tensor,
    values: torch.Tensor,
    queries: torch.Tensor,
    eps: float,
    detach_after: Sequence[bool] = (),
    kernel: str = "torch",
    log_decay: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Every segment's A_mem, read from the memory before it, and the state after the last segment: the memory
    half of the parallel form. queries [B, H, G, S, L, d] (G query heads per key/value head); the rest as in
    `memory_scan`. Returns (retrieved [B, H, G, S, L, d] float32, final memory, final norm)."""
    if kernel == "fla" and update in ("delta_l2", "gated_delta") and not any(detach_after):
        retrieved, memory = fla_delta_l2_read(memory, keys, values, queries, log_decay=_required_decay(update, log_decay))
        return retrieved, memory, norm
    memories, norms, memory, norm = memory_scan(
        update, memory, norm, keys, values, eps, detach_after, kernel, log_decay
    )
    return memory_read(update, queries, memories[:, :, None], norms[:, :, None], eps), memory, norm


def memory_read(update: str, q: torch.Tensor, memory: torch.Tensor, norm: torch.Tensor, eps: float) -> torch.Tensor:
    """A_mem for queries q [B, H_kv, G, ..., n, d] (G query heads per key/value head) from memory
    [B, H_kv, 1, ..., d, d]: σ(Q)M / (σ(Q)z + eps), or Q/|Q|·M for delta_l2 and gated_delta (no normaliser), in
    float32."""
    if update in ("delta_l2", "gated_delta"):
        return unit(q) @ memory
    sq = sigma(q)
    return normalised(sq @ memory, sq @ norm.unsqueeze(-1) + eps)


def normalised(numerator: torch.Tensor, denominator: torch.Tensor) -> torch.Tensor:
    """numerator / denominator, 0 where the denominator is 0: with eps = 0 (nanotron's form) an empty memory
    (z = 0, so M = 0 and the numerator is 0 too) reads zero, as nanotron's first segment does, instead of 0/0."""
    return numerator / torch.where(denominator == 0, torch.ones_like(denominator), denominator)
