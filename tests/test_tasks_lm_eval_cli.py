"""The real `lm_eval` CLI, offline, on a tiny random Llama: one task of each family, then the project's wrapper.

Each CLI run is made once per module and its results JSON and samples logs are checked by several tests.
"""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from infini_bench.data import is_eval_seed
from infini_bench.tasks import TASKS_DIR

METADATA = {"depths": [0, 50, 100], "samples": 2, "doc_tokens": 1500, "max_docs": 2, "depth_metrics": True}
FAMILY_TASKS = ["passkey_1k", "niah_single_1_1k", "ppl_stdlib"]
SCORED = ["passkey_1k", "niah_single_1_1k"]


def _env(cache: Path) -> dict[str, str]:
    return {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "CUDA_VISIBLE_DEVICES": "",
        "INFINI_BENCH_CACHE": str(cache),
    }


def _run(argv: list[str], cache: Path, out: Path) -> tuple[dict, dict[str, list[dict]], str]:
    proc = subprocess.run(argv, env=_env(cache), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-6000:]
    results_path = next(out.rglob("results_*.json"))
    results = json.loads(results_path.read_text())
    samples = {}
    for path in out.rglob("samples_*.jsonl"):
        task = path.name[len("samples_") :].rsplit("_", 1)[0]
        samples[task] = [json.loads(line) for line in path.read_text().splitlines()]
    return results, samples, proc.stderr


