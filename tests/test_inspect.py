"""`infini-bench inspect` and the gate maths it shares with the report (reports/gates.py).

The gate counts are checked on checkpoints whose β were set by hand to known g for every activation; the memory
share against the float64 re-computation of the model (`model_reference.reference_logits` with its mix terms);
the numpy gates against the model's own `gate_values`; and the opt-in hook against the model's outputs."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from infini_bench import InfiniConfig, InfiniForCausalLM
from infini_bench.cli import main
from infini_bench.data import EVAL_SEED_BASE, eval_doc_seed
from infini_bench.inspection.memory_share import observe_mix, share_from_norms
from infini_bench.modeling.attention import gate_values
from infini_bench.modeling.configuration_infini import GATE_ACTIVATIONS
from infini_bench.reports.gates import GATE_RANGES, gate_values as numpy_gate_values, head_kinds, read_gates
from model_reference import reference_logits

SEGMENT = 16
# hand-set gates [layer][head]: 3 memory-only (> 0.9), 2 local-only (|g| < 0.1), 3 mixers
TARGETS = [[0.95, 0.05, 0.5, 0.92], [0.3, 0.08, 0.99, 0.6]]
# orig_tanh reaches below 0: −0.05 is local-only, −0.5 a mixer that subtracts its memory read
TARGETS_SIGNED = [[0.95, -0.05, 0.5, 0.92], [-0.5, 0.08, 0.99, 0.6]]


def _beta_for(g: float, activation: str) -> float:
    """The β that gives `g` under `activation` (the inverse of each activation on its open range)."""
    return {"sigmoid": lambda: math.log(g / (1 - g)), "hard_sigmoid": lambda: (g - 0.5) / 0.2,
            "tanh": lambda: math.atanh(2 * g - 1), "orig_tanh": lambda: math.atanh(g),
            "tanh_abs": lambda: math.atanh(g)}[activation]()


def _checkpoint(path: Path, tokenizer, seed: int = 0, **fields) -> Path:
    torch.manual_seed(seed)
    config = InfiniConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                          num_attention_heads=4, num_key_value_heads=2, segment_length=SEGMENT, gate_init="randn",
                          bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                          pad_token_id=tokenizer.pad_token_id, **fields)
    model = InfiniForCausalLM(config)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def _with_gates(path: Path, tokenizer, activation: str, targets: list[list[float]]) -> Path:
    _checkpoint(path, tokenizer, gate_activation=activation)
    model = InfiniForCausalLM.from_pretrained(path)
    with torch.no_grad():
        for layer, row in zip(model.model.layers, targets):
            layer.self_attn.gate.copy_(torch.tensor([_beta_for(g, activation) for g in row]))
    model.save_pretrained(path)
    return path


@pytest.mark.parametrize("activation", GATE_ACTIVATIONS)
def test_numpy_gates_are_the_models_for_every_activation(activation):
    beta = torch.linspace(-8, 8, 161, dtype=torch.float64)
    expected = gate_values(beta, activation).numpy()
    got = numpy_gate_values(beta.numpy(), activation)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-12)
    low, high = GATE_RANGES[activation]
    assert low <= got.min() and got.max() <= high


def test_every_model_activation_has_a_range():
    assert set(GATE_RANGES) == set(GATE_ACTIVATIONS)


@pytest.mark.parametrize("activation", GATE_ACTIVATIONS)
def test_inspect_counts_hand_set_gates(activation, tmp_path, tiny_tokenizer, capsys):
    targets = TARGETS_SIGNED if activation == "orig_tanh" else TARGETS
    folder = _with_gates(tmp_path / "ckpt", tiny_tokenizer, activation, targets)
    out = tmp_path / "inspect.json"
    assert main(["inspect", str(folder), "--gates-only", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    np.testing.assert_allclose(report["gates"]["g"], targets, atol=1e-6)
    negative = 1 if activation == "orig_tanh" else 0
    assert report["gates"]["kinds"] == {"memory_only": 3, "local_only": 2, "mixers": 3, "negative": negative,
                                        "total": 8}
    assert report["gates"]["per_layer_kinds"][0] == {"memory_only": 2, "local_only": 1, "mixers": 1,
                                                     "negative": 0, "total": 4}
    printed = capsys.readouterr().out
    assert "8 heads: 3 memory-only (g > 0.9), 2 local-only (|g| < 0.1), 3 mixers" in printed
    assert f"gate g = {activation}(β)" in printed
    # the report reads the same gates from the files alone
    table = read_gates(folder)
    assert table.activation == activation
    np.testing.assert_allclose(table.g, targets, atol=1e-6)
    assert table.kinds == head_kinds(np.array(report["gates"]["g"]))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_report_reads_gates_in_every_weight_dtype_and_from_shards(dtype, tmp_path, tiny_tokenizer):
    folder = _checkpoint(tmp_path / "one", tiny_tokenizer)
    model = InfiniForCausalLM.from_pretrained(folder).to(dtype)
    expected = np.stack([layer.self_attn.gate.detach().float().numpy() for layer in model.model.layers])
    model.save_pretrained(tmp_path / "one")
    np.testing.assert_array_equal(read_gates(tmp_path / "one").beta, expected)
    model.save_pretrained(tmp_path / "sharded", max_shard_size="40KB")
    assert (tmp_path / "sharded" / "model.safetensors.index.json").is_file()
    np.testing.assert_array_equal(read_gates(tmp_path / "sharded").beta, expected)


def test_mix_observer_sees_both_terms_and_changes_nothing(tiny_tokenizer, tmp_path):
    model = InfiniForCausalLM.from_pretrained(_checkpoint(tmp_path / "ckpt", tiny_tokenizer)).eval()
    ids = torch.randint(3, len(tiny_tokenizer), (1, 3 * SEGMENT + 5))
    plain = model(ids).logits
    with observe_mix(model) as calls:
        observed = model(ids).logits
    assert torch.equal(plain, observed)
    assert all(layer.self_attn.mix_observer is None for layer in model.model.layers)
    # the parallel form for the 3 whole segments, then the partial one piece by piece: all 53 tokens, in order
    assert [sum(m.shape[2] for m, _ in layer) for layer in calls] == [ids.shape[1]] * 2


@pytest.mark.parametrize("memory", [{"memory_update": "linear"}, {"memory_update": "delta_l2", "memory_conv_size": 4}])
def test_memory_share_matches_a_direct_recomputation(memory, tmp_path, tiny_tokenizer):
    folder = _checkpoint(tmp_path / "ckpt", tiny_tokenizer, **memory)
    text = tmp_path / "doc.txt"
    text.write_text("The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again. " * 12)
    out = tmp_path / "inspect.json"
    assert main(["inspect", str(folder), "--text", str(text), "--length", "70", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    share = report["memory_share"]

    model = InfiniForCausalLM.from_pretrained(folder).eval()
    ids = torch.tensor([tiny_tokenizer(text.read_text())["input_ids"][:70]])
    terms: list = []
    with torch.no_grad():
        reference_logits(model, ids, terms)
    per_token = np.stack([share_from_norms(m[0].norm(dim=-1).numpy(), lo[0].norm(dim=-1).numpy()).T
                          for m, lo in terms])  # [layers, heads, tokens]
    segments = [per_token[:, :, s : s + SEGMENT].mean(axis=(1, 2)) for s in range(0, 70, SEGMENT)]
    assert share["segments"] == 5 and report["document"]["tokens"] == 70
    np.testing.assert_allclose(share["per_layer_segment"], np.stack(segments, axis=1), atol=1e-5)
    np.testing.assert_allclose(share["per_layer_head"], per_token[:, :, SEGMENT:].mean(axis=2), atol=1e-5)
    np.testing.assert_allclose(share["per_layer"], per_token[:, :, SEGMENT:].mean(axis=(1, 2)), atol=1e-5)
    assert all(row[0] == 0.0 for row in share["per_layer_segment"])  # segment 0 reads an empty memory
    assert all(0.0 < v < 1.0 for v in share["per_layer"])


def test_inspect_runs_the_tasks_own_passkey_document(tmp_path, tiny_tokenizer, capsys):
    folder = _checkpoint(tmp_path / "ckpt", tiny_tokenizer)
    out = tmp_path / "inspect.json"
    assert main(["inspect", str(folder), "--task", "passkey_256", "--depth", "25", "--json", str(out)]) == 0
    doc = json.loads(out.read_text())["document"]
    assert doc["task"] == "passkey" and doc["context_length"] == 256 and doc["depth_percent"] == 25.0
    assert doc["seed"] == eval_doc_seed(EVAL_SEED_BASE, "passkey", 256, 25.0, 0)  # the task's sample 0 there
    assert doc["tokens"] == doc["prompt_tokens"]
    assert doc["needle_segment"] == doc["needle_position"] // SEGMENT
    printed = capsys.readouterr().out
    assert f"needle in segment {doc['needle_segment']}" in printed and "memory share on passkey at 256 tokens" in printed


def test_memory_off_checkpoint_says_so(tmp_path, tiny_tokenizer, capsys):
    folder = _checkpoint(tmp_path / "ckpt", tiny_tokenizer, use_memory=False)
    out = tmp_path / "inspect.json"
    assert main(["inspect", str(folder), "--json", str(out)]) == 0
    assert json.loads(out.read_text())["memory_share"] is None
    assert "memory is off in this model (use_memory=False)" in capsys.readouterr().out


def _error(argv: list[str], capsys) -> str:
    capsys.readouterr()  # what building the checkpoints wrote
    assert main(argv) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("infini-bench inspect: error: ") and err.count("\n") == 0, err  # one sentence
    return err


def test_bad_input_is_one_sentence(tmp_path, tiny_tokenizer, tiny_llama_dir, capsys):
    assert "does not exist" in _error(["inspect", str(tmp_path / "missing")], capsys)
    run = tmp_path / "run"
    run.mkdir()
    (run / "log.jsonl").write_text("")
    assert "training run folder with no checkpoint yet" in _error(["inspect", str(run)], capsys)
    err = _error(["inspect", str(tiny_llama_dir)], capsys)
    assert "is a Llama model, which has no Infini gates" in err and "infini-bench convert" in err
    folder = _checkpoint(tmp_path / "ckpt", tiny_tokenizer)
    err = _error(["inspect", str(folder), "--task", "summarise"], capsys)
    assert "task 'summarise' is unknown" in err and "passkey" in err
    assert "--text" in _error(["inspect", str(folder), "--text", str(tmp_path / "none.txt")], capsys)


def test_a_training_run_folder_means_its_latest_checkpoint(tmp_path, tiny_tokenizer, capsys):
    run = tmp_path / "run"
    _checkpoint(run / "checkpoint-000007", tiny_tokenizer)
    (run / "latest").symlink_to("checkpoint-000007")
    capsys.readouterr()
    assert main(["inspect", str(run), "--gates-only"]) == 0
    printed = capsys.readouterr().out
    assert f"checkpoint  {run / 'latest'} (→ checkpoint-000007)" in printed and "memory share not measured" in printed
