"""`InfiniConfig`: Llama's field names plus the Infini-attention fields, validated on construction."""
from __future__ import annotations

from transformers import PretrainedConfig

from ..model_choices import GATE_ACTIVATIONS, GATE_INITS, MEMORY_UPDATES  # torch-free, for `convert --help`
from .fla_ops import KERNELS as MEMORY_KERNELS

ROPE_TYPES = ("default", "linear", "dynamic", "yarn", "longrope", "llama3")  # the types transformers' Llama supports
# Keys each rope_type cannot do without (transformers would fall back to a default or only warn).
_ROPE_REQUIRED = {
    "linear": ("factor",),
    "dynamic": ("factor",),
    "yarn": ("factor", "original_max_position_embeddings"),
    "llama3": ("factor", "original_max_position_embeddings", "low_freq_factor", "high_freq_factor"),
    "longrope": ("short_factor", "long_factor", "original_max_position_embeddings"),
}


class InfiniConfig(PretrainedConfig):
    """Configuration of a Llama-style decoder whose attention is Infini-attention (arXiv 2404.07143).

    Infini fields:
        segment_length: tokens per segment; positions restart at 0 in every segment.
        memory_update: "linear" (M += σ(K)ᵀV) or "delta" (M += σ(K)ᵀ(V − σ(K)M/(σ(K)z+eps))), the paper's rules;
            or "delta_l2", a bounded variant: the delta rule token by token on unit keys with a learned write
            strength β_t (M ← M + β_t k̂ᵀ(v − k̂M)) and reads Q/|Q|·M with no z, so a needle's share of a read
            does not fade like 1/N as filler accumulates (DeltaNet: Schlag et al. 2021, Yang et al. 2024);
            or "gated_delta", delta_l2 with Gated DeltaNet's data-dependent decay (Yang, Kautz & Hatamizadeh, ICLR
            2025): M ← α_t M + β_t k̂ᵀ(v − α_t k̂M), log α_t = −exp(A_log)·softplus(a_t + dt_bias) per token and kv
            head, so the model can clear what it no longer needs instead of only overwriting it.
        memory_conv_size: 0 (the paper's model), or the width K of a depthwise causal convolution over the token
            stream applied to the memory's queries and keys (not the local attention's), as every DeltaNet-family
            model does (fla's ShortConvolution, K = 4): each memory key and query then carries its K − 1 preceding
            tokens, so a digit's key says which digits came before it and retrieval does not confuse their order.
            Initialised to the identity; the last K − 1 tokens' queries and keys are part of the streaming state.
        use_memory: False gives the local-attention-only control (memory is never read nor written).
        gate_activation: g = act(β): "sigmoid", "hard_sigmoid" (clamp(0.2β+0.5, 0, 1)), "tanh" ((1+tanh β)/2), or
            nanotron's other two `balance_act_type`s, "orig_tanh" (tanh β, in [−1, 1]: the local output's weight
            1 − g then reaches 2) and "tanh_abs" (|tanh β|). nanotron's "orig_sigmoid" is "sigmoid".
        gate_init: "zeros", "randn" or a number: how β (one value per query head) is initialised.
        memory_eps: the eps in the retrieval denominator σ(Q)z + eps (and in the delta rule's); 0 is nanotron's
            form: an empty memory (z = 0) then reads zero rather than 0/0.
        rope_parameters: transformers' own RoPE dict (same key and format as `LlamaConfig.rope_parameters`):
            {"rope_type": "default" | "linear" | "dynamic" | "yarn" | "longrope" | "llama3", "rope_theta": ...,
            "factor": ..., ...}; frequencies and attention scaling come from transformers' functions. Positions
            restart in every segment, so a scaled RoPE acts on in-segment positions: see `rotary.py`. A bare
            `rope_theta` (older configs) means {"rope_type": "default", "rope_theta": rope_theta}.
        memory_kernel: how the delta_l2 / gated_delta update runs: "auto" (fla-core's Triton kernels on CUDA in
            bf16/fp16 when installed, else the float32 torch path), "torch" or "fla". The paper's rules use torch.
        The local attention's backend is transformers' own `attn_implementation` ("sdpa" by default,
        "flash_attention_2", "eager"), given to `from_pretrained` or `load_infini`.
    Truncating backpropagation through the memory is a training setting, not part of the model: the trainer's
    `optim.detach_every`, passed to `forward(detach_every=k)`. A `detach_every` key in an older config.json is
    dropped on load (it changes gradients only, never outputs).
    """

    model_type = "infini"
    keys_to_ignore_at_inference = ["cache"]

    def __init__(
        self,
        vocab_size: int = 32000,
        hidden_size: int = 4096,
        intermediate_size: int = 11008,
        num_hidden_layers: int = 32,
        num_attention_heads: int = 32,
        num_key_value_heads: int | None = None,
        head_dim: int | None = None,
        hidden_act: str = "silu",
        max_position_embeddings: int = 1_048_576,
        initializer_range: float = 0.02,
        rms_norm_eps: float = 1e-6,
        rope_theta: float | None = None,
        rope_parameters: dict | None = None,
        attention_bias: bool = False,
        mlp_bias: bool = False,
        tie_word_embeddings: bool = False,
        segment_length: int = 2048,
        memory_update: str = "linear",
        memory_conv_size: int = 0,
        use_memory: bool = True,
        gate_activation: str = "sigmoid",
        gate_init: str | float = "zeros",
        memory_eps: float = 1e-6,
        memory_kernel: str = "auto",
        pad_token_id: int | None = None,
        bos_token_id: int | None = None,
        eos_token_id: int | None = None,
        **kwargs,
    ):
        kwargs.pop("detach_every", None)  # an older config.json's training setting (see the class docstring)
        rope_parameters = _rope_parameters(rope_parameters or kwargs.pop("rope_scaling", None), rope_theta)
        num_key_value_heads = num_attention_heads if num_key_value_heads is None else num_key_value_heads
        head_dim = hidden_size // num_attention_heads if head_dim is None else head_dim
        _validate(
            segment_length=segment_length,
            memory_update=memory_update,
            memory_conv_size=memory_conv_size,
            gate_activation=gate_activation,
            gate_init=gate_init,
            num_attention_heads=num_attention_heads,
            num_key_value_heads=num_key_value_heads,
            head_dim=head_dim,
            hidden_act=hidden_act,
            memory_kernel=memory_kernel,
            memory_eps=memory_eps,
            rope_parameters=rope_parameters,
        )
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.intermediate_size = intermediate_size
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.num_key_value_heads = num_key_value_heads
        self.head_dim = head_dim
        self.hidden_act = hidden_act
        self.max_position_embeddings = max_position_embeddings
        self.initializer_range = initializer_range
        self.rms_norm_eps = rms_norm_eps
        self.rope_parameters = rope_parameters
        self.attention_bias = attention_bias
        self.mlp_bias = mlp_bias
        self.segment_length = segment_length
        self.memory_update = memory_update
        self.memory_conv_size = memory_conv_size
        self.use_memory = use_memory
        self.gate_activation = gate_activation
        self.gate_init = gate_init
        self.memory_eps = memory_eps
        self.memory_kernel = memory_kernel
        super().__init__(
            tie_word_embeddings=tie_word_embeddings,
            pad_token_id=pad_token_id,
            bos_token_id=bos_token_id,
            eos_token_id=eos_token_id,
            **kwargs,
        )

    @property
    def rope_theta(self) -> float:
        return self.rope_parameters["rope_theta"]


