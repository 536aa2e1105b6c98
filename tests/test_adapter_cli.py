"""The real lm-eval CLI (through the project's wrapper) runs `--model infini` offline: one passkey, one NIAH and
one perplexity task with --log_samples, again from --use_cache, data-parallel under torchrun, and bad model args
end in one clear message."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from sqlitedict import SqliteDict

from test_adapter_support import infini_dir  # noqa: F401

TASKS = "passkey_1k,niah_1k,ppl_stdlib"
# depth_metrics: the data-parallel test checks that lm-eval's gather finds every per-depth name on every rank
METADATA = ["depths=[25,75]", "samples=1", "doc_tokens=300", "max_docs=2", "min_doc_tokens=0", "depth_metrics=true"]


def _env(tmp: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TOKENIZERS_PARALLELISM="false", CUDA_VISIBLE_DEVICES="",
        INFINI_BENCH_CACHE=str(tmp / "docs_cache"),
    )
    return env


def _harness(tmp: Path, *args: str, launcher: list[str] | None = None) -> subprocess.CompletedProcess:
    command = (launcher or [sys.executable]) + ["-m", "infini_bench.harness", *args]
    return subprocess.run(command, capture_output=True, text=True, env=_env(tmp), cwd=tmp, timeout=600)


def _run_args(ckpt: Path, out: Path, tasks: str = TASKS) -> list[str]:
    return [
        "--model", "infini", "--model_args", f"pretrained={ckpt},segment_length=128", "--tasks", tasks,
        "--metadata", *METADATA, "--output_path", str(out), "--log_samples",
    ]


def _outputs(out: Path) -> tuple[dict, dict[str, list[dict]]]:
    [results] = out.rglob("results_*.json")
    samples = {}
    for path in out.rglob("samples_*.jsonl"):
        task = path.name.removeprefix("samples_").rsplit("_", 1)[0]
        samples[task] = sorted((json.loads(line) for line in path.read_text().splitlines()), key=lambda s: s["doc_id"])
    return json.loads(results.read_text()), samples


@pytest.fixture(scope="module")
def first_run(infini_dir, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cli")
    done = _harness(tmp, *_run_args(infini_dir, tmp / "out1"), "--use_cache", str(tmp / "lm_cache" / "run"))
    assert done.returncode == 0, done.stderr[-3000:]
    return tmp, done


def test_cli_runs_passkey_niah_perplexity_with_samples(first_run) -> None:
    tmp, done = first_run
    results, samples = _outputs(tmp / "out1")
    assert set(results["results"]) == {"passkey_1k", "niah_1k", "ppl_stdlib"}
    assert 0.0 <= results["results"]["passkey_1k"]["acc,none"] <= 1.0
    assert 0.0 <= results["results"]["niah_1k"]["acc,none"] <= 1.0
    assert results["results"]["ppl_stdlib"]["token_perplexity,none"] > 1.0
    assert results["config"]["segment_length"] == 128  # the model arg reached the model
    assert set(samples) == {"passkey_1k", "niah_1k", "ppl_stdlib"}
    for task_samples in samples.values():
        assert len(task_samples) == 2 and all(s["resps"] and s["resps"][0] for s in task_samples)
    # lm-eval's default --device cuda:0 on this CPU-only machine: one warning, then the CPU
    assert done.stderr.count("CUDA is not available here") == 1


def test_cli_second_run_answers_from_the_cache(infini_dir, first_run) -> None:
    tmp, _ = first_run
    again = _harness(tmp, *_run_args(infini_dir, tmp / "out2"), "--use_cache", str(tmp / "lm_cache" / "run"))
    assert again.returncode == 0, again.stderr[-3000:]
    assert "Cached requests: 4, Requests remaining: 0" in again.stderr  # generate_until: 2 passkey + 2 NIAH
    assert again.stderr.count("Requests remaining: 0") == 2  # and loglikelihood_rolling
    assert "Running generate_until requests:" not in again.stderr  # the adapter's progress bars never started
    assert "Running loglikelihood_rolling requests:" not in again.stderr
    _, before = _outputs(tmp / "out1")
    _, after = _outputs(tmp / "out2")
    for task in before:
        assert [s["resps"] for s in after[task]] == [s["resps"] for s in before[task]]


def test_cli_data_parallel_ranks_share_the_requests(infini_dir, first_run) -> None:
    tmp, _ = first_run
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    # two depths, one document each: each rank scores a different depth, and lm-eval's gather still finds every
    # per-depth metric name on every rank
    cache = tmp / "dp_cache" / "run"
    args = _run_args(infini_dir, tmp / "out_dp", "passkey_1k,ppl_stdlib")
    done = _harness(tmp, *args, "--device", "cpu", "--use_cache", str(cache), launcher=launcher)
    assert done.returncode == 0, done.stderr[-3000:]
    # each rank answered its own share (lm-eval gives every rank its own cache file): 1 passkey + 1 document each
    answered = [set(SqliteDict(f"{cache}_rank{rank}.db", flag="r").keys()) for rank in (0, 1)]
    assert [len(keys) for keys in answered] == [2, 2] and not answered[0] & answered[1]
    results, samples = _outputs(tmp / "out_dp")
    single, single_samples = _outputs(tmp / "out1")
    assert [s["resps"] for s in samples["passkey_1k"]] == [s["resps"] for s in single_samples["passkey_1k"]]
    scores = [float(s["resps"][0][0]) for s in samples["ppl_stdlib"]]  # the samples file holds them as strings
    assert scores == pytest.approx([float(s["resps"][0][0]) for s in single_samples["ppl_stdlib"]], rel=1e-6)
    for sample in samples["passkey_1k"]:
        depth = f"acc_d{int(sample['doc']['depth_percent']):03d},none"
        assert results["results"]["passkey_1k"][depth] == sample["acc"]
    ppl = "token_perplexity,none"
    assert results["results"]["ppl_stdlib"][ppl] == pytest.approx(single["results"]["ppl_stdlib"][ppl], rel=1e-6)


def test_cli_bad_model_args_end_in_one_clear_message(tmp_path) -> None:
    done = _harness(tmp_path, "--model", "infini", "--model_args", "pretrained=ckpt_missing,segment_length=2", "--tasks", "passkey_1k")
    assert done.returncode != 0
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("error: pretrained='ckpt_missing'") and "does not exist" in last
    assert "Traceback" not in done.stderr
