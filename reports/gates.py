"""What the gates learnt, read from a checkpoint's files alone: β per layer and query head from its safetensors,
the activation from its config.json, g = act(β), and what kind of head each g makes.

This is the one numpy home of the gate maths (`infini-bench inspect` and the report both count heads with it; a
test holds `gate_values` to the model's own for every activation). It never imports torch or the model
(docs/ARCHITECTURE.md §6), so the report reads the safetensors header itself and decodes bf16 with numpy.

An Infini head mixes A = g·A_mem + (1 − g)·A_local. A head is *memory-only* when g > 0.9 (the local term keeps
less than a tenth), *local-only* when |g| < 0.1 (the memory term keeps less than a tenth; for the [0, 1]
activations that is g < 0.1) and a *mixer* otherwise; with nanotron's orig_tanh (g in [−1, 1]) a mixer with
g < −0.1 subtracts its memory read, counted again as *negative*. HF's Infini-attention post-mortem found most
heads stuck near g = 0.5: a table of mixers at 0.5 is that failure.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

#: g above this: the head reads its memory only.
MEMORY_ONLY = 0.9
#: |g| below this: the head attends locally only.
LOCAL_ONLY = 0.1
#: the activations `InfiniConfig.gate_activation` allows, with the range of g each gives
GATE_RANGES: dict[str, tuple[float, float]] = {
    "sigmoid": (0.0, 1.0),
    "hard_sigmoid": (0.0, 1.0),
    "tanh": (0.0, 1.0),
    "orig_tanh": (-1.0, 1.0),
    "tanh_abs": (0.0, 1.0),
}
_GATE_KEY = re.compile(r"^(?:model\.)?layers\.(\d+)\.self_attn\.gate$")
_DTYPES = {"F64": np.float64, "F32": np.float32, "F16": np.float16}


class GateReadError(ValueError):
    """A checkpoint folder whose gates cannot be read; the message says which folder and why, in one sentence."""


def gate_values(beta: np.ndarray, activation: str) -> np.ndarray:
    """g = act(β) in float64, as `infini_bench.modeling.attention.gate_values` computes it."""
    beta = np.asarray(beta, dtype=np.float64)
    if activation == "sigmoid":
        return 1.0 / (1.0 + np.exp(-beta))
    if activation == "hard_sigmoid":
        return np.clip(0.2 * beta + 0.5, 0.0, 1.0)
    if activation == "tanh":
        return 0.5 * (1.0 + np.tanh(beta))
    if activation == "orig_tanh":
        return np.tanh(beta)
    if activation == "tanh_abs":
        return np.abs(np.tanh(beta))
    raise GateReadError(f"gate_activation={activation!r} is unknown: choose one of {', '.join(GATE_RANGES)}")


@dataclass(frozen=True)
class HeadKinds:
    """How many heads of each kind (see the module doc for the thresholds)."""

    memory_only: int
    local_only: int
    mixers: int
    negative: int  # mixers with g < −0.1 (orig_tanh only)
    total: int

    def as_dict(self) -> dict[str, int]:
        return {"memory_only": self.memory_only, "local_only": self.local_only, "mixers": self.mixers,
                "negative": self.negative, "total": self.total}

    def sentence(self) -> str:
        """``8 heads: 3 memory-only (g > 0.9), 1 local-only (|g| < 0.1), 4 mixers``."""
        text = (f"{self.total} heads: {self.memory_only} memory-only (g > {MEMORY_ONLY:g}), {self.local_only} "
                f"local-only (|g| < {LOCAL_ONLY:g}), {self.mixers} mixers")
        return text + (f" ({self.negative} with g < −{LOCAL_ONLY:g}: they subtract their memory read)"
                       if self.negative else "")


def head_kinds(g: np.ndarray) -> HeadKinds:
    g = np.asarray(g, dtype=np.float64)
    memory = int((g > MEMORY_ONLY).sum())
    local = int((np.abs(g) < LOCAL_ONLY).sum())
    return HeadKinds(memory, local, int(g.size) - memory - local, int((g < -LOCAL_ONLY).sum()), int(g.size))


@dataclass(frozen=True)
class GateTable:
    """One checkpoint's gates: β and g [layers, heads], the activation, and whether its config reads the memory."""

    folder: Path
    activation: str
    beta: np.ndarray
    use_memory: bool

    @property
    def g(self) -> np.ndarray:
        return gate_values(self.beta, self.activation)

    @property
    def kinds(self) -> HeadKinds:
        return head_kinds(self.g)

    @property
    def g_range(self) -> tuple[float, float]:
        return GATE_RANGES[self.activation]


