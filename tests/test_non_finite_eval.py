"""Non-finite numbers never become a score (issue 25), through lm-eval's real CLI (`infini-bench eval`, in this
process, as tests/test_reliability_eval.py runs it):

- a checkpoint with a NaN weight is refused by tensor and file before anything is evaluated;
- a model whose logits turn NaN in its second segment (finite weights: the memory's convolution scaled by 1e25
  overflows the memory read) stops `generate_until` (passkey) and `loglikelihood_rolling` (ppl) with one sentence
  naming the task, the document and the segment, and writes no results;
- with `non_finite=invalid` the same run finishes, its results and samples say which documents are invalid, and
  the report says so too.
"""
from __future__ import annotations

import html
import json
import logging
import math
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from infini_bench import InfiniConfig, InfiniForCausalLM
from infini_bench import harness
from infini_bench.invalid import INVALID_ANSWER
from test_adapter_support import infini_dir  # noqa: F401
from test_reliability_eval import CurrentStderr, documents_cache  # noqa: F401  (documents_cache: an autouse fixture)

SEGMENT = 16
PASSKEY = ["--tasks", "passkey_256", "--metadata", "samples=1", "depths=[50]"]
PPL = ["--tasks", "ppl_stdlib", "--metadata", "doc_tokens=100", "max_docs=1", "min_doc_tokens=0"]


def evaluate(ckpt: Path, out: Path, *task_args: str, model_args: str = "") -> int:
    """`infini-bench eval` on one checkpoint, in this process; lm-eval's handler writes to the current stderr."""
    for handler in logging.getLogger("lm_eval").handlers:
        if type(handler) is logging.StreamHandler:
            handler.stream = CurrentStderr()
    return harness.main(["--model", "infini", "--model_args", f"pretrained={ckpt}{model_args}", "--device", "cpu",
                         "--output_path", str(out), "--log_samples", *task_args])


def error_line(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    return err.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def overflowing_dir(tmp_path_factory, tiny_tokenizer) -> Path:
    """Finite weights whose logits are NaN from the second segment on: the linear memory's convolution on its
    queries and keys scaled by 1e25, so the first memory read (segment 2) overflows float32."""
    torch.manual_seed(0)
    config = InfiniConfig(
        vocab_size=len(tiny_tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=1,
        num_attention_heads=4, segment_length=SEGMENT, memory_update="linear", memory_conv_size=2, gate_init="randn",
        bos_token_id=tiny_tokenizer.bos_token_id, eos_token_id=tiny_tokenizer.eos_token_id,
        pad_token_id=tiny_tokenizer.pad_token_id,
    )
    model = InfiniForCausalLM(config)
    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.memory_conv.weight.mul_(1e25)
    path = tmp_path_factory.mktemp("overflowing")
    model.save_pretrained(path)
    tiny_tokenizer.save_pretrained(path)
    return path


def test_a_nan_weight_is_refused_by_tensor_and_file(tmp_path, infini_dir, capsys):
    broken = tmp_path / "broken"
    shutil.copytree(infini_dir, broken)
    weights = broken / "model.safetensors"
    tensors = load_file(weights)
    name = "model.layers.1.mlp.down_proj.weight"
    tensors[name][3, :5] = float("nan")
    save_file(tensors, weights, metadata={"format": "pt"})
    before = weights.read_bytes()
    assert evaluate(broken, tmp_path / "out", *PASSKEY) == 1
    assert error_line(capsys) == (
        f"error: pretrained='{broken}' cannot be evaluated: tensor {name} in '{weights}' holds 5 NaN value(s) of "
        f"{tensors[name].numel():,}: the checkpoint is broken (a diverged training or a damaged conversion) and "
        "would score 0 % without saying why; evaluate an earlier checkpoint"
    )
    assert weights.read_bytes() == before and not (tmp_path / "out").exists()


@pytest.mark.parametrize(("kind", "task_args", "task"), [
    ("generate_until", PASSKEY, "passkey_256"),
    ("loglikelihood_rolling", PPL, "ppl_stdlib"),
])
def test_nan_logits_stop_the_run_naming_request_and_segment(tmp_path, overflowing_dir, capsys, kind, task_args, task):
    out = tmp_path / "out"
    assert evaluate(overflowing_dir, out, *task_args) == 1
    assert error_line(capsys) == (
        f"error: non-finite logits (NaN or inf) in {kind} for task {task}, document 0: first at input token 16, in "
        "segment 2 (tokens 16-31 of 16 per segment); the model computes NaN or infinite values there, so any score "
        "would be meaningless: evaluate an earlier checkpoint, or pass non_finite=invalid in --model_args to mark "
        "such documents invalid and go on"
    )
    assert not list(out.rglob("results_*.json"))  # no table, no file: nothing that reads as a score


def test_non_finite_invalid_marks_documents_in_results_samples_and_report(tmp_path, overflowing_dir, capsys, caplog):
    from infini_bench.reports.cli import main as report_main

    out = tmp_path / "out"
    args = ["--tasks", "passkey_256,ppl_stdlib", "--metadata", "samples=1", "depths=[25,75]", "doc_tokens=100",
            "max_docs=1", "min_doc_tokens=0"]
    assert evaluate(overflowing_dir, out, *args, model_args=",non_finite=invalid") == 0
    assert "non-finite logits (NaN or inf) in generate_until for task passkey_256, document 1: first at input token " \
           "16, in segment 2 (tokens 16-31 of 16 per segment); marked invalid (non_finite=invalid)" in caplog.text
    capsys.readouterr()
    [results_file] = out.rglob("results_*.json")
    results = json.loads(results_file.read_text())["results"]
    assert results["passkey_256"]["invalid,none"] == 1.0 and math.isnan(results["passkey_256"]["acc,none"])
    assert results["ppl_stdlib"]["invalid,none"] == 1.0 and math.isnan(results["ppl_stdlib"]["token_perplexity,none"])
    [samples] = out.rglob("samples_passkey_256_*.jsonl")
    lines = [json.loads(line) for line in samples.read_text().splitlines()]
    assert [s["filtered_resps"][0] for s in lines] == [INVALID_ANSWER] * 2
    assert all(s["invalid"] == 1.0 and math.isnan(s["acc"]) for s in lines)

    assert report_main([str(out), "-o", str(tmp_path / "report")]) == 0
    printed = capsys.readouterr().out
    note = "passkey_256: 2 of 2 documents invalid (the model's logits were NaN or infinite; non_finite=invalid)"
    assert note in printed
    assert note in html.unescape((tmp_path / "report" / "report.html").read_text())
