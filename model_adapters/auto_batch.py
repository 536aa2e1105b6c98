"""`--batch_size auto` for an Infini model: the largest batch whose heaviest step fits on the device.

Every request type streams at most one chunk of whole segments per row per step (see streaming.py), so the
heaviest step is the same whatever the requests' lengths: a chunk of activations and a slice of float32 logits per
row. One probe at that size therefore serves the whole run, unlike full-attention models whose memory grows with
the longest request.
"""
from __future__ import annotations

import torch
from accelerate.utils import find_executable_batch_size

from infini_bench.modeling import InfiniForCausalLM

from .streaming import LOGITS_SLICE, piece_length


def probe_batch_size(model: InfiniForCausalLM, device: torch.device, max_batch_size: int, chunk_tokens: int) -> int:
    """Halve from `max_batch_size` until a scoring step of a full chunk per row runs without running out of
    memory; 1 if even that fails (the run then reports the error itself)."""
    tokens = piece_length(model, None, chunk_tokens, chunk_tokens)

    @find_executable_batch_size(starting_batch_size=max_batch_size)
    def step(batch_size: int) -> int:
        with torch.no_grad():
            ids = torch.zeros(batch_size, tokens, dtype=torch.long, device=device)
            hidden, _ = model.model(ids)
            torch.logsumexp(model.lm_head(hidden[:, :LOGITS_SLICE]).float(), dim=-1)
        return batch_size

    try:
        found = step()
    except RuntimeError as err:
        if "No executable batch size found" not in str(err):
            raise
        found = 1
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return found
