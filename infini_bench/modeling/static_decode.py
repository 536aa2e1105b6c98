"""Decoding with an `InfiniStaticCache`: one token through every layer as a fixed-shape step that torch.compile can
capture whole (CUDA graphs with `mode="reduce-overhead"`), the segment boundary handled outside it.

The step (`decode_step`) reads the in-segment position from a 0-d tensor, writes the token's key, value, memory
feature and decay into row `position` of the static buffers with `index_copy_`, attends over the whole segment
buffer with a mask `arange(L) <= position`, reads the memory and advances `position` in place: no Python value in
it changes from token to token, so it compiles once per batch size and never recompiles across positions. After
the step, on the host, `InfiniStaticCache.advance` counts the token and, when the segment is full, folds it into
memory (eager, one `memory_scan` per layer: the same op the dynamic path folds with). Everything else (prefill,
calls of several tokens, training) runs the ordinary forward on the cache's dynamic view.

`generate(..., cache_implementation="static")` makes the cache; on CUDA transformers then compiles the decoding
(`get_compiled_call`, with its `CompileConfig`, default inductor + reduce-overhead), and only this step is compiled.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from transformers.generation.configuration_utils import CompileConfig

from .attention import InfiniAttention
from .memory_ops import memory_read
from .rotary import SegmentRotary, apply_rotary
from .static_cache import InfiniStaticCache, StaticLayer

if TYPE_CHECKING:
    from .modeling_infini import InfiniCausalLMOutput, InfiniForCausalLM

Step = Callable[..., torch.Tensor]
FIELDS = 7  # tensors per StaticLayer, in its field order
MAX_REUSED_CACHES = 4  # static caches kept per model (one per batch size): stable addresses for CUDA graphs


class _ConvTail:
    """What `InfiniAttention._memory_queries_keys` reads and advances: the convolution history, by attribute."""

    def __init__(self, conv_tail: torch.Tensor):
        self.conv_tail = conv_tail


def _masked_local(attn: InfiniAttention, q: torch.Tensor, keys: torch.Tensor, values: torch.Tensor,
                  visible: torch.Tensor) -> torch.Tensor:
    """Causal attention of one query per row over the whole segment buffer, rows after `position` masked out.
    `eager` as in `local_causal_attention`; everything else through SDPA (flash-attn has no mask, and on one query
    SDPA's kernels serve as well)."""
    if (attn.config._attn_implementation or "sdpa") == "eager":
        groups = q.shape[1] // keys.shape[1]
        k, v = keys.repeat_interleave(groups, dim=1), values.repeat_interleave(groups, dim=1)
        scores = (q @ k.transpose(-1, -2)).float() * attn.scale
        return torch.softmax(scores.masked_fill(~visible, float("-inf")), dim=-1).to(v.dtype) @ v
    return F.scaled_dot_product_attention(q, keys, values, attn_mask=visible.view(1, 1, 1, -1), scale=attn.scale,
                                          enable_gqa=q.shape[1] != keys.shape[1])


def _attention_step(attn: InfiniAttention, hidden: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                    where: torch.Tensor, visible: torch.Tensor, state: StaticLayer) -> torch.Tensor:
    """`InfiniAttention.forward` for one token, with the appends to the segment cache as in-place row writes."""
    c = attn.config
    b, n, _ = hidden.shape
    q, k, v = attn._project(hidden)
    state.keys.index_copy_(2, where, apply_rotary(k, cos, sin))
    state.values.index_copy_(2, where, v)
    out = _masked_local(attn, apply_rotary(q, cos, sin), state.keys, state.values, visible)
    if c.use_memory:
        tail = _ConvTail(state.conv_tail)
        q, k = attn._memory_queries_keys(q, k, tail)
        state.conv_tail.copy_(tail.conv_tail)
        state.memory_keys.index_copy_(2, where, attn._memory_keys(hidden, k))
        if c.memory_update == "gated_delta":
            state.log_decay.index_copy_(2, where, attn._log_decay(hidden))
        groups = (b, attn.num_kv_heads, attn.num_heads // attn.num_kv_heads, n, attn.head_dim)
        retrieved = memory_read(c.memory_update, q.view(groups), state.memory[:, :, None], state.norm[:, :, None],
                                c.memory_eps)
        out = attn._mix(retrieved.view_as(q), out)
    return attn.o_proj(out.to(hidden.dtype).transpose(1, 2).reshape(b, n, attn.num_heads * attn.head_dim))


def decode_step(model: "InfiniForCausalLM", input_ids: torch.Tensor, position: torch.Tensor, cos_table: torch.Tensor,
                sin_table: torch.Tensor, buffers: list[torch.Tensor]) -> torch.Tensor:
    """Logits [B, 1, V] for one token per row at in-segment `position` (0-d tensor, advanced in place), writing
    its state into `buffers` (`FIELDS` tensors per layer). Fixed shapes, tensors only: what torch.compile captures."""
    inner = model.model
    where = position.view(1)
    cos, sin = cos_table.index_select(0, where), sin_table.index_select(0, where)
    visible = torch.arange(cos_table.shape[0], device=position.device) <= position
    x = inner.embed_tokens(input_ids)
    for i, layer in enumerate(inner.layers):
        state = StaticLayer(*buffers[i * FIELDS : (i + 1) * FIELDS])
        x = x + _attention_step(layer.self_attn, layer.input_layernorm(x), cos, sin, where, visible, state)
        x = x + layer.mlp(layer.post_attention_layernorm(x))
    position.add_(1)
    return model.lm_head(inner.norm(x))


def _rotary_table(model: "InfiniForCausalLM", cache: InfiniStaticCache) -> tuple[torch.Tensor, torch.Tensor]:
    """cos, sin of every in-segment position, made once per cache (the same numbers the dynamic path computes)."""
    table = getattr(cache, "_rotary", None)
    if table is None:
        table = SegmentRotary(model.config)(0, model.config.segment_length, cache.device, cache.dtype)
        for t in table:
            torch._dynamo.mark_static_address(t)
        cache._rotary = table
    return table


def run_step(model: "InfiniForCausalLM", cache: InfiniStaticCache, input_ids: torch.Tensor, step: Step) -> torch.Tensor:
    """One decoding step through `step` (eager or compiled), then the host's part: count it, fold a full segment."""
    cos, sin = _rotary_table(model, cache)
    buffers = [t for layer in cache.layers for t in layer.tensors()]
    logits = step(model, input_ids, cache.position_tensor, cos, sin, buffers)
    cache.advance(model.model.embed_tokens.weight.dtype)
    return logits


def static_forward(model: "InfiniForCausalLM", cache: InfiniStaticCache, input_ids: torch.Tensor,
                   step: Step = decode_step, check: bool = True, use_cache: bool = True,
                   **forward_kwargs) -> "InfiniCausalLMOutput":
    """`model(input_ids, cache=static_cache)`: one token per row runs `step`; anything else (a prompt, labels,
    `parallel=False`) the ordinary forward on the cache's dynamic view, written back. The cache is continued in
    place and returned. `check=False` (the compiled decoding inside `generate`) skips the input checks, whose
    min/max would cost a host synchronisation per token."""
    from .modeling_infini import InfiniCausalLMOutput

    if torch.is_grad_enabled():
        raise RuntimeError("an InfiniStaticCache is written in place and keeps no autograd history: call the model "
                           "under torch.no_grad() (generate does), or continue an InfiniCache instead")
    one_token = isinstance(input_ids, torch.Tensor) and input_ids.dim() == 2 and input_ids.shape[1] == 1
    plain = forward_kwargs.get("labels") is None and forward_kwargs.get("inputs_embeds") is None
    if one_token and plain and forward_kwargs.get("parallel", True):
        if check:
            model._check_inputs(input_ids, cache, forward_kwargs.get("attention_mask"), None)
        return InfiniCausalLMOutput(logits=run_step(model, cache, input_ids, step), cache=cache if use_cache else None)
    out = model(input_ids, cache=cache.to_dynamic(), **forward_kwargs)
    cache.load_(out.cache)
    out.cache = cache if use_cache else None
    return out


def compiled_decode_call(model: "InfiniForCausalLM", compile_config: CompileConfig | None) -> Callable:
    """What `generate` calls for every step when it compiles (a static cache on CUDA, or `compile_config` with
    `_compile_all_devices`): the model's forward with the decode step compiled under `compile_config`, nothing
    else. The compiled step is kept per model and config, as transformers keeps its compiled call."""
    config = compile_config or model._default_compile_config()
    kept = getattr(model, "_infini_compiled_step", None)
    if kept is None or kept[0] != config:
        kept = (config, torch.compile(decode_step, **config.to_dict()))
        model._infini_compiled_step = kept
    step = kept[1]

    def call(input_ids: torch.Tensor | None = None, cache=None, **kwargs):
        if isinstance(cache, InfiniStaticCache):
            kwargs.pop("attention_mask", None)  # all ones in generate; the forward checks it on other calls
            kwargs.pop("return_dict", None)
            return static_forward(model, cache, input_ids, step=step, check=False, **kwargs)
        return model(input_ids=input_ids, cache=cache, **kwargs)

    return call


def reusable_static_cache(model: "InfiniForCausalLM", batch_size: int) -> InfiniStaticCache:
    """An empty static cache for `batch_size` rows, the same buffers on every call with that batch size (reset),
    so a captured CUDA graph finds its inputs where it recorded them instead of re-recording per request.
    A cache returned by an earlier call is therefore reset by the next one with its batch size."""
    weight = model.model.embed_tokens.weight
    key = (batch_size, weight.device, weight.dtype)
    caches: dict = model.__dict__.setdefault("_infini_static_caches", {})
    cache = caches.pop(key, None)
    if cache is None or cache.config is not model.config:
        cache = InfiniStaticCache(model.config, batch_size, weight.device, weight.dtype)
    else:
        cache.reset()
    caches[key] = cache  # most recently used last
    while len(caches) > MAX_REUSED_CACHES:
        caches.pop(next(iter(caches)))
    return cache


def static_cache_for_generate(
    model: "InfiniForCausalLM", cache_implementation: str, batch_size: int
) -> InfiniStaticCache:
    """`generate(..., cache_implementation="static")`: an Infini model's static cache (its size is one segment
    and the memory, whatever `max_length`)."""
    if cache_implementation != "static":
        raise ValueError(f"cache_implementation={cache_implementation!r} is not supported by an Infini model: use "
                         "'static' (fixed buffers for compiled decoding) or leave it unset")
    return reusable_static_cache(model, batch_size)
