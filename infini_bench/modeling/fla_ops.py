"""fla-core (flash-linear-attention's Triton kernels, `pip install 'infini-bench[gpu]'`) as the CUDA implementation
of the delta_l2 and gated_delta memories; `memory_ops` holds their float32 torch reference.

fla's `chunk_delta_rule` runs S_t = S_{t-1} + β_t k_tᵀ(v_t − k_t S_{t-1}) over a sequence from an initial state,
reads o_t = scale·q_t S_t at every token, and returns the final state, with gradients for all of them
(`chunk_gated_delta_rule` first decays the state by α_t = exp(g_t)). A segment's
retrieval must read the memory as it was *before* the segment, so every segment's reads go into the sequence as
extra tokens placed ahead of its writes, with β = 0 (they leave the state as it is): one kernel call then yields
every retrieval and the final state, forward and backward. Where gradients must be cut at segment boundaries
(`detach_every`), and for folding a single segment while decoding, one call per segment chains the states instead.
The kernels take bf16/fp16 inputs only (they refuse float32) and keep the state in float32.
"""
from __future__ import annotations

import importlib.util
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

from .memory_features import unit

HAS_FLA = importlib.util.find_spec("fla") is not None

KERNELS = ("auto", "torch", "fla")
FLA_UPDATES = ("delta_l2", "gated_delta")  # the rules fla-core has kernels for (chunk_delta_rule, chunk_gated_delta_rule)


def _kernel(log_decay: torch.Tensor | None) -> Callable:
    """fla's chunk_delta_rule, or chunk_gated_delta_rule when the rule has a decay (its g = log α per token)."""
    if log_decay is None:
        from fla.ops.delta_rule import chunk_delta_rule

        return chunk_delta_rule
    from fla.ops.gated_delta_rule import chunk_gated_delta_rule

    return chunk_gated_delta_rule


def resolve_kernel(requested: str, update: str, device: torch.device, compute_dtype: torch.dtype) -> str:
    """"auto" takes fla where it applies (delta_l2, CUDA, fla-core installed, a half-precision model or autocast),
    the exact float32 torch path everywhere else. "fla" asked for where it cannot run is an error, not a fallback."""
    if requested == "torch" or update not in FLA_UPDATES:
        return "torch"
    half = compute_dtype in (torch.float16, torch.bfloat16) or (
        device.type == "cuda" and torch.is_autocast_enabled("cuda")
    )
    usable = HAS_FLA and device.type == "cuda" and half
    if requested == "fla" and not usable:
        raise ValueError(
            "memory_kernel='fla' needs fla-core (pip install 'infini-bench[gpu]'), a CUDA device and a bf16/fp16 "
            f"model or autocast (here: fla-core {'installed' if HAS_FLA else 'missing'}, device {device}, "
            f"dtype {compute_dtype}); use memory_kernel='auto' or 'torch'"
        )
    return "fla" if usable else "torch"


def fla_delta_l2_scan(
    memory: torch.Tensor,
    keys: torch.Tensor,
    values: torch.Tensor,
    detach_after: Sequence[bool],
    log_decay: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """As `memory_ops._delta_l2_scan`: memories before each segment [B, H, S, d, d] and the final one."""
    kernel = _kernel(log_decay)
    g = None if log_decay is None else log_decay.permute(0, 2, 3, 1).float()  # [B, S, L, H]
    dtype = torch.bfloat16
    beta = keys.pow(2).sum(dim=-1)  # keys are √β·k̂
    k_hat = F.normalize(keys, dim=-1, eps=1e-6)
    # fla's layout is [B, T, H, d]: per segment s, [B, L, H, d]
    k_hat, values = (x.permute(0, 2, 3, 1, 4).to(dtype) for x in (k_hat, values))
    beta = beta.permute(0, 2, 3, 1).to(dtype)
    query = torch.zeros_like(k_hat[:, 0])  # the kernel's own read is not used: retrieval reads segment starts
    befores = []
    for s, cut in enumerate(detach_after):
        befores.append(memory)
        _, memory = kernel(
            query, k_hat[:, s], values[:, s], beta=beta[:, s], initial_state=memory.float(), output_final_state=True,
            **({} if g is None else {"g": g[:, s]}),
        )
        memory = memory.float()
        if cut:
            memory = memory.detach()
    return torch.stack(befores, dim=2), memory



def fla_delta_l2_read(
    memory: torch.Tensor,
    keys: torch.Tensor,
    values: torch.Tensor,
    queries: torch.Tensor,
    kernel: Callable | None = None,
    dtype: torch.dtype = torch.bfloat16,
    log_decay: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Every segment's retrieval Q/|Q|·M_s ([B, H, G, S, L, d], float32) and the memory after the last segment,
    from one call of `kernel` (fla's `chunk_delta_rule`, or `chunk_gated_delta_rule` when `log_decay` [B, H, S, L]
    is given; or any function with that signature and semantics).

    memory [B, H, d, d]; keys (√β·k̂), values [B, H, S, L, d]; queries [B, H, G, S, L, d] (G query heads per key/value
    head). Per segment the sequence holds G·L reads (q = Q/|Q|, k = v = 0, β = 0, log α = 0: the state is left as
    it is), then L writes (q = 0)."""
    kernel = kernel or _kernel(log_decay)
    b, h, g, s, seg, d = queries.shape

    def per_segment(x: torch.Tensor) -> torch.Tensor:  # [B, H, S, L, ...] -> [B, S, 1, L, H, ...]
        return x.movedim(1, 3).unsqueeze(2)

    reads_q = unit(queries).permute(0, 3, 2, 4, 1, 5)  # [B, S, G, L, H, d]
    none = reads_q.new_zeros(b, s, g, seg, h, d)
    q = torch.cat([reads_q, none[:, :, :1]], dim=2)
    k = torch.cat([none, per_segment(F.normalize(keys, dim=-1, eps=1e-6))], dim=2)
    v = torch.cat([none, per_segment(values.float())], dim=2)
    beta = torch.cat([none[..., 0], per_segment(keys.pow(2).sum(dim=-1))], dim=2)  # keys are √β·k̂
    decay = {} if log_decay is None else {
        "g": torch.cat([none[..., 0], per_segment(log_decay.float())], dim=2).flatten(1, 3)  # float32, as fla keeps g
    }
    q, k, v, beta = (x.flatten(1, 3).to(dtype) for x in (q, k, v, beta))
    o, final = kernel(q, k, v, beta=beta, scale=1.0, initial_state=memory.float(), output_final_state=True, **decay)
    retrieved = o.view(b, s, g + 1, seg, h, d)[:, :, :g].permute(0, 4, 2, 1, 3, 5)  # [B, H, G, S, L, d]
    return retrieved.float(), final.float()
