"""Tiny checkpoints written in nanotron's on-disk layout, as its `serialize.save` writes them (huggingface/nanotron,
branch xrsrke/infini_attention_this_actually_works, commit 0d99cfb):

- sharding per `parallel/sharded_parameters.py` `create_sharded_parameter_from_config` (equal splits, or equal
  splits inside each contiguous chunk: qkv_proj's (H·d, H_kv·d, H_kv·d), gate_up_proj's (I, I)), with the split
  dims of `parallel/tensor_parallel/nn.py` (column-parallel and the vocabulary-parallel embedding along 0,
  row-parallel along 1) and `models/llama.py` 486-493 (balance_factors along 0);
- file names per `serialize/utils.py` `get_path` (model/<module path>/model_<leaf>_pp-rank-0-of-1_tp-rank-R-of-T.safetensors;
  parameters replicated across tp, the RMSNorm weights, as model_<leaf>.safetensors), tensor "data" and the
  metadata of `serialize/metadata.py` `TensorMetadata.to_str_dict` (`serialize/weights.py` `save_weights`);
- config.yaml as `Config.save_as_yaml` serialises the training config, model_config.json, checkpoint_metadata.json.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
import yaml
from safetensors.torch import save_file

EMBEDDING = "model.token_position_embeddings.pp_block.token_embedding.weight"


def model_config(**overrides) -> dict:
    """nanotron's LlamaConfig fields (config/models_config.py), tiny."""
    fields = dict(
        bos_token_id=1, eos_token_id=2, hidden_act="silu", hidden_size=64, initializer_range=0.02,
        intermediate_size=96, is_llama_config=True, max_position_embeddings=256, num_attention_heads=4,
        num_hidden_layers=2, num_key_value_heads=2, pad_token_id=None, pretraining_tp=1, rms_norm_eps=1e-5,
        rope_scaling=None, rope_theta=10000.0, rope_interleaved=True, tie_word_embeddings=False, use_cache=True,
        vocab_size=128,
    )
    fields.update(overrides)
    return fields


def infini_args(**overrides) -> dict:
    """nanotron's InfiniAttentionArgs (config/config.py 301-311)."""
    fields = dict(
        segment_length=8, turn_on_memory=True, balance_factor_lr=0.01, balance_act_type="orig_sigmoid",
        balance_init_type="zeros", logging=False, logging_interval=100, log_grad=False, log_segment_acts=False,
        balance_factor_weight_decay=0.0,
    )
    fields.update(overrides)
    return fields


def random_weights(mc: dict, seed: int = 0) -> dict[str, torch.Tensor]:
    """Whole (unsharded) parameters under nanotron's names, large enough that memory retrieval matters."""
    g = torch.Generator().manual_seed(seed)
    heads, kv = mc["num_attention_heads"], mc["num_key_value_heads"]
    hidden, inter, d = mc["hidden_size"], mc["intermediate_size"], mc["hidden_size"] // heads

    def normal(*shape, std=1.0):
        return torch.randn(*shape, generator=g) * std

    w = {EMBEDDING: normal(mc["vocab_size"], hidden)}
    for i in range(mc["num_hidden_layers"]):
        p = f"model.decoder.{i}.pp_block."
        w[p + "input_layernorm.weight"] = 1 + normal(hidden, std=0.1)
        w[p + "attn.qkv_proj.weight"] = normal((heads + 2 * kv) * d, hidden, std=hidden**-0.5)
        w[p + "attn.o_proj.weight"] = normal(hidden, heads * d, std=(heads * d) ** -0.5)
        w[p + "attn.balance_factors"] = normal(heads, std=1.5)
        w[p + "post_attention_layernorm.weight"] = 1 + normal(hidden, std=0.1)
        w[p + "mlp.gate_up_proj.weight"] = normal(2 * inter, hidden, std=hidden**-0.5)
        w[p + "mlp.down_proj.weight"] = normal(hidden, inter, std=inter**-0.5)
    w["model.final_layer_norm.pp_block.weight"] = 1 + normal(hidden, std=0.1)
    if not mc["tie_word_embeddings"]:
        w["model.lm_head.pp_block.weight"] = normal(mc["vocab_size"], hidden, std=hidden**-0.5)
    return w


def _split(name: str, mc: dict) -> tuple[int, tuple[int, ...] | None] | None:
    """(split_dim, contiguous_chunks) of a parameter, None when it is replicated across tp."""
    d = mc["hidden_size"] // mc["num_attention_heads"]
    if name.endswith("layernorm.weight") or name.startswith("model.final_layer_norm"):
        return None
    if name.endswith("qkv_proj.weight"):
        q, kv = mc["num_attention_heads"] * d, mc["num_key_value_heads"] * d
        return 0, (q, kv, kv)
    if name.endswith("gate_up_proj.weight"):
        return 0, (mc["intermediate_size"], mc["intermediate_size"])
    if name.endswith(("o_proj.weight", "down_proj.weight")):
        return 1, None
    return 0, None  # embedding, lm_head, balance_factors