def read_gates(folder: str | Path) -> GateTable:
    """The gates of an Infini checkpoint folder (config.json + model.safetensors or its sharded index).

    Raises `GateReadError` (one sentence) when the folder is missing, is not an Infini checkpoint, keeps its
    weights in a format numpy cannot read, or lacks a gate."""
    folder = Path(folder)
    if not folder.is_dir():
        raise GateReadError(f"checkpoint folder {str(folder)!r} does not exist (or is not a folder)")
    config = _read_config(folder)
    activation = config.get("gate_activation", "sigmoid")
    if activation not in GATE_RANGES:
        raise GateReadError(f"{str(folder)!r} has gate_activation={activation!r}, which this report cannot compute: "
                            f"it knows {', '.join(GATE_RANGES)}")
    layers, heads = config.get("num_hidden_layers"), config.get("num_attention_heads")
    if not isinstance(layers, int) or not isinstance(heads, int):
        raise GateReadError(f"{str(folder / 'config.json')!r} gives no num_hidden_layers and num_attention_heads")
    found = _read_gate_tensors(folder)
    missing = [i for i in range(layers) if i not in found]
    if missing:
        raise GateReadError(f"{str(folder)!r} has no gate for layer(s) {', '.join(map(str, missing))} in its weights")
    beta = np.stack([found[i].reshape(-1) for i in range(layers)])
    if beta.shape != (layers, heads):
        raise GateReadError(f"{str(folder)!r} has gates of shape {beta.shape}, not ({layers}, {heads}) as its "
                            "config says")
    return GateTable(folder, activation, beta, bool(config.get("use_memory", True)))


def _read_config(folder: Path) -> dict:
    path = folder / "config.json"
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise GateReadError(f"checkpoint folder {str(folder)!r} has no config.json: it is not a saved model") from None
    except (OSError, ValueError) as err:
        raise GateReadError(f"{str(path)!r} cannot be read as JSON ({err})") from None
    if not isinstance(config, dict) or config.get("model_type") != "infini":
        kind = config.get("model_type") if isinstance(config, dict) else None
        raise GateReadError(f"{str(folder)!r} has model_type={kind!r}, not 'infini': it has no Infini gates")
    return config


def _read_gate_tensors(folder: Path) -> dict[int, np.ndarray]:
    """Every `layers.<i>.self_attn.gate` tensor, by layer, from model.safetensors or the shards of its index."""
    single, index = folder / "model.safetensors", folder / "model.safetensors.index.json"
    if single.is_file():
        files = [single]
    elif index.is_file():
        try:
            weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise GateReadError(f"{str(index)!r} cannot be read ({err})") from None
        files = [folder / name for name in sorted({v for k, v in weight_map.items() if _GATE_KEY.match(k)})]
    else:
        raise GateReadError(f"{str(folder)!r} has no model.safetensors (nor its index): its gates cannot be read "
                            "without torch")
    found: dict[int, np.ndarray] = {}
    for path in files:
        for name, tensor in _read_matching(path, _GATE_KEY).items():
            found[int(_GATE_KEY.match(name).group(1))] = tensor
    return found


def _read_matching(path: Path, pattern: re.Pattern) -> dict[str, np.ndarray]:
    """The tensors of one safetensors file whose names match `pattern`, as float arrays. Reads the header and those
    tensors' bytes only (a 300M checkpoint's gates are a few hundred bytes); bf16 is widened to float32 by hand
    because numpy has no bf16 (safetensors.numpy refuses it)."""
    try:
        with open(path, "rb") as handle:
            header_size = int.from_bytes(handle.read(8), "little")
            header = json.loads(handle.read(header_size))
            out = {}
            for name, entry in header.items():
                if name == "__metadata__" or not pattern.match(name):
                    continue
                start, end = entry["data_offsets"]
                handle.seek(8 + header_size + start)
                raw = handle.read(end - start)
                if len(raw) != end - start:
                    raise ValueError(f"tensor {name} is cut short")
                out[name] = _decode(raw, entry["dtype"], name).reshape(entry["shape"])
            return out
    except OSError as err:
        raise GateReadError(f"{str(path)!r} cannot be read ({err})") from None
    except (ValueError, KeyError, TypeError) as err:
        raise GateReadError(f"{str(path)!r} is not a readable safetensors file ({err})") from None


def _decode(raw: bytes, dtype: str, name: str) -> np.ndarray:
    if dtype == "BF16":  # the high half of a float32
        return (np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16).view(np.float32)
    if dtype not in _DTYPES:
        raise ValueError(f"tensor {name} has dtype {dtype}; gates are read as {', '.join(['BF16', *_DTYPES])}")
    return np.frombuffer(raw, dtype=np.dtype(_DTYPES[dtype]).newbyteorder("<")).astype(np.float64)
