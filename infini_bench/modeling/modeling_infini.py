"""`InfiniForCausalLM`: a Llama-style decoder (RMSNorm, SwiGLU, RoPE, GQA) with Infini-attention, as a
transformers `PreTrainedModel`. Module names match Llama's so a Llama state dict loads by name."""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import GenerationMixin, PreTrainedModel
from transformers.cache_utils import Cache
from transformers.utils import ModelOutput

try:  # transformers >= 5: init functions that leave loaded weights alone
    from transformers import initialization as init
except ImportError:  # pragma: no cover
    from torch.nn import init

from .attention import InfiniAttention
from .configuration_infini import InfiniConfig
from .fla_ops import resolve_kernel
from .memory import InfiniCache
from .rotary import SegmentRotary
from .static_cache import InfiniStaticCache
from .static_decode import compiled_decode_call, static_cache_for_generate, static_forward


@dataclass
class InfiniCausalLMOutput(ModelOutput):
    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    cache: InfiniCache | None = None


class InfiniRMSNorm(nn.Module):
    def __init__(self, hidden_size: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(hidden_size))
        self.variance_epsilon = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
        x = x.float()
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.variance_epsilon)
        return self.weight * x.to(dtype)


class InfiniMLP(nn.Module):
    def __init__(self, config: InfiniConfig):
        super().__init__()
        bias = config.mlp_bias
        self.gate_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=bias)
        self.up_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=bias)
        self.down_proj = nn.Linear(config.intermediate_size, config.hidden_size, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class InfiniDecoderLayer(nn.Module):
    def __init__(self, config: InfiniConfig, layer_idx: int):
        super().__init__()
        self.self_attn = InfiniAttention(config, layer_idx)
        self.mlp = InfiniMLP(config)
        self.input_layernorm = InfiniRMSNorm(config.hidden_size, config.rms_norm_eps)
        self.post_attention_layernorm = InfiniRMSNorm(config.hidden_size, config.rms_norm_eps)

    def forward(self, x, cos, sin, state, detach_after=None, kernel="torch"):
        """One segment piece (`detach_after` None), or whole segments in the parallel form. Both forms go through
        `__call__`, so module hooks see every call: FSDP unshards a layer's weights in its pre-forward hook."""
        h = self.input_layernorm(x)
        if detach_after is None:
            x = x + self.self_attn(h, cos, sin, state)
        else:
            x = x + self.self_attn.forward_segments(h, cos, sin, state, detach_after, kernel)
        return x + self.mlp(self.post_attention_layernorm(x))


class InfiniPreTrainedModel(PreTrainedModel):
    config_class = InfiniConfig
    base_model_prefix = "model"
    _no_split_modules = ["InfiniDecoderLayer"]
    _supports_sdpa = True
    _supports_flash_attn = True

    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)
        if isinstance(module, InfiniAttention):
            gate_init = self.config.gate_init
            if gate_init == "zeros":
                init.zeros_(module.gate)
            elif gate_init == "randn":
                init.normal_(module.gate, mean=0.0, std=1.0)
            else:
                init.constant_(module.gate, float(gate_init))
            if self.config.memory_update == "gated_delta":
                _init_decay(module)
            if module.memory_conv is not None:  # the identity: a new model, or one converted, starts as without it
                identity = torch.zeros_like(module.memory_conv.weight)
                identity[:, :, -1] = 1.0
                init.copy_(module.memory_conv.weight, identity)


def _init_decay(module: InfiniAttention) -> None:
    """Gated DeltaNet's (and Mamba-2's) start: A ~ U[1, 16], softplus(dt_bias) = dt ~ log-uniform in [1e-3, 0.1],
    so heads begin with decay rates spread over two orders of magnitude (per-token α from about 0.2 to 0.999)."""
    heads = module.decay_bias.shape[0]
    with torch.no_grad():
        a = torch.empty(heads).uniform_(1.0, 16.0)
        dt = torch.exp(torch.empty(heads).uniform_(math.log(1e-3), math.log(0.1))).clamp_min(1e-4)
        init.copy_(module.decay_log_rate, torch.log(a))
        init.copy_(module.decay_bias, dt + torch.log(-torch.expm1(-dt)))  # softplus⁻¹(dt)