def shard_slices(shape: tuple[int, ...], split_dim: int, chunks, tp: int, rank: int):
    """[(local_slices, global_slices)] of rank `rank`: sharded_parameters.create_sharded_parameter_from_config."""
    def along(s):
        return tuple(s if dim == split_dim else slice(None) for dim in range(len(shape)))

    if chunks is None:
        length = shape[split_dim] // tp
        return [(along(slice(None)), along(slice(rank * length, (rank + 1) * length)))]
    pairs = []
    global_offsets = np.cumsum((0,) + tuple(chunks))
    local_offsets = global_offsets // tp
    for chunk, g0, l0, l1 in zip(chunks, global_offsets[:-1], local_offsets[:-1], local_offsets[1:]):
        length = chunk // tp
        pairs.append((along(slice(int(l0), int(l1))), along(slice(rank * length + int(g0), (rank + 1) * length + int(g0)))))
    return pairs


def _slice_text(slices) -> str:
    return "|".join(",".join("None" if x is None else str(x) for x in (s.start, s.stop, s.step)) for s in slices)


def write_checkpoint(
    root: Path, weights: dict[str, torch.Tensor], mc: dict, infini: dict, tp: int = 1,
    tokenizer: str | None = None, init_method: dict | None = None, dtype: torch.dtype = torch.float32,
) -> list[dict[str, torch.Tensor]]:
    """Write `weights` at `root` as a tp-way nanotron checkpoint; returns each rank's local tensors."""
    root = Path(root)
    ranks: list[dict[str, torch.Tensor]] = [{} for _ in range(tp)]
    for name, full in weights.items():
        full = full.to(dtype)
        parts = name.split(".")
        folder = root.joinpath("model", *parts[:-1])
        folder.mkdir(parents=True, exist_ok=True)
        split = _split(name, mc)
        if split is None:
            save_file({"data": full.contiguous()}, str(folder / f"model_{parts[-1]}.safetensors"))
            for r in ranks:
                r[name] = full
            continue
        split_dim, chunks = split
        for rank in range(tp):
            pairs = shard_slices(tuple(full.shape), split_dim, chunks, tp, rank)
            local_shape = list(full.shape)
            local_shape[split_dim] //= tp
            local = torch.empty(local_shape, dtype=dtype)
            for local_slices, global_slices in pairs:
                local[local_slices] = full[global_slices]
            metadata = {
                "version": "1.2",
                "local_global_slices_pairs": ";".join(f"{_slice_text(l)}#{_slice_text(g)}" for l, g in pairs),
                "unsharded_shape": str(tuple(full.shape)),
            }
            file = folder / f"model_{parts[-1]}_pp-rank-0-of-1_tp-rank-{rank}-of-{tp}.safetensors"
            save_file({"data": local.contiguous()}, str(file), metadata=metadata)
            ranks[rank][name] = local
    config = {
        "general": {"project": "tiny", "run": "tiny_infini", "seed": 42, "step": None, "consumed_train_samples": None,
                    "benchmark_csv_path": None, "ignore_sanity_checks": True},
        "parallelism": {"dp": 1, "tp": tp, "pp": 1, "pp_engine": "1f1b", "tp_mode": "ALL_REDUCE",
                        "tp_linear_async_communication": False, "expert_parallel_size": 1},
        "model": {"ddp_bucket_cap_mb": 25, "dtype": "bfloat16", "init_method": init_method or {"std": 0.02},
                  "make_vocab_size_divisible_by": 1, "model_config": mc},
        "tokenizer": {"tokenizer_name_or_path": tokenizer, "tokenizer_revision": None, "tokenizer_max_length": None},
        "infini_attention": infini,
        "checkpoints": {"checkpoint_interval": 100, "checkpoints_path": "checkpoints", "resume_checkpoint_path": None,
                        "save_initial_state": False, "checkpoints_path_is_shared_file_system": False},
        "logging": {"iteration_step_info_interval": 1, "log_level": "info", "log_level_replica": "info"},
    }
    (root / "config.yaml").write_text(yaml.dump(config))
    (root / "model_config.json").write_text(json.dumps(mc))
    (root / "checkpoint_metadata.json").write_text(json.dumps({"version": "1.2", "tp": tp, "dp": 1, "metas": {}}))
    return ranks
