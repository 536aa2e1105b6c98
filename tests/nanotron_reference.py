"""A float64 re-implementation of nanotron's Infini-attention Llama forward, transcribed from its code, for checking
that a converted checkpoint computes what nanotron computed.

Source: huggingface/nanotron, branch xrsrke/infini_attention_this_actually_works, commit 0d99cfb (the same forward
as the RRaAy-H/nanotron-infini fork). Line numbers are those of that commit's files:
- src/nanotron/models/llama.py: LlamaModel.forward_with_hidden_states 1204-1259, LlamaDecoderLayer.forward 1018-1078,
  CausalSelfAttention.forward 530-611 (segments, balance mixing), _retrieve_from_memory 613-655, _update_memory
  657-698, forward_with_hidden_states 700-986 (fused qkv split 712-745, pre-RoPE copies 747-770, training-path
  RoPE 938-948 with flash-attn's RotaryEmbedding(interleaved=rope_interleaved, base=rope_theta) built at 446-448,
  CoreAttention's causal flash attention 287-325, scale 1/sqrt(d) or 1/d under µP at 308-310), MLP 229-271 with
  GLUActivation 219-226, balance_act_type 495-512.
- src/nanotron/parallel/tensor_parallel/nn.py: TensorParallelEmbedding.forward 274-296 (vocabulary-parallel, the
  out-of-range ids masked and the ranks' rows summed), column_linear 86-94 (each rank its output rows), row_linear
  158-166 (each rank a partial sum over its input columns, all-reduced).
- src/nanotron/nn/layer_norm.py: TritonRMSNorm (flash-attn's layer_norm_fn with is_rms_norm=True: x·rsqrt(mean x² + eps)·w).
- flash_attn/layers/rotary.py (the kernel nanotron calls): apply_rotary_emb_torch / rotate_half, GPT-NeoX halves or,
  interleaved, GPT-J pairs (x[2i], x[2i+1]) rotated by frequency i; inv_freq = 1/base^(arange(0, d, 2)/d).

It runs tensor parallelism as nanotron's ranks do: `ranks` is one dict per tp rank of nanotron parameter names to
that rank's local tensors (what its shard files hold; replicated norms in every dict), and every all-reduce is a sum
over ranks. It shares no code with `infini_bench.modeling`.
"""
from __future__ import annotations

import math

import torch


def _act(kind: str):
    """llama.py 495-512."""
    return {
        "orig_sigmoid": torch.sigmoid,
        "orig_tanh": torch.tanh,
        "hard_sigmoid": lambda x: torch.clamp(x * 0.2 + 0.5, min=0.0, max=1.0),
        "tanh_abs": lambda x: torch.tanh(x).abs(),
    }[kind]


def _rms_norm(x, weight, eps):
    """TritonRMSNorm (layer_norm.py) via layer_norm_fn(is_rms_norm=True)."""
    return x * torch.rsqrt((x * x).mean(-1, keepdim=True) + eps) * weight