def _rope_parameters(rope_parameters: dict | None, rope_theta: float | None) -> dict:
    """transformers' RoPE dict with `rope_type` and `rope_theta` filled in (a copy: the caller's dict is left)."""
    if rope_parameters is None:
        rope_parameters = {}
    if not isinstance(rope_parameters, dict):
        raise ValueError(f"rope_parameters={rope_parameters!r} is invalid: it must be a dict such as "
                         "{'rope_type': 'yarn', 'factor': 4.0, 'original_max_position_embeddings': 2048}")
    rope = dict(rope_parameters)
    rope.setdefault("rope_type", rope.pop("type", "default"))
    if rope_theta is not None:
        rope.setdefault("rope_theta", rope_theta)
    rope.setdefault("rope_theta", 10000.0)
    return rope


def _validate_rope(rope: dict) -> None:
    rope_type = rope["rope_type"]
    if rope_type not in ROPE_TYPES:
        raise ValueError(f"rope_parameters rope_type={rope_type!r} is unknown: choose one of {ROPE_TYPES}")
    missing = [key for key in _ROPE_REQUIRED.get(rope_type, ()) if rope.get(key) is None]
    if missing:
        raise ValueError(f"rope_parameters for rope_type={rope_type!r} needs {' and '.join(missing)} (got {rope})")
    theta = rope["rope_theta"]
    if isinstance(theta, bool) or not isinstance(theta, (int, float)) or theta <= 0:
        raise ValueError(f"rope_parameters rope_theta={theta!r} is invalid: it must be a number > 0")
    factor = rope.get("factor")
    if factor is not None and (isinstance(factor, bool) or not isinstance(factor, (int, float)) or factor < 1):
        raise ValueError(
            f"rope_parameters factor={factor!r} is invalid for rope_type={rope_type!r}: it must be a number >= 1 "
            "(the extended context length over the original one)"
        )
    original = rope.get("original_max_position_embeddings")
    if original is not None and (isinstance(original, bool) or not isinstance(original, int) or original < 1):
        raise ValueError(f"rope_parameters original_max_position_embeddings={original!r} must be an integer >= 1")
    if rope.get("partial_rotary_factor", 1.0) != 1.0:
        raise ValueError(
            f"rope_parameters partial_rotary_factor={rope['partial_rotary_factor']!r} is not supported: a Llama "
            "rotates the whole head (1.0)"
        )


