"""fla-core (flash-linear-attention's Triton kernels, `pip install 'infini-bench[gpu]'`) as the CUDA implementation
of the delta_l2 memory update; `memory_ops._delta_l2_scan` is its float32 torch reference.

fla's `chunk_delta_rule` runs M ← M + β_t k_tᵀ(v_t − k_t M) over a sequence from an initial state and returns the
final state, with gradients for keys, values, β and the initial state. With gradients, one call per segment chains
the segments and yields the state at every boundary (float32), which is what each segment's retrieval reads.
Without gradients (evaluation, prefill) one pass of fla's forward kernels over all segments yields the state at
every 64-token chunk start, boundaries included (stored in bf16 by the kernel; the final state in float32), when
the segment length is a multiple of 64. The kernels take bf16/fp16 inputs only (they refuse float32).
"""
from __future__ import annotations

import importlib.util
from collections.abc import Sequence

import torch
import torch.nn.functional as F

HAS_FLA = importlib.util.find_spec("fla") is not None

KERNELS = ("auto", "torch", "fla")
FLA_CHUNK = 64  # fla's chunk size: states exist at multiples of it


def resolve_kernel(requested: str, update: str, device: torch.device, compute_dtype: torch.dtype) -> str:
    """"auto" takes fla where it applies (delta_l2, CUDA, fla-core installed, a half-precision model or autocast),
    the exact float32 torch path everywhere else. "fla" asked for where it cannot run is an error, not a fallback."""
    if requested == "torch" or update != "delta_l2":
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
    memory: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, detach_after: Sequence[bool]
) -> tuple[torch.Tensor, torch.Tensor]:
    """As `memory_ops._delta_l2_scan`: memories before each segment [B, H, S, d, d] and the final one."""
    from fla.ops.delta_rule import chunk_delta_rule

    dtype = torch.bfloat16
    beta = keys.pow(2).sum(dim=-1)  # keys are √β·k̂
    k_hat = F.normalize(keys, dim=-1, eps=1e-6)
    # fla's layout is [B, T, H, d]: per segment s, [B, L, H, d]
    k_hat, values = (x.permute(0, 2, 3, 1, 4).to(dtype) for x in (k_hat, values))
    beta = beta.permute(0, 2, 3, 1).to(dtype)
    if not torch.is_grad_enabled() and keys.shape[3] % FLA_CHUNK == 0 and not any(detach_after):
        return _boundary_states_one_pass(memory, k_hat, values, beta)
    query = torch.zeros_like(k_hat[:, 0])  # the kernel's own read is not used: retrieval reads segment starts
    befores = []
    for s, cut in enumerate(detach_after):
        befores.append(memory)
        _, memory = chunk_delta_rule(
            query, k_hat[:, s], values[:, s], beta[:, s], initial_state=memory.float(), output_final_state=True
        )
        memory = memory.float()
        if cut:
            memory = memory.detach()
    return torch.stack(befores, dim=2), memory


def _boundary_states_one_pass(
    memory: torch.Tensor, k_hat: torch.Tensor, values: torch.Tensor, beta: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The forward half of fla's chunk_delta_rule (WY representation, then the chunk-state recurrence) over all
    segments at once, keeping the state at each segment start: inputs [B, S, L, H, d] and [B, S, L, H]."""
    from fla.ops.common.chunk_delta_h import chunk_gated_delta_rule_fwd_h
    from fla.ops.delta_rule.wy_fast import prepare_wy_repr_fwd

    b, s, seg, h, d = k_hat.shape
    k, v, bt = k_hat.flatten(1, 2).contiguous(), values.flatten(1, 2).contiguous(), beta.flatten(1, 2).contiguous()
    w, u, _ = prepare_wy_repr_fwd(k=k, v=v, beta=bt, cu_seqlens=None, chunk_size=FLA_CHUNK)
    states, _, final = chunk_gated_delta_rule_fwd_h(
        k=k, w=w, u=u, initial_state=memory.float().contiguous(), output_final_state=True, chunk_size=FLA_CHUNK,
        save_new_value=False,
    )  # states [B, chunks, H, d, d]: the state at the start of every chunk
    befores = states[:, :: seg // FLA_CHUNK].float().transpose(1, 2)  # [B, H, S, d, d]
    return befores, final.float()
