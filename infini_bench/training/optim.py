"""AdamW parameter groups and the learning-rate schedule.

Why three groups: weight decay pulls the gates β toward 0 and the main learning rate barely moves a scalar per
head (docs/ARCHITECTURE.md §2: one β per head, g = act(β)), so gates get their own, larger learning rate and no decay; norms and biases are
not decayed either (standard practice: decay shrinks scales and offsets that have no overfitting role).
"""
from __future__ import annotations

import math
from typing import Callable

import torch
from torch import nn
from torch.optim.lr_scheduler import LambdaLR

from .recipe import OptimConfig

GATE_SUFFIX = "self_attn.gate"


def parameter_groups(model: nn.Module, optim: OptimConfig) -> list[dict]:
    """decay (matrices, embeddings), no_decay (norms, biases: 1-D), gates (β: own lr, no decay), named."""
    groups: dict[str, list] = {"decay": [], "no_decay": [], "gates": []}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        if name.endswith(GATE_SUFFIX):
            groups["gates"].append(param)
        elif param.dim() < 2:
            groups["no_decay"].append(param)
        else:
            groups["decay"].append(param)
    settings = {
        "decay": dict(lr=optim.lr, weight_decay=optim.weight_decay),
        "no_decay": dict(lr=optim.lr, weight_decay=0.0),
        "gates": dict(lr=optim.gate_lr, weight_decay=0.0),
    }
    return [dict(params=params, name=name, **settings[name]) for name, params in groups.items() if params]


def build_optimizer(model: nn.Module, optim: OptimConfig) -> torch.optim.AdamW:
    # fused/foreach kernels change float rounding between runs of different shapes; keep the default (foreach on
    # CUDA, for-loop on CPU), which is deterministic for a fixed setup.
    return torch.optim.AdamW(parameter_groups(model, optim), betas=tuple(optim.betas), eps=optim.eps)


def lr_factor(step: float, optim: OptimConfig, max_steps: int) -> float:
    """Multiplier on each group's base rate at schedule position `step` (0-based, in steps): linear warmup over
    `warmup_steps`, then cosine decay reaching min_lr / lr at `max_steps`."""
    floor = optim.min_lr / optim.lr
    if step < optim.warmup_steps:
        return (step + 1) / optim.warmup_steps
    span = max(1, max_steps - optim.warmup_steps)
    progress = min(1.0, (step - optim.warmup_steps) / span)
    return floor + 0.5 * (1.0 + math.cos(math.pi * progress)) * (1.0 - floor)


def build_scheduler(
    optimizer: torch.optim.Optimizer,
    optim: OptimConfig,
    max_steps: int,
    done: Callable[[int], float] | None = None,
    fixed: tuple[int, float] = (0, 1.0),
) -> LambdaLR:
    """`done(step)`: how far the run is through its schedule (0 to 1) when optimizer step `step` runs; by default
    step / max_steps. A time-limited run passes its clock (`loop.Clock`), so the decay fits the time budget.
    `fixed=(n, f)`: steps before n run at f times the base rates (finetuning's copy steps); the schedule then goes
    on from where the clock stands."""
    done = done or (lambda step: step / max_steps)
    steps, factor = fixed
    return LambdaLR(
        optimizer, lambda step: factor if step < steps else lr_factor(done(step) * max_steps, optim, max_steps)
    )
