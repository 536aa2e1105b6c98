"""nanotron Infini-attention checkpoints in: read, merge tensor-parallel shards, map onto `InfiniForCausalLM`.

The anchor is nanotron's Infini-attention branch (huggingface/nanotron, `xrsrke/infini_attention_this_actually_works`,
commit 0d99cfb) and its forks (RRaAy-H/nanotron-infini: the same forward). A checkpoint folder, as nanotron's
`serialize.save` writes it, holds `config.yaml` (the whole training config: `model.model_config` is nanotron's
`LlamaConfig`, `infini_attention` its `InfiniAttentionArgs`) and `model/`: one safetensors file per parameter and
tensor-parallel rank (`model/model/decoder/0/pp_block/attn/qkv_proj/model_weight_pp-rank-0-of-1_tp-rank-1-of-2.safetensors`,
tensor "data"), whose metadata says which slice of the unsharded tensor it holds (`local_global_slices_pairs`,
`unsharded_shape`); parameters replicated across ranks (the RMSNorm weights) are one `model_weight.safetensors`.

What maps to what (nanotron's `models/llama.py` at 0d99cfb):
- fused `qkv_proj` rows [q (H·d) | k (H_kv·d) | v (H_kv·d)] → q_proj, k_proj, v_proj;
- fused `gate_up_proj` rows [gate (I) | up (I)] → gate_proj, up_proj (`GLUActivation`: act(first half) · second);
- `attn.balance_factors` (one β per query head) → `self_attn.gate`; `balance_act_type` → `gate_activation`
  (orig_sigmoid → sigmoid; orig_tanh, hard_sigmoid, tanh_abs by name);
- the memory: its update is always the delta rule with the z normaliser and no eps (`memory_update="delta"`,
  `memory_eps=0.0`), on pre-RoPE q/k with σ = ELU + 1, per kv head; `turn_on_memory: false` → `use_memory=False`;
- `rope_interleaved: true` (GPT-J pairs, nanotron's default) is made exact by permuting each q/k head's rows to the
  rotate-half layout: dot products (attention scores, σ(q)·σ(k), σ(q)·z) are unchanged by one permutation applied
  to both q and k, and σ is elementwise.
Refused by name: µP (`init_method.use_mup`, softmax scale 1/d, which no rescaling of q can give the memory too),
an activation other than silu, a `balance_act_type` nanotron does not know, files the model has no place for.
"""
from __future__ import annotations

import json
import logging
import re
import shutil
from pathlib import Path

import torch
import yaml
from safetensors import safe_open

from .configuration_infini import InfiniConfig
from .modeling_infini import InfiniForCausalLM

logger = logging.getLogger(__name__)

ANCHOR = "huggingface/nanotron branch xrsrke/infini_attention_this_actually_works at 0d99cfb"
# nanotron's balance_act_type -> InfiniConfig.gate_activation (same formulas: llama.py lines 495-510)
ACT_TYPES = {"orig_sigmoid": "sigmoid", "orig_tanh": "orig_tanh", "hard_sigmoid": "hard_sigmoid", "tanh_abs": "tanh_abs"}
_FILE = re.compile(
    r"^model_(?P<leaf>.+?)(?:_pp-rank-(?P<pp>\d+)-of-(?P<pp_size>\d+)_tp-rank-(?P<tp>\d+)-of-(?P<tp_size>\d+))?"
    r"\.safetensors$"
)
EMBEDDING = "model.token_position_embeddings.pp_block.token_embedding.weight"
FINAL_NORM = "model.final_layer_norm.pp_block.weight"
LM_HEAD = "model.lm_head.pp_block.weight"
_LAYER_PARTS = {  # nanotron name under model.decoder.{i}.pp_block -> ours under model.layers.{i} (None: fused)
    "input_layernorm.weight": "input_layernorm.weight",
    "attn.qkv_proj.weight": None,
    "attn.o_proj.weight": "self_attn.o_proj.weight",
    "attn.balance_factors": "self_attn.gate",
    "post_attention_layernorm.weight": "post_attention_layernorm.weight",
    "mlp.gate_up_proj.weight": None,
    "mlp.down_proj.weight": "mlp.down_proj.weight",
}