@pytest.fixture(scope="module")
def lm_eval_run(tiny_llama_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("lm_eval_out")
    argv = [
        sys.executable, "-m", "lm_eval",
        "--model", "hf",
        "--model_args", f"pretrained={tiny_llama_dir},dtype=float32",
        "--device", "cpu",
        "--tasks", ",".join(FAMILY_TASKS),
        "--include_path", TASKS_DIR,
        "--metadata", json.dumps(METADATA),
        "--output_path", str(out),
        "--log_samples",
    ]
    return _run(argv, tmp_path_factory.mktemp("cache"), out)


@pytest.fixture(scope="module")
def wrapper_run(tiny_llama_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("wrapper_out")
    argv = [
        sys.executable, "-m", "infini_bench.harness",
        "--model", "hf",
        "--model_args", f"pretrained={tiny_llama_dir},dtype=float32",
        "--device", "cpu",
        "--tasks", "passkey_*", "infinibench_niah_upto_256",
        "--metadata", "depths=[0,100]", "samples=1",
        "--output_path", str(out),
        "--log_samples",
    ]
    return _run(argv, tmp_path_factory.mktemp("cache"), out)


@pytest.mark.parametrize("task", SCORED)
def test_results_json_holds_the_depth_row_of_both_scores(lm_eval_run, task):
    results, samples, _ = lm_eval_run
    metrics = results["results"][task]
    assert isinstance(metrics["acc_stderr,none"], float)
    for score in ("acc", "ruler_match"):
        for depth in (0, 50, 100):
            values = [row[score] for row in samples[task] if row["doc"]["depth_percent"] == depth]
            assert metrics[f"{score}_d{depth:03d},none"] == sum(values) / len(values)
        assert results["higher_is_better"][task][f"{score}_d050"] is True
    assert metrics["sample_len"] == 6
    meta = results["configs"][task]["metadata"]
    assert meta["skipped_docs"] == 0 and meta["model_max_length"] == 4096 and meta["context_length"] == 1024
    assert results["configs"][task]["generation_kwargs"]["until"] == []


@pytest.mark.parametrize("task", SCORED)
def test_every_sample_has_grid_fields_and_an_exact_length(lm_eval_run, tiny_tokenizer, task):
    _, samples, _ = lm_eval_run
    rows = samples[task]
    assert len(rows) == 6
    per_depth: dict[float, int] = {}
    for row in rows:
        doc = row["doc"]
        assert doc["context_length"] == 1024 and isinstance(doc["answer"], str) and is_eval_seed(doc["seed"])
        per_depth[doc["depth_percent"]] = per_depth.get(doc["depth_percent"], 0) + 1
        prompt, gen_kwargs = row["arguments"]["gen_args_0"]["arg_0"], row["arguments"]["gen_args_0"]["arg_1"]
        assert gen_kwargs["max_gen_toks"] == doc["answer_tokens"] and prompt == doc["prompt"]
        assert len(tiny_tokenizer(prompt)["input_ids"]) + doc["answer_tokens"] == 1024
        assert prompt.endswith("? " + doc["gen_prefix"])  # plain prompts: the answer prefix joined by a space
        own = f"d{int(doc['depth_percent']):03d}"
        names = {f"{s}{d}" for s in ("acc", "ruler_match") for d in ("", "_d000", "_d050", "_d100")}
        assert set(row["metrics"]) == names and row[f"acc_{own}"] == row["acc"]
        assert row[f"ruler_match_{own}"] == row["ruler_match"]
        assert all(math.isnan(row[k]) for k in row["metrics"] if "_d" in k and not k.endswith(own))
    assert per_depth == {0: 2, 50: 2, 100: 2}
    if task == "niah_single_1_1k":
        assert rows[0]["doc"]["answer_tokens"] == 32  # 1/32 of a context below RULER's 4K (RULER: 128), no stop


def test_no_builtin_task_is_touched(lm_eval_run, wrapper_run):
    for _, _, stderr in (lm_eval_run, wrapper_run):
        assert "Selected Tasks" in stderr  # lm-eval's log goes to stderr, so the next check has teeth
        assert "overrides existing task" not in stderr  # lm-eval warns when an include-path name shadows a built-in
        assert "Left truncation applied" not in stderr  # no prompt was cut to fit


def _direct_loglikelihoods(model_dir: Path, tokenizer, text: str) -> list[float]:
    """Per-token log-probabilities of `text` computed with transformers, conditioning the first token on BOS the
    way lm-eval's rolling loglikelihood does."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    ids = tokenizer(text)["input_ids"]
    inputs = torch.tensor([[tokenizer.bos_token_id] + ids[:-1]])
    with torch.no_grad():
        logprobs = torch.log_softmax(model(inputs).logits[0].float(), dim=-1)
    return logprobs[torch.arange(len(ids)), torch.tensor(ids)].tolist()


def test_perplexity_equals_the_models_own_loglikelihood(lm_eval_run, tiny_llama_dir, tiny_tokenizer):
    results, samples, _ = lm_eval_run
    rows = samples["ppl_stdlib"]
    assert len(rows) == 2
    total_ll, total_tokens = 0.0, 0
    for row in rows:
        doc = row["doc"]
        assert doc["n_tokens"] == 1500 < 4096  # shorter than the model's window
        token_lls = _direct_loglikelihoods(tiny_llama_dir, tiny_tokenizer, doc["text"])
        assert len(token_lls) == doc["n_tokens"]
        ll, n = row["token_perplexity"]
        assert n == 1500 and ll == pytest.approx(sum(token_lls), rel=1e-4)
        bucket_ll, bucket_n = row["token_perplexity_pos_0_1k"]
        assert bucket_n == 1024 and bucket_ll == pytest.approx(sum(token_lls[:1024]), rel=1e-4)
        tail_ll, tail_n = row["token_perplexity_pos_1k_2k"]
        assert tail_n == 476 and tail_ll == pytest.approx(sum(token_lls[1024:]), rel=1e-3)
        total_ll, total_tokens = total_ll + sum(token_lls), total_tokens + len(token_lls)
    metrics = results["results"]["ppl_stdlib"]
    assert metrics["token_perplexity,none"] == pytest.approx(math.exp(-total_ll / total_tokens), rel=1e-4)
    for name in ("word_perplexity", "byte_perplexity", "bits_per_byte", "token_perplexity_pos_1k_2k"):
        assert metrics[f"{name},none"] > 0
    assert results["configs"]["ppl_stdlib"]["metadata"]["docs_longer_than_max_length"] == 0


def test_wrapper_globs_select_only_this_projects_tasks_that_fit(wrapper_run, tiny_tokenizer):
    results, samples, stderr = wrapper_run
    passkey = {"passkey_256", "passkey_512", "passkey_1k", "passkey_2k", "passkey_4k"}
    niah = {"niah_single_1_256", "niah_single_2_256", "niah_multikey_2_256"}
    assert set(results["results"]) == passkey | niah | {"infinibench_niah_upto_256"}
    assert "passkey_with_librusec" not in json.dumps(results["configs"])
    assert "leaving out 8 task(s) longer than the model's max_length=4096" in stderr
    for row in samples["passkey_4k"]:
        prompt = row["arguments"]["gen_args_0"]["arg_0"]
        assert len(tiny_tokenizer(prompt)["input_ids"]) == 4096 - row["doc"]["answer_tokens"]
    # without depth_metrics=true: lm-eval's table holds the two scores (and their stderr) only
    assert {k.split(",")[0] for k in results["results"]["passkey_4k"]} == {
        "alias", "name", "sample_len", "acc", "acc_stderr", "ruler_match", "ruler_match_stderr"
    }
    assert {row["doc"]["depth_percent"] for row in samples["passkey_4k"]} == {0, 100}  # the depths: in the samples


def test_suite_reports_an_aggregate_of_both_scores(wrapper_run):
    results, _, _ = wrapper_run
    suite = results["groups"]["infinibench_niah_upto_256"]
    assert isinstance(suite["acc,none"], float) and isinstance(suite["ruler_match,none"], float)
    assert suite["sample_len"] == 6
    assert results["group_subtasks"]["infinibench_niah_upto_256"] == [
        "niah_single_1_256", "niah_single_2_256", "niah_multikey_2_256"
    ]
