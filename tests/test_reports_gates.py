"""The report's "What the gates learnt" section: a gate heatmap for an Infini model's checkpoint (read from its
files, never through torch), none for lm-eval's `hf` model, and a sentence instead for a memory-off run and for a
checkpoint folder that is gone. lm-eval output is written by `write_lm_eval_run` (test_reports_seeds)."""
from __future__ import annotations

import base64
import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from infini_bench import InfiniConfig, InfiniForCausalLM
from infini_bench.reports import build_report
from infini_bench.reports.text import render_text
from test_reports_seeds import write_lm_eval_run

ALL_RIGHT = {1024: {0.0: 4, 50.0: 4, 100.0: 4}}
GATES = [[0.95, 0.05, 0.5], [0.99, 0.3, 0.02]]  # g per layer and head: 2 memory-only, 2 local-only, 2 mixers


def _infini_checkpoint(path: Path) -> Path:
    torch.manual_seed(0)
    model = InfiniForCausalLM(InfiniConfig(vocab_size=64, hidden_size=48, intermediate_size=64, num_hidden_layers=2,
                                           num_attention_heads=3, num_key_value_heads=1, head_dim=16,
                                           segment_length=16))
    with torch.no_grad():
        for layer, row in zip(model.model.layers, GATES):
            layer.self_attn.gate.copy_(torch.tensor([math.log(g / (1 - g)) for g in row]))
    model.to(torch.bfloat16).save_pretrained(path)
    return path


def test_gate_heatmap_for_infini_models_only(tmp_path, tiny_llama_dir):
    ckpt = _infini_checkpoint(tmp_path / "infini_ckpt")
    runs = {
        "infini": ("infini", {"pretrained": str(ckpt)}),
        "memory_off": ("infini", {"pretrained": str(ckpt), "use_memory": "False"}),
        "llama": ("hf", {"pretrained": str(tiny_llama_dir)}),
        "gone": ("infini", {"pretrained": str(tmp_path / "deleted_ckpt")}),
    }
    inputs = []
    for label, (model, args) in runs.items():
        write_lm_eval_run(tmp_path / "lm_eval" / label, model, args, "passkey", ALL_RIGHT)
        inputs.append(f"{label}={tmp_path / 'lm_eval' / label}")
    out = tmp_path / "report"
    summary = build_report(inputs, out)

    entries = {e["model"]: e for e in summary["gates"]}
    assert set(entries) == {"infini", "memory_off", "gone"}  # the hf Llama has no Infini gates
    infini = entries["infini"]
    np.testing.assert_allclose(infini["g"], GATES, atol=5e-3)  # stored in bf16
    assert infini["kinds"] == {"memory_only": 2, "local_only": 2, "mixers": 2, "negative": 0, "total": 6}
    assert infini["activation"] == "sigmoid" and infini["note"] is None
    png = out / infini["figure"]["file"]
    with Image.open(png) as image:
        assert image.size == (infini["figure"]["width"], infini["figure"]["height"])
    assert entries["memory_off"]["figure"] is None and "use_memory=False" in entries["memory_off"]["note"]
    assert entries["gone"]["figure"] is None
    assert "no gate figure" in entries["gone"]["note"] and "does not exist" in entries["gone"]["note"]
    assert entries["gone"]["note"] in summary["notes"]

    html = (out / "report.html").read_text(encoding="utf-8")
    assert html.count('alt="gates of') == 1
    assert base64.b64encode(png.read_bytes()).decode("ascii") in html
    assert "What the gates learnt" in html and "2 memory-only (g &gt; 0.9)" in html
    assert "deleted_ckpt" in html
    text = render_text(summary)
    assert "infini: 6 heads: 2 memory-only (g > 0.9), 2 local-only (|g| < 0.1), 2 mixers" in text
    assert "memory_off: 6 heads" not in text  # its gates are the same checkpoint's and took no part in its scores