class NanotronCheckpointError(ValueError):
    """A nanotron checkpoint that cannot be read, or that holds a setting the conversion cannot reproduce exactly."""


def is_nanotron_checkpoint(path: str | Path) -> bool:
    """A folder as nanotron's `serialize.save` writes it: `config.yaml` beside a `model/` folder of weights."""
    path = Path(path)
    return (path / "config.yaml").is_file() and (path / "model").is_dir()


def convert_command(path: str | Path) -> str:
    """The command that converts `path`; the error for a nanotron folder given where a model folder belongs."""
    path = Path(path)
    return f"infini-bench convert --from-nanotron {path} --to {path.parent / (path.name + '-infini')}"


def read_nanotron_config(path: str | Path) -> dict:
    """The checkpoint's config.yaml as a dict, checked to be a nanotron Infini-attention Llama's."""
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"nanotron checkpoint folder {str(path)!r} does not exist (or is not a folder)")
    if not is_nanotron_checkpoint(path):
        raise NanotronCheckpointError(
            f"{str(path)!r} is not a nanotron checkpoint: it needs config.yaml and a model/ folder of weights (the "
            "folder of one training step, e.g. checkpoints/30000)"
        )
    try:
        config = yaml.safe_load((path / "config.yaml").read_text())
    except yaml.YAMLError as err:
        raise NanotronCheckpointError(f"{str(path / 'config.yaml')!r} is not valid YAML: {err}") from None
    model = (config or {}).get("model") if isinstance(config, dict) else None
    if not isinstance(model, dict) or not isinstance(model.get("model_config"), dict):
        raise NanotronCheckpointError(f"{str(path / 'config.yaml')!r} has no model.model_config: it is not a nanotron config")
    if not isinstance(config.get("infini_attention"), dict):
        raise NanotronCheckpointError(
            f"{str(path / 'config.yaml')!r} has no infini_attention section: it is not an Infini-attention checkpoint "
            f"of {ANCHOR}"
        )
    return config


def infini_config_from_nanotron(config: dict, source: str = "config.yaml") -> tuple[InfiniConfig, bool]:
    """(the InfiniConfig that computes what nanotron's forward computes, whether q/k rows need the interleaved
    RoPE permutation). Every setting that forward would run differently is refused by name."""
    mc, infini = config["model"]["model_config"], config["infini_attention"]
    missing = [k for k in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                           "num_attention_heads") if k not in mc]
    if missing or mc.get("is_llama_config") is False:
        raise NanotronCheckpointError(
            f"{source}: model.model_config is not a nanotron LlamaConfig (missing {', '.join(missing) or 'is_llama_config'})"
        )
    init = config["model"].get("init_method") or {}
    if isinstance(init, dict) and init.get("use_mup"):
        raise NanotronCheckpointError(
            f"{source}: model.init_method.use_mup=true (is_using_mup) is not supported: nanotron then scales attention "
            "scores by 1/d instead of 1/sqrt(d), which this model does not do"
        )
    act = mc.get("hidden_act", "silu")
    if act != "silu":
        raise NanotronCheckpointError(
            f"{source}: model_config.hidden_act={act!r} is not supported: the MLP is SwiGLU ('silu')"
        )
    balance = infini.get("balance_act_type")
    if balance not in ACT_TYPES:
        raise NanotronCheckpointError(
            f"{source}: infini_attention.balance_act_type={balance!r} is unknown: nanotron's Infini-attention knows "
            f"{', '.join(ACT_TYPES)}"
        )
    if "segment_length" not in infini:
        raise NanotronCheckpointError(f"{source}: infini_attention has no segment_length")
    if mc.get("rope_scaling"):
        logger.warning("%s: model_config.rope_scaling=%r is ignored, as nanotron's Infini-attention forward ignores it "
                       "(%s: RoPE with rope_theta only)", source, mc["rope_scaling"], ANCHOR)
    heads = mc["num_attention_heads"]
    if mc["hidden_size"] % heads:
        raise NanotronCheckpointError(
            f"{source}: hidden_size={mc['hidden_size']} is not a multiple of num_attention_heads={heads}"
        )
    infini_config = InfiniConfig(
        vocab_size=mc["vocab_size"],
        hidden_size=mc["hidden_size"],
        intermediate_size=mc["intermediate_size"],
        num_hidden_layers=mc["num_hidden_layers"],
        num_attention_heads=heads,
        num_key_value_heads=mc.get("num_key_value_heads") or heads,
        head_dim=mc["hidden_size"] // heads,  # nanotron's d_qk
        rms_norm_eps=mc.get("rms_norm_eps", 1e-6),
        rope_parameters={"rope_type": "default", "rope_theta": float(mc.get("rope_theta", 10000.0))},
        tie_word_embeddings=bool(mc.get("tie_word_embeddings", False)),
        segment_length=infini["segment_length"],
        memory_update="delta",
        memory_eps=0.0,
        use_memory=bool(infini.get("turn_on_memory", True)),
        gate_activation=ACT_TYPES[balance],
        bos_token_id=mc.get("bos_token_id"),
        eos_token_id=mc.get("eos_token_id"),
        pad_token_id=mc.get("pad_token_id"),
    )
    return infini_config, bool(mc.get("rope_interleaved", True))  # nanotron's LlamaConfig defaults to True


