"""A non-finite loss, gradient norm or weight is an error, never a checkpoint.

A diverged training (`optim.lr=1000`, say) used to run on with `loss=nan`, save NaN checkpoints, point `latest` at
them and end with exit status 0. Here every optimizer step is checked before it updates the weights (one device
sync per step, as Megatron-LM's default NaN check makes), and every checkpoint's weights before they are written:

- by default the first non-finite step stops the run with one sentence naming the step, the batch's family and the
  last good checkpoint (`latest` is never moved off it, since nothing after it is saved);
- `optim.skip_non_finite: N` instead drops up to N such steps in a row (no update, the batch is not retried), as
  large trainers skip overflowing steps; the count is in every log line (`skipped`) and N + 1 in a row still stop;
- `log.jsonl` is strict JSON: a value that is not finite is written as null (`json_safe`), never a bare NaN.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .checkpoint import latest_checkpoint

if TYPE_CHECKING:  # torch is imported by the functions that use it: `train --help` stays light
    import torch
    from accelerate import Accelerator


class NonFiniteError(RuntimeError):
    """A training step or a checkpoint held a NaN or an infinity; the message names the step, the batch's family,
    what was not finite and the last good checkpoint."""


def describe(value: float) -> str:
    return "NaN" if math.isnan(value) else ("+inf" if value > 0 else "-inf")


def non_finite_step(accelerator: Accelerator, loss_sum: torch.Tensor, grad_norm: torch.Tensor | float) -> str | None:
    """What was not finite in this step ("the loss is NaN", "the gradient norm is +inf"), on any process, or None.

    The gradient norm is the all-reduced one; the loss is this process's, so the verdict is reduced too: every
    process then skips or stops at the same step (a collective only when there are several processes)."""
    import torch

    loss = float(loss_sum.detach().float().item())
    norm = float(grad_norm.item() if isinstance(grad_norm, torch.Tensor) else grad_norm)
    bad = 0.0 if math.isfinite(loss) and math.isfinite(norm) else 1.0
    if accelerator.num_processes > 1:
        bad = accelerator.reduce(torch.tensor(bad, device=accelerator.device), "max").item()
    if not bad:
        return None
    parts = []
    if not math.isfinite(loss):
        parts.append(f"the loss is {describe(loss)}")
    if not math.isfinite(norm):
        parts.append(f"the gradient norm is {describe(norm)}")
    return " and ".join(parts) or "another process's loss is not finite"


def first_non_finite_parameter(accelerator: Accelerator, model: torch.nn.Module) -> str | None:
    """The name of the first parameter holding a NaN or an infinity (on any process), or None: checked before a
    checkpoint is written. One sync for the whole model, not one per tensor."""
    import torch

    named = [(n, p) for n, p in accelerator.unwrap_model(model).named_parameters() if p.is_floating_point()]
    if not named:
        return None
    finite = torch.stack([torch.isfinite(p.detach()).all() for _, p in named]).to(accelerator.device)
    if accelerator.num_processes > 1:
        finite = accelerator.reduce(finite.float(), "min") > 0
    bad = (~finite.bool()).nonzero()
    return named[int(bad[0])][0] if len(bad) else None


def last_good(out: Path) -> str:
    """How a stop message names the checkpoint a user can go back to."""
    previous = latest_checkpoint(out)
    if previous is None:
        return f"no checkpoint was saved before it in {str(out)!r}"
    return f"the last good checkpoint is {str(previous)!r} (`latest` still points at it)"


def step_message(step: int, source: str, problem: str, out: Path, prefix: str, streak: int, allowed: int) -> str:
    """The one sentence a non-finite step stops the run with."""
    where = f"step {step} ({source} batch): {problem}"
    if allowed:
        where = f"{where}, {streak} non-finite steps in a row ({prefix}optim.skip_non_finite={allowed} skips at most {allowed})"
    return (
        f"training stopped at {where}; the update was not applied and nothing was saved; {last_good(out)}; lower "
        f"{prefix}optim.lr or raise {prefix}optim.warmup_steps, or set {prefix}optim.skip_non_finite=N to skip up to N "
        "such steps in a row"
    )


def weights_message(step: int, name: str, out: Path) -> str:
    """The one sentence a checkpoint with non-finite weights stops the run with (it is not written)."""
    return (
        f"training stopped at step {step}: parameter {name} holds NaN or infinite values, so checkpoint "
        f"{step} was not saved; {last_good(out)}; lower the learning rate or raise the warmup"
    )


def json_safe(value: Any) -> Any:
    """`value` with every non-finite float replaced by None, so `json.dumps(..., allow_nan=False)` accepts it."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value
