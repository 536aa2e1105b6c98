"""lm-eval's own RULER tasks through `--model infini` and the project's wrapper, offline, on a tiny random Infini
model: variable tracking, frequent words and lm-eval's noise-haystack NIAH port beside this project's exact-length
NIAH in one run (one --metadata for both), then the report's per-length table reads all of them.

lm-eval's cwe port divides by zero at 1K tokens with a small vocabulary (no common words in short contexts), its
essay NIAH variants and QA tasks read the hub: the wrapper says so for `--tasks ruler` offline (tested here)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from test_adapter_support import build_infini_checkpoint

pytest.importorskip("wonderwords")
pytest.importorskip("nltk")


@pytest.fixture(scope="module")
def prose_tokenizer():
    """A byte-level BPE of 2,048 tokens on standard-library prose: lm-eval's vt port loops forever when its
    500-token few-shot example cannot hold five filler lines (the 320-token test tokenizer's case)."""
    from conftest import TOKENIZER_CORPUS
    from infini_bench.data.corpus import stdlib_prose
    from infini_bench.tokenizer import train_bpe_tokenizer

    text = stdlib_prose()[:3_000_000]
    return train_bpe_tokenizer([text[i : i + 2000] for i in range(0, len(text), 2000)] + TOKENIZER_CORPUS * 20,
                               vocab_size=2048)


def _env(tmp: Path) -> dict[str, str]:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
            "CUDA_VISIBLE_DEVICES": "", "INFINI_BENCH_CACHE": str(tmp / "cache")}


def test_lm_eval_ruler_tasks_run_with_model_infini_and_reach_the_report(tmp_path, prose_tokenizer):
    ckpt = build_infini_checkpoint(tmp_path / "ckpt", prose_tokenizer)
    out = tmp_path / "out"
    argv = [sys.executable, "-m", "infini_bench.harness", "--model", "infini", "--model_args", f"pretrained={ckpt}",
            "--tasks", "ruler_vt,ruler_fwe,niah_single_1,niah_single_1_1k", "--device", "cpu",
            "--metadata", json.dumps({"max_seq_lengths": [1024], "depths": [50], "samples": 1}),
            "--limit", "1", "--output_path", str(out), "--log_samples"]
    proc = subprocess.run(argv, env=_env(tmp_path), capture_output=True, text=True, timeout=900, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "niah_single_1 is lm-eval's RULER port" in proc.stderr
    results = json.loads(next(out.rglob("results_*.json")).read_text())["results"]
    for task in ("ruler_vt", "ruler_fwe", "niah_single_1"):
        assert 0.0 <= results[task]["1024,none"] <= 100.0  # lm-eval's per-length metric, named by the length
    assert 0.0 <= results["niah_single_1_1k"]["acc,none"] <= 1.0

    from infini_bench.reports import build_report

    summary = build_report([str(out)], tmp_path / "report", html=True)
    rows = {(r["task"], r["length"], r["source"]): r for r in summary["headline_per_length"]}
    for task in ("ruler_vt", "ruler_fwe", "niah_single_1"):
        assert rows[(task, 1024, "lm-eval ruler")]["n"] == 1
    ours = rows[("niah_single_1", 1024, "infini-bench")]
    assert ours["n"] == 1 and ours["protocol"] == "grid" and ours["ci_low"] is not None
    [protocol] = summary["protocol"]
    assert protocol["task"] == "niah_single_1_1k" and not protocol["follows_ruler"]
    assert "Per task and length" in (tmp_path / "report" / "report.html").read_text()


def test_ruler_group_offline_is_one_clear_sentence(tmp_path):
    argv = [sys.executable, "-m", "infini_bench.harness", "--model", "hf", "--model_args", "pretrained=x",
            "--tasks", "ruler"]
    proc = subprocess.run(argv, env=_env(tmp_path), capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode != 0
    assert "--tasks ruler (lm-eval's RULER group) needs the hub" in proc.stderr
    assert "ruler_vt,ruler_cwe,ruler_fwe" in proc.stderr
