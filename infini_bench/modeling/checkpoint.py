"""Loading checkpoints with clear errors, and converting a transformers Llama checkpoint into an Infini one."""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import torch
from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

from .configuration_infini import InfiniConfig
from .finite_weights import check_finite_weights
from .modeling_infini import InfiniForCausalLM

WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16, "auto": "auto"}


class DamagedCheckpointError(ValueError):
    """A weight file that is cut short or garbled; the message names the file and says what to do."""


def check_safetensors_file(path: str | Path) -> None:
    """Raise `DamagedCheckpointError` unless `path` is a whole safetensors file: its header must parse and the
    tensors it describes must end exactly at the end of the file (a copy or save cut short by a full disk or a
    kill ends early). Reads only the header."""
    path = Path(path)
    size = path.stat().st_size
    try:
        with open(path, "rb") as handle:
            head = handle.read(8)
            if len(head) < 8:
                raise ValueError(f"the file is {size} bytes, too short for a header")
            header_size = int.from_bytes(head, "little")
            if header_size > size - 8:
                raise ValueError(f"the file is {size} bytes, shorter than its own {header_size}-byte header")
            header = json.loads(handle.read(header_size))
        ends = [entry["data_offsets"][1] for name, entry in header.items() if name != "__metadata__"]
    except (ValueError, KeyError, TypeError, IndexError, AttributeError) as err:  # JSONDecodeError is a ValueError
        detail = str(err) if "bytes" in str(err) else f"its header is unreadable: {err}"
        raise DamagedCheckpointError(_damaged(path, detail)) from None
    expected = 8 + header_size + max(ends, default=0)
    if expected != size:
        state = "cut short" if size < expected else "longer than its header says"
        raise DamagedCheckpointError(_damaged(path, f"the file is {size} bytes, its header describes {expected}: {state}"))


def _damaged(path: Path, detail: str) -> str:
    return (
        f"{str(path)!r} is damaged ({detail}), e.g. by a full disk or an interrupted copy or save: copy or save the "
        "checkpoint again"
    )


def check_weight_files(path: str | Path) -> None:
    """Check every safetensors weight file of a checkpoint folder (a single file or the shards of an index)."""
    path = Path(path)
    single = path / "model.safetensors"
    if single.is_file():
        check_safetensors_file(single)
    index = path / "model.safetensors.index.json"
    if index.is_file():
        try:
            shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        except (ValueError, KeyError, TypeError, AttributeError) as err:
            raise DamagedCheckpointError(_damaged(index, f"unreadable: {err}")) from None
        for shard in shards:
            if not (path / shard).is_file():
                raise DamagedCheckpointError(_damaged(index, f"its shard {shard} is missing"))
            check_safetensors_file(path / shard)


def check_checkpoint_dir(path: str | Path, model_types: tuple[str, ...] = ("infini", "llama")) -> str:
    """Return the checkpoint's `model_type` after checking the folder holds a config and weights."""
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"checkpoint folder {str(path)!r} does not exist (or is not a folder)")
    config_file = path / "config.json"
    from .nanotron import convert_command, is_nanotron_checkpoint

    if not config_file.is_file() and is_nanotron_checkpoint(path):  # converted once, then an ordinary folder
        raise ValueError(f"checkpoint {str(path)!r} is a nanotron checkpoint: convert it first with `{convert_command(path)}`")
    if not config_file.is_file():
        raise FileNotFoundError(f"checkpoint folder {str(path)!r} has no config.json: it is not a saved model")
    try:
        model_type = json.loads(config_file.read_text()).get("model_type")
    except json.JSONDecodeError as err:
        raise ValueError(f"{str(config_file)!r} is not valid JSON: {err}") from None
    if model_type not in model_types:
        raise ValueError(f"checkpoint {str(path)!r} has model_type={model_type!r}; expected one of {model_types}")
    if not any((path / name).is_file() for name in WEIGHT_FILES):
        raise FileNotFoundError(f"checkpoint folder {str(path)!r} has no weights (looked for {', '.join(WEIGHT_FILES)})")
    check_weight_files(path)
    return model_type


def resolve_dtype(dtype: str | torch.dtype) -> torch.dtype | str:
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in DTYPES:
        raise ValueError(f"dtype={dtype!r} is unknown: choose one of {tuple(DTYPES)}")
    return DTYPES[dtype]


def load_infini(
    path: str | Path,
    dtype: str | torch.dtype = "float32",
    convert_llama: bool = False,
    attn_implementation: str | None = None,
    **overrides,
) -> InfiniForCausalLM:
    """Load an Infini checkpoint (or, with `convert_llama`, a Llama one converted on the fly).

    `attn_implementation` is transformers' own choice of local-attention backend ("sdpa" by default,
    "flash_attention_2", "eager"). `overrides` replace config fields (e.g. `segment_length`, `use_memory=False`
    for the memory-off control)."""
    torch_dtype = resolve_dtype(dtype)
    model_type = check_checkpoint_dir(path)
    check_finite_weights(path)  # a NaN weight would score 0 % silently: refuse it by tensor and file
    if model_type == "llama":
        if not convert_llama:
            raise ValueError(f"checkpoint {str(path)!r} is a Llama model: pass convert_llama=True to convert it on the fly")
        model = llama_to_infini(LlamaForCausalLM.from_pretrained(path, dtype=torch.float32), **overrides)
        if attn_implementation is not None:
            model.set_attn_implementation(attn_implementation)
        return model.to(torch.float32 if torch_dtype == "auto" else torch_dtype)
    config = InfiniConfig.from_pretrained(path, **overrides)
    return InfiniForCausalLM.from_pretrained(path, config=config, dtype=torch_dtype, attn_implementation=attn_implementation)