class InfiniModel(InfiniPreTrainedModel):
    def __init__(self, config: InfiniConfig):
        super().__init__(config)
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size, config.pad_token_id)
        self.layers = nn.ModuleList(InfiniDecoderLayer(config, i) for i in range(config.num_hidden_layers))
        self.norm = InfiniRMSNorm(config.hidden_size, config.rms_norm_eps)
        self.rotary = SegmentRotary(config)
        self.post_init()

    def empty_cache(self, batch_size: int) -> InfiniCache:
        c = self.config
        w = self.embed_tokens.weight
        tail = (max(c.memory_conv_size - 1, 0), (c.num_attention_heads + c.num_key_value_heads) * c.head_dim)
        return InfiniCache.empty(
            c.num_hidden_layers, batch_size, c.num_key_value_heads, c.head_dim, w.device, w.dtype, tail
        )

    def forward(
        self,
        input_ids: torch.LongTensor,
        cache: InfiniCache | None = None,
        detach_every: int = 0,
        keep_last: int = 0,
        parallel: bool = True,
    ) -> tuple[torch.Tensor, InfiniCache]:
        """Continue the stream in `cache` (a fresh one when None) with `input_ids`.

        Whole segments that start on a segment boundary run in the parallel form (layer by layer over all of them
        at once); a partial segment at either end, or everything when `parallel=False`, runs segment piece by
        piece through all layers (the decode path and the reference). Both give the same numbers.
        `detach_every=k` stops gradients through the memory every k segments (0: never; a training setting).
        Returns the final hidden states (only the last `keep_last` positions when > 0) and the new cache."""
        c = self.config
        seg = c.segment_length
        if isinstance(detach_every, bool) or not isinstance(detach_every, int) or detach_every < 0:
            raise ValueError(f"detach_every={detach_every!r} is invalid: it must be an integer >= 0 (0 = never)")
        state = self.empty_cache(input_ids.shape[0]) if cache is None else cache.copy()
        hidden = self.embed_tokens(input_ids)
        kernel = resolve_kernel(c.memory_kernel, c.memory_update, hidden.device, hidden.dtype)
        total = input_ids.shape[1]
        outputs: list[torch.Tensor] = []
        kept = 0
        start = 0
        while start < total:
            whole = (total - start) // seg * seg if parallel and state.position == 0 else 0
            if whole:
                x = self._whole_segments(hidden[:, start : start + whole], state, detach_every, kernel)
            else:
                x = self._segment_piece(hidden[:, start : start + seg - state.position], state, detach_every, kernel)
            outputs.append(x)
            kept += x.shape[1]
            if keep_last and kept - outputs[0].shape[1] >= keep_last:
                kept -= outputs.pop(0).shape[1]
            start += x.shape[1]
        state.seen_tokens += total
        out = torch.cat(outputs, dim=1)
        if keep_last:
            out = out[:, -keep_last:]
        return self.norm(out), state

    def _segment_piece(self, x: torch.Tensor, state: InfiniCache, detach_every: int, kernel: str) -> torch.Tensor:
        """Tokens inside one segment through every layer; folds the segment into memory when it is full."""
        c = self.config
        n = x.shape[1]
        cos, sin = self.rotary(state.position, n, x.device, x.dtype)
        for layer, layer_state in zip(self.layers, state.layers):
            x = layer(x, cos, sin, layer_state)
        state.position += n
        if state.position == c.segment_length:
            state.segments += 1
            detach = bool(detach_every) and state.segments % detach_every == 0
            for layer_state in state.layers:
                layer_state.fold(c.memory_update, c.memory_eps, detach, write=c.use_memory, kernel=kernel)
            state.position = 0
        return x

    def _whole_segments(self, x: torch.Tensor, state: InfiniCache, detach_every: int, kernel: str) -> torch.Tensor:
        """S whole segments from a segment boundary, layer by layer (the parallel form)."""
        c = self.config
        count = x.shape[1] // c.segment_length
        cos, sin = self.rotary(0, c.segment_length, x.device, x.dtype)
        detach_after = [bool(detach_every) and (state.segments + s + 1) % detach_every == 0 for s in range(count)]
        for layer, layer_state in zip(self.layers, state.layers):
            x = layer(x, cos, sin, layer_state, detach_after, kernel)
        state.segments += count
        return x


def reads_values(input_ids: torch.Tensor) -> bool:
    """Whether the input checks read token values: always on the CPU (free) and for a prompt, but not for one
    decoded token on an accelerator, where `min()` / `max()` / `.all()` would synchronise with the host on every
    generated token (generated ids come from the model's own vocabulary; padding can only be in the prompt)."""
    return input_ids.device.type == "cpu" or input_ids.shape[1] > 1