def nanotron_parameter_names(config: InfiniConfig) -> list[str]:
    """The parameters nanotron's LlamaForTraining saves for this config (tied lm_head: saved as the embedding)."""
    names = [EMBEDDING]
    for i in range(config.num_hidden_layers):
        names += [f"model.decoder.{i}.pp_block.{part}" for part in _LAYER_PARTS]
    names.append(FINAL_NORM)
    if not config.tie_word_embeddings:
        names.append(LM_HEAD)
    return names


def _parameter_folder(root: Path, name: str) -> Path:
    return root.joinpath("model", *name.split(".")[:-1])


def read_nanotron_weights(path: str | Path, names: list[str]) -> dict[str, torch.Tensor]:
    """Each named parameter whole (its tensor-parallel shards merged by their own slice metadata), in the dtype it
    was saved in. Files under model/ that are none of `names` are refused: the model would have no place for them."""
    root = Path(path)
    weights = {name: _read_parameter(root, name) for name in names}
    known = {(_parameter_folder(root, n), n.rsplit(".", 1)[-1]) for n in names}
    for file in sorted((root / "model").rglob("*.safetensors")):
        match = _FILE.match(file.name)
        if match is None or (file.parent, match["leaf"]) not in known:
            raise NanotronCheckpointError(
                f"{str(file)!r} is not a weight of nanotron's Infini-attention Llama as {ANCHOR} saves it: this "
                "checkpoint's model has parts the conversion cannot place"
            )
    return weights


def _read_parameter(root: Path, name: str) -> torch.Tensor:
    folder, leaf = _parameter_folder(root, name), name.rsplit(".", 1)[-1]
    matches = ((f, _FILE.match(f.name)) for f in sorted(folder.glob(f"model_{leaf}*.safetensors")))
    files = [(f, m) for f, m in matches if m is not None and m["leaf"] == leaf]
    if not files:
        raise NanotronCheckpointError(
            f"nanotron checkpoint {str(root)!r} has no weights for {name} (looked for model_{leaf}*.safetensors in "
            f"{str(folder)!r})"
        )
    whole = [f for f, m in files if m["tp"] is None]
    if whole and len(files) == 1:
        return _load_data(whole[0])
    sharded = [(f, m) for f, m in files if m["tp"] is not None]
    sizes = {(m["pp"], m["pp_size"], m["tp_size"]) for _, m in sharded}
    if whole or len(sizes) != 1:
        raise NanotronCheckpointError(
            f"{str(folder)!r} holds {name} in more than one layout ({', '.join(f.name for f, _ in files)}): keep the "
            "files of one save only"
        )
    pp, pp_size, tp_size = sizes.pop()
    present = {int(m["tp"]): f for f, m in sharded}
    for rank in range(int(tp_size)):
        if rank not in present:
            expected = f"model_{leaf}_pp-rank-{pp}-of-{pp_size}_tp-rank-{rank}-of-{tp_size}.safetensors"
            raise NanotronCheckpointError(
                f"the shard {str(folder / expected)!r} of {name} is missing (tensor parallel size {tp_size}): copy the "
                "checkpoint again"
            )
    return _merge_shards(name, [present[r] for r in range(int(tp_size))])


