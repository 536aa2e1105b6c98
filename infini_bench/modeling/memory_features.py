"""The memory's feature maps, apart from the ops that use them: `memory_ops` (the torch reference) and `fla_ops`
(fla-core's kernels, which `memory_ops` dispatches to) both import them, and neither imports the other's user."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def sigma(x: torch.Tensor) -> torch.Tensor:
    """ELU + 1 in float32: the paper's positive feature map of the memory."""
    return F.elu(x.float()) + 1.0


def unit(x: torch.Tensor) -> torch.Tensor:
    """x / |x| over the head dimension, in float32: the delta_l2 variant's key and query features."""
    return F.normalize(x.float(), dim=-1, eps=1e-6)