#: The config fields a Llama and an Infini model both have, under one name and with one meaning: the conversion
#: copies them as they are in either direction.
SHARED_FIELDS = (
    "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
    "num_key_value_heads", "head_dim", "rms_norm_eps", "rope_parameters", "attention_bias", "mlp_bias",
    "tie_word_embeddings", "bos_token_id", "eos_token_id", "pad_token_id",
)


def _shared_fields(config: LlamaConfig | InfiniConfig) -> dict[str, Any]:
    """`SHARED_FIELDS` of either config (an old Llama config without `head_dim` gives None: derived from the
    hidden size), RoPE's parameters as a fresh dict."""
    fields = {name: getattr(config, name, None) for name in SHARED_FIELDS}
    fields["rope_parameters"] = dict(config.rope_parameters)
    return fields


def infini_config_from_llama(llama: LlamaConfig, **overrides) -> InfiniConfig:
    """The Infini config of a Llama's weights, its RoPE (any `rope_type`, computed by transformers) included.

    The Llama's `max_position_embeddings` is carried over only for the RoPE types whose frequencies read it
    (`dynamic` scales beyond it, `longrope` takes its factor from it): elsewhere it would only cap the lengths an
    Infini model is evaluated at (the adapter's default `max_length`)."""
    reads_length = llama.rope_parameters["rope_type"] in ("dynamic", "longrope")
    lengths = {"max_position_embeddings": llama.max_position_embeddings} if reads_length else {}
    fields = {**_shared_fields(llama), **lengths, "initializer_range": llama.initializer_range}
    return InfiniConfig(**{**fields, **overrides})


def infini_only(name: str) -> bool:
    """Parameters a Llama lacks: the gates β, the write-strength projection (delta_l2, gated_delta),
    gated_delta's decay parameters and the memory's short convolution."""
    return name.endswith("self_attn.gate") or any(
        f".self_attn.{part}" in name
        for part in ("write_strength.", "decay_proj.", "decay_log_rate", "decay_bias", "memory_conv.")
    )


def llama_to_infini(llama: LlamaForCausalLM, **overrides) -> InfiniForCausalLM:
    """Same weights by name, new gates initialised by `gate_init` (the paper's continued pre-training start) and,
    for delta_l2 and gated_delta, a freshly initialised write-strength projection (and decay)."""
    model = InfiniForCausalLM(infini_config_from_llama(llama.config, **overrides))
    missing, unexpected = model.load_state_dict(llama.state_dict(), strict=False)
    missing = [k for k in missing if not infini_only(k)]
    if model.config.tie_word_embeddings:
        missing = [k for k in missing if k != "lm_head.weight"]
    unexpected = [k for k in unexpected if "rotary_emb" not in k]
    if missing or unexpected:
        raise ValueError(f"Llama weights do not map onto the Infini model: missing={missing}, unexpected={unexpected}")
    return model


def infini_to_llama(model: InfiniForCausalLM, max_position_embeddings: int | None = None) -> LlamaForCausalLM:
    """The inverse of `llama_to_infini` for a model trained with one segment and no memory: a full-attention Llama
    with the same weights (the quickstart's baseline, evaluated with lm-eval's own `hf` model)."""
    c = model.config
    llama = LlamaForCausalLM(
        LlamaConfig(**_shared_fields(c), max_position_embeddings=max_position_embeddings or c.max_position_embeddings)
    )
    state = {k: v for k, v in model.state_dict().items() if not infini_only(k)}
    missing, unexpected = llama.load_state_dict(state, strict=False)
    missing = [k for k in missing if not (c.tie_word_embeddings and k == "lm_head.weight")]
    if missing or unexpected:
        raise ValueError(f"Infini weights do not map onto Llama: missing={missing}, unexpected={unexpected}")
    return llama.to(model.dtype)


def convert_llama_checkpoint(src: str | Path, dst: str | Path, segment_length: int, **overrides) -> Path:
    """`infini-bench convert`: write an Infini checkpoint (and the tokenizer) converted from a Llama folder."""
    if check_checkpoint_dir(src, ("llama",)) != "llama":  # pragma: no cover - check raises first
        raise ValueError(src)
    dst = Path(dst)
    if dst.exists() and any(dst.iterdir()):
        raise FileExistsError(f"output folder {str(dst)!r} exists and is not empty")
    llama = LlamaForCausalLM.from_pretrained(src, dtype=torch.float32)
    model = llama_to_infini(llama, segment_length=segment_length, **overrides)
    model.save_pretrained(dst)
    try:
        AutoTokenizer.from_pretrained(src).save_pretrained(dst)
    except (OSError, ValueError):
        for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.model"):
            if (Path(src) / name).is_file():
                shutil.copy2(Path(src) / name, dst / name)
    return dst