def _load_data(file: Path) -> torch.Tensor:
    with safe_open(str(file), framework="pt") as handle:
        if "data" not in handle.keys():
            raise NanotronCheckpointError(f"{str(file)!r} has no tensor 'data': it is not a nanotron weight file")
        return handle.get_tensor("data")


def _slices(text: str) -> tuple[slice, ...]:
    """nanotron's `SlicesPair.slice_to_str` format, one dimension per '|': 'start,stop,step'."""
    return tuple(slice(*(None if x == "None" else int(x) for x in part.split(","))) for part in text.split("|"))


def _merge_shards(name: str, files: list[Path]) -> torch.Tensor:
    """The unsharded tensor, each shard's local slices written to their global slices (nanotron's
    `serialize.utils.merge_and_shard_tp_tensors`): column-parallel weights along dim 0 inside each contiguous
    chunk (so fused qkv / gate_up come out as [q | k | v], [gate | up]), row-parallel along dim 1, the vocabulary
    along dim 0."""
    merged = covered = None
    for file in files:
        with safe_open(str(file), framework="pt") as handle:
            meta = handle.metadata() or {}
            if "local_global_slices_pairs" not in meta or "unsharded_shape" not in meta:
                raise NanotronCheckpointError(
                    f"{str(file)!r} has no sharding metadata (local_global_slices_pairs, unsharded_shape): it was not "
                    "written by nanotron's save_weights (checkpoint version 1.2)"
                )
            shard = handle.get_tensor("data")
        shape = tuple(int(s) for s in meta["unsharded_shape"].strip("()").split(",") if s.strip())
        if merged is None:
            merged = torch.zeros(shape, dtype=shard.dtype)
            covered = torch.zeros(shape, dtype=torch.bool)
        elif tuple(merged.shape) != shape:
            raise NanotronCheckpointError(f"the shards of {name} disagree on its unsharded shape ({str(file)!r})")
        for pair in meta["local_global_slices_pairs"].split(";"):
            local, global_ = (_slices(part) for part in pair.split("#"))
            merged[global_] = shard[local]
            covered[global_] = True
    if not bool(covered.all()):
        raise NanotronCheckpointError(f"the shards of {name} do not cover its whole {tuple(merged.shape)} tensor")
    return merged


def _rotate_half_order(head_dim: int) -> torch.Tensor:
    """Row order that turns GPT-J (interleaved) RoPE pairs (2i, 2i+1) into rotate-half pairs (i, i + d/2)."""
    return torch.cat([torch.arange(0, head_dim, 2), torch.arange(1, head_dim, 2)])


def infini_state_dict(weights: dict[str, torch.Tensor], config: InfiniConfig, rope_interleaved: bool) -> dict[str, torch.Tensor]:
    """nanotron's (merged) parameters under this model's names, float32; fused projections split."""
    h, h_kv, d, inter = config.num_attention_heads, config.num_key_value_heads, config.head_dim, config.intermediate_size
    order = _rotate_half_order(d)
    state = {"model.embed_tokens.weight": weights[EMBEDDING], "model.norm.weight": weights[FINAL_NORM]}
    if not config.tie_word_embeddings:
        state["lm_head.weight"] = weights[LM_HEAD]
    for i in range(config.num_hidden_layers):
        src, dst = f"model.decoder.{i}.pp_block.", f"model.layers.{i}."
        for part, ours in _LAYER_PARTS.items():
            if ours is not None:
                state[dst + ours] = weights[src + part]
        qkv = weights[src + "attn.qkv_proj.weight"]
        if qkv.shape[0] != (h + 2 * h_kv) * d:
            raise NanotronCheckpointError(
                f"{src}attn.qkv_proj.weight has {qkv.shape[0]} rows, expected (H + 2·H_kv)·d = {(h + 2 * h_kv) * d}"
            )
        q, k, v = qkv.split([h * d, h_kv * d, h_kv * d])
        if rope_interleaved:
            q, k = (w.view(-1, d, w.shape[-1])[:, order].reshape(w.shape) for w in (q, k))
        state[dst + "self_attn.q_proj.weight"], state[dst + "self_attn.k_proj.weight"] = q, k
        state[dst + "self_attn.v_proj.weight"] = v
        gate_up = weights[src + "mlp.gate_up_proj.weight"]
        if gate_up.shape[0] != 2 * inter:
            raise NanotronCheckpointError(
                f"{src}mlp.gate_up_proj.weight has {gate_up.shape[0]} rows, expected 2·intermediate_size = {2 * inter}"
            )
        state[dst + "mlp.gate_proj.weight"], state[dst + "mlp.up_proj.weight"] = gate_up.split([inter, inter])
    return {key: value.float().contiguous() for key, value in state.items()}