def _rotary(x, theta, interleaved):
    """flash-attn RotaryEmbedding on x [B, n, heads, d], positions 0 .. n-1 (a fresh call per segment: 946)."""
    n, d = x.shape[1], x.shape[-1]
    inv_freq = 1.0 / (theta ** (torch.arange(0, d, 2, dtype=torch.float64) / d))
    freqs = torch.outer(torch.arange(n, dtype=torch.float64), inv_freq)  # [n, d/2]
    if interleaved:  # '... d -> ... 1 (d 2)'; rotate_half pairs (x[2i], x[2i+1])
        cos, sin = (f.repeat_interleave(2, dim=-1)[None, :, None] for f in (freqs.cos(), freqs.sin()))
        x1, x2 = x[..., ::2], x[..., 1::2]
        rotated = torch.stack((-x2, x1), dim=-1).flatten(-2)
    else:  # '... d -> ... 1 (2 d)'; rotate_half halves
        cos, sin = (torch.cat([f, f], dim=-1)[None, :, None] for f in (freqs.cos(), freqs.sin()))
        x1, x2 = x[..., : d // 2], x[..., d // 2 :]
        rotated = torch.cat((-x2, x1), dim=-1)
    return x * cos + rotated * sin


def _causal_attention(q, k, v, scale):
    """flash_attn_varlen_func(causal=True) over one segment: q [B, n, Hq, d], k, v [B, n, Hkv, d] (GQA: query head h
    reads kv head h // (Hq/Hkv)); returns [B, n, Hq, d]."""
    group = q.shape[2] // k.shape[2]
    k, v = k.repeat_interleave(group, dim=2), v.repeat_interleave(group, dim=2)
    scores = torch.einsum("bqhd,bkhd->bhqk", q, k) * scale
    n = q.shape[1]
    scores = scores.masked_fill(torch.triu(torch.ones(n, n, dtype=torch.bool), 1), float("-inf"))
    return torch.einsum("bhqk,bkhd->bqhd", torch.softmax(scores, dim=-1), v)


def _retrieve(q, memory, normalization, n_repeats):
    """_retrieve_from_memory, 613-655: q [B, Hq, n, d] without RoPE; None memory reads zeros."""
    if memory is None:
        return torch.zeros_like(q)
    memory = memory.repeat_interleave(n_repeats, dim=1)  # "n_kv_heads ... -> (n_kv_heads n) ..."
    normalization = normalization.repeat_interleave(n_repeats, dim=1)
    sigma_q = torch.nn.functional.elu(q) + 1
    numerator = torch.einsum("bhsk,bhkv->bhsv", sigma_q, memory)
    denominator = torch.einsum("bhsd,bhd->bhs", sigma_q, normalization)[..., None]
    return numerator / denominator


def _update(memory, normalization, k, v):
    """_update_memory, 657-698: k, v [B, Hkv, n, d] without RoPE."""
    sigma_k = torch.nn.functional.elu(k) + 1
    if memory is None:
        new_v = v
    else:
        numerator = torch.einsum("bhsk,bhkv->bhsv", sigma_k, memory)
        denominator = torch.einsum("bhsk,bhk->bhs", sigma_k, normalization)[..., None]
        new_v = v - numerator / denominator
    new_memory = sigma_k.transpose(-2, -1) @ new_v
    new_normalization = sigma_k.sum(dim=2)
    if memory is not None:
        new_memory, new_normalization = new_memory + memory, new_normalization + normalization
    return new_memory, new_normalization


def _attention_rank(w, prefix, hidden, mc, infini, tp, is_using_mup):
    """CausalSelfAttention.forward (530-611) on one tp rank: its local heads, and o_proj's partial sum."""
    heads, kv_heads = mc["num_attention_heads"], mc.get("num_key_value_heads") or mc["num_attention_heads"]
    d = mc["hidden_size"] // heads
    local_q, local_kv, n_repeats = heads // tp, kv_heads // tp, heads // kv_heads
    seg_len, seq_len = infini["segment_length"], hidden.shape[1]
    if seq_len > seg_len:  # 537-551
        n_segments = math.ceil(seq_len / seg_len)
        lengths = [seg_len] * (n_segments - 1) + [seq_len - (n_segments - 1) * seg_len]
        segments = torch.split(hidden, lengths, dim=1)
    else:
        segments = [hidden]
    global_weights = _act(infini["balance_act_type"])(w[prefix + "attn.balance_factors"])[None, :, None, None]  # 560-561
    local_weights = 1 - global_weights
    scale = 1 / d if is_using_mup else 1 / math.sqrt(d)  # CoreAttention 308-310 (None -> flash's 1/sqrt(d))
    memory = normalization = None
    outputs = []
    for segment in segments:
        b, n, _ = segment.shape
        qkv = segment @ w[prefix + "attn.qkv_proj.weight"].T  # 712
        if heads != kv_heads:  # 720-739 (GQA): split [q | k | v]
            query, key, value = torch.split(qkv, [local_q * d, local_kv * d, local_kv * d], dim=-1)
            query, key, value = query.view(b, n, local_q, d), key.view(b, n, local_kv, d), value.view(b, n, local_kv, d)
        else:  # 740-745: view(..., 3, n_local_q_heads, d_qk)
            query, key, value = qkv.view(b, n, 3, local_q, d).unbind(dim=2)
        q_nope, k_nope, v_nope = (x.transpose(1, 2) for x in (query, key, value))  # 747-770
        theta, interleaved = mc.get("rope_theta", 10000.0), mc.get("rope_interleaved", True)
        local = _causal_attention(_rotary(query, theta, interleaved), _rotary(key, theta, interleaved), value, scale)
        local = local.transpose(1, 2)  # "batch_size n_heads seq_len d_head" (573-579)
        if infini.get("turn_on_memory", True):  # 581-588
            out = global_weights * _retrieve(q_nope, memory, normalization, n_repeats) + local_weights * local
        else:
            out = local
        out = out.transpose(1, 2).reshape(b, n, local_q * d)  # 590-596
        outputs.append(out @ w[prefix + "attn.o_proj.weight"].T)  # 598: row-parallel, this rank's partial sum
        if infini.get("turn_on_memory", True):  # 600-601
            memory, normalization = _update(memory, normalization, k_nope, v_nope)
    return torch.cat(outputs, dim=1)  # 604


def _mlp_rank(w, prefix, hidden):
    """MLP.forward (268-271) on one tp rank: gate_up column-parallel, GLU split in halves, down_proj partial sum."""
    merged = hidden @ w[prefix + "mlp.gate_up_proj.weight"].T
    gate, up = torch.split(merged, merged.shape[-1] // 2, dim=-1)  # GLUActivation 224-226
    return (torch.nn.functional.silu(gate) * up) @ w[prefix + "mlp.down_proj.weight"].T


def nanotron_logits(ranks, model_config: dict, infini: dict, input_ids: torch.Tensor, is_using_mup: bool = False):
    """Logits [B, T, V] in float64 of nanotron's LlamaForTraining on `input_ids` [B, T], from the per-rank tensors."""
    ranks = [{k: v.double() for k, v in r.items()} for r in ranks]
    tp, mc, eps = len(ranks), model_config, model_config.get("rms_norm_eps", 1e-6)
    emb_key = "model.token_position_embeddings.pp_block.token_embedding.weight"
    hidden = 0
    for rank, w in enumerate(ranks):  # TensorParallelEmbedding.forward 274-296
        block = w[emb_key].shape[0]
        mask = (input_ids < rank * block) | (input_ids >= (rank + 1) * block)
        local_ids = (input_ids - rank * block).masked_fill(mask, 0)
        hidden = hidden + w[emb_key][local_ids] * (~mask)[..., None]
    for i in range(mc["num_hidden_layers"]):  # LlamaDecoderLayer.forward 1018-1078
        prefix = f"model.decoder.{i}.pp_block."
        normed = _rms_norm(hidden, ranks[0][prefix + "input_layernorm.weight"], eps)
        hidden = hidden + sum(_attention_rank(w, prefix, normed, mc, infini, tp, is_using_mup) for w in ranks)
        normed = _rms_norm(hidden, ranks[0][prefix + "post_attention_layernorm.weight"], eps)
        hidden = hidden + sum(_mlp_rank(w, prefix, normed) for w in ranks)
    hidden = _rms_norm(hidden, ranks[0]["model.final_layer_norm.pp_block.weight"], eps)  # 1240
    head_key = emb_key if mc.get("tie_word_embeddings") else "model.lm_head.pp_block.weight"
    return torch.cat([hidden @ w[head_key].T for w in ranks], dim=-1)  # lm_head column-parallel (1248): sharded logits