class InfiniForCausalLM(InfiniPreTrainedModel, GenerationMixin):
    _tied_weights_keys = {"lm_head.weight": "model.embed_tokens.weight"}
    _can_compile_fullgraph = True  # the static-cache decode step (static_decode.py) compiles with no graph break

    def __init__(self, config: InfiniConfig):
        super().__init__(config)
        self.model = InfiniModel(config)
        self.vocab_size = config.vocab_size
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.model.embed_tokens

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.model.embed_tokens = value

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        cache: Cache | None = None,
        labels: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        detach_every: int = 0,
        logits_to_keep: int = 0,
        inputs_embeds: torch.Tensor | None = None,
        parallel: bool = True,
        use_cache: bool = True,
        **kwargs,
    ) -> InfiniCausalLMOutput:
        """`out = model(input_ids, cache=out.cache)`: logits for `input_ids` and the cache after them.

        `labels` (shifted inside, -100 ignored) gives the causal LM loss over this call's tokens.
        `logits_to_keep=k` computes logits for the last k positions only (generation's prefill).
        `detach_every=k` truncates backpropagation through the memory every k segments (0: never; training only).
        `parallel=False` runs every segment piece by piece (the reference the parallel form is tested against).
        `use_cache=False` returns no cache (as transformers models do: `generate` then recomputes every step).
        An `InfiniStaticCache` is continued in place (static_decode.py: one token runs the fixed-shape step)."""
        if isinstance(cache, InfiniStaticCache):
            return static_forward(
                self, cache, input_ids, labels=labels, attention_mask=attention_mask, detach_every=detach_every,
                logits_to_keep=logits_to_keep, inputs_embeds=inputs_embeds, parallel=parallel, use_cache=use_cache,
            )
        cache = self._infini_cache(cache)
        self._check_inputs(input_ids, cache, attention_mask, inputs_embeds)
        hidden, cache = self.model(
            input_ids, cache=cache, detach_every=detach_every, keep_last=logits_to_keep, parallel=parallel
        )
        logits = self.lm_head(hidden)
        loss = None
        if labels is not None:
            loss = F.cross_entropy(
                logits[:, :-1].float().reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1), ignore_index=-100
            )
        return InfiniCausalLMOutput(loss=loss, logits=logits, cache=cache if use_cache else None)

    def _prepare_static_cache(self, cache_implementation: str, batch_size: int, max_cache_len: int,
                              prefill_chunk_size: int | None, model_kwargs: dict) -> InfiniStaticCache:
        """`generate(..., cache_implementation="static")` gets an Infini model's static cache (one segment's
        buffers and the memory, whatever `max_cache_len`), not transformers' per-token StaticCache."""
        return static_cache_for_generate(self, cache_implementation, batch_size)

    def get_compiled_call(self, compile_config):
        """What `generate` compiles for a static cache: only the decode step; prefill and the fold at a segment
        boundary stay eager (transformers would compile the whole forward)."""
        return compiled_decode_call(self, compile_config)

    @staticmethod
    def _infini_cache(cache: Cache | None) -> InfiniCache | None:
        """`generate` starts every call with the empty cache transformers makes for any decoder; an Infini model
        keeps its own kind, which it returns as `out.cache` and `generate` then carries."""
        if cache is None or isinstance(cache, InfiniCache):
            return cache
        if isinstance(cache, Cache) and cache.get_seq_length() == 0:
            return None
        raise TypeError(
            f"cache must be the InfiniCache from a previous call's out.cache, got {type(cache).__name__}"
            + (f" holding {cache.get_seq_length()} tokens" if isinstance(cache, Cache) else "")
        )

    def _check_inputs(self, input_ids, cache, attention_mask, inputs_embeds) -> None:
        """Fail early, naming the value, instead of deep inside torch."""
        if inputs_embeds is not None:
            raise ValueError("inputs_embeds is not supported: pass input_ids (the memory is built from token ids)")
        if not isinstance(input_ids, torch.Tensor):
            raise TypeError(f"input_ids must be a torch.Tensor of token ids, got {type(input_ids).__name__}")
        if input_ids.dtype.is_floating_point or input_ids.dtype == torch.bool or input_ids.is_complex():
            raise TypeError(f"input_ids must hold integer token ids, got dtype {input_ids.dtype}")
        if input_ids.dim() != 2 or input_ids.shape[1] == 0:
            raise ValueError(f"input_ids must have shape [batch, seq_len] with seq_len >= 1, got {tuple(input_ids.shape)}")
        if cache is not None and cache.batch_size != input_ids.shape[0]:
            raise ValueError(f"cache holds a batch of {cache.batch_size} but input_ids has batch {input_ids.shape[0]}")
        if not reads_values(input_ids):
            return
        lo, hi = int(input_ids.min()), int(input_ids.max())
        if lo < 0 or hi >= self.config.vocab_size:
            bad = lo if lo < 0 else hi
            raise ValueError(f"input_ids contains token id {bad}, outside the vocabulary [0, {self.config.vocab_size})")
        if attention_mask is not None and not bool(attention_mask.bool().all()):
            raise ValueError(
                "attention_mask contains padding: an Infini model would fold pad tokens into its memory. "
                "Batch sequences of equal length (or run them one by one) instead of padding."
            )