def load_nanotron(path: str | Path) -> InfiniForCausalLM:
    """The nanotron checkpoint at `path` as an InfiniForCausalLM (float32), computing what nanotron's forward does."""
    config_dict = read_nanotron_config(path)
    config, interleaved = infini_config_from_nanotron(config_dict, str(Path(path) / "config.yaml"))
    weights = read_nanotron_weights(path, nanotron_parameter_names(config))
    vocab = weights[EMBEDDING].shape[0]
    if vocab != config.vocab_size:  # make_vocab_size_divisible_by pads the table; the logits cover every row
        logger.warning("vocab_size=%d in config.yaml, %d rows in the embedding: using the embedding's", config.vocab_size, vocab)
        config.vocab_size = vocab
    model = InfiniForCausalLM(config)
    missing, unexpected = model.load_state_dict(infini_state_dict(weights, config, interleaved), strict=False)
    missing = [k for k in missing if not (config.tie_word_embeddings and k == "lm_head.weight")]
    if missing or unexpected:
        raise NanotronCheckpointError(
            f"nanotron weights do not map onto the Infini model: missing={missing}, unexpected={unexpected}"
        )
    return model.eval()


def _save_tokenizer(config: dict, src: Path, dst: Path, tokenizer: str | None) -> str | None:
    """Save the tokenizer the checkpoint names (or `tokenizer`) into `dst` when it is on disk: a folder (as given,
    or relative to the checkpoint) or the Hugging Face cache. Returns a note when there is none to save."""
    from transformers import AutoTokenizer

    section = config.get("tokenizer") or {}
    name = tokenizer or section.get("tokenizer_name_or_path")
    if not name:
        return "config.yaml names no tokenizer: pass --tokenizer PATH, or tokenizer=... in --model_args"
    candidates = [Path(name).expanduser()] + ([] if tokenizer else [src / name])
    folder = next((c for c in candidates if c.is_dir()), None)
    try:  # a folder, else the Hugging Face cache: never the network
        loaded = AutoTokenizer.from_pretrained(
            folder or name, revision=None if tokenizer else section.get("tokenizer_revision"), local_files_only=True
        )
    except (OSError, ValueError) as err:
        if tokenizer:
            raise FileNotFoundError(f"--tokenizer {tokenizer!r} cannot be loaded: {err}") from None
        return (f"config.yaml names the tokenizer {name!r}, which is not on disk (a folder or the Hugging Face cache), "
                "so the converted folder has none: pass --tokenizer PATH (or tokenizer=... in --model_args)")
    loaded.save_pretrained(dst)
    return None


def convert_nanotron_checkpoint(src: str | Path, dst: str | Path, tokenizer: str | None = None) -> tuple[Path, str | None]:
    """`infini-bench convert --from-nanotron`: an ordinary InfiniForCausalLM folder (float32 weights, config and,
    when on disk, the tokenizer). Returns (folder, a note on the tokenizer or None)."""
    src, dst = Path(src), Path(dst)
    if dst.exists() and any(dst.iterdir()):
        raise FileExistsError(f"output folder {str(dst)!r} exists and is not empty")
    model = load_nanotron(src)
    config = read_nanotron_config(src)
    tmp = dst.with_name(dst.name + ".partial")  # written whole, then renamed: no half-converted folder at `dst`
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        model.save_pretrained(tmp)
        note = _save_tokenizer(config, src, tmp, tokenizer)
        source = {"converted_from": str(src.resolve()), "anchor": ANCHOR}
        (tmp / "nanotron_source.json").write_text(json.dumps(source, indent=2))
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if dst.exists():
        dst.rmdir()
    tmp.rename(dst)
    return dst, note