def _validate(
    *,
    segment_length,
    memory_update,
    memory_conv_size,
    gate_activation,
    gate_init,
    num_attention_heads,
    num_key_value_heads,
    head_dim,
    hidden_act,
    memory_kernel,
    memory_eps,
    rope_parameters,
) -> None:
    """Reject bad values here, with their names, rather than deep inside torch later."""
    if isinstance(segment_length, bool) or not isinstance(segment_length, int) or segment_length < 1:
        raise ValueError(f"segment_length={segment_length!r} is invalid: it must be an integer >= 1")
    if memory_update not in MEMORY_UPDATES:
        raise ValueError(f"memory_update={memory_update!r} is unknown: choose one of {MEMORY_UPDATES}")
    integer = isinstance(memory_conv_size, int) and not isinstance(memory_conv_size, bool)
    if not (integer and (memory_conv_size == 0 or memory_conv_size >= 2)):
        raise ValueError(
            f"memory_conv_size={memory_conv_size!r} is invalid: use 0 (none) or a width >= 2, e.g. 4 (width 1 would "
            "only rescale channels)"
        )
    if gate_activation not in GATE_ACTIVATIONS:
        raise ValueError(f"gate_activation={gate_activation!r} is unknown: choose one of {GATE_ACTIVATIONS}")
    if not (gate_init in GATE_INITS or (isinstance(gate_init, (int, float)) and not isinstance(gate_init, bool))):
        raise ValueError(f"gate_init={gate_init!r} is invalid: use one of {GATE_INITS} or a number")
    if num_attention_heads % num_key_value_heads:
        raise ValueError(
            f"num_attention_heads={num_attention_heads} is not a multiple of num_key_value_heads={num_key_value_heads}"
        )
    if head_dim < 1:
        raise ValueError(f"head_dim={head_dim!r} must be >= 1")
    if memory_kernel not in MEMORY_KERNELS:
        raise ValueError(f"memory_kernel={memory_kernel!r} is unknown: choose one of {MEMORY_KERNELS}")
    if isinstance(memory_eps, bool) or not isinstance(memory_eps, (int, float)) or memory_eps < 0:
        raise ValueError(f"memory_eps={memory_eps!r} is invalid: it must be a number >= 0")
    _validate_rope(rope_parameters)
    if hidden_act != "silu":
        raise ValueError(f"hidden_act={hidden_act!r} is not supported: the SwiGLU MLP uses 'silu'")
