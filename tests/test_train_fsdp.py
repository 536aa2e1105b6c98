"""FSDP: the model under torch's FSDP2 on 2 CPU processes (gloo) takes the same step as one process with the whole
batch; accelerate's FSDP config on a machine without GPUs is refused instead of silently running data parallel."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from test_train_runs import corpus, env, free_port, log, overrides  # noqa: F401  (corpus is a fixture)

TESTS = Path(__file__).resolve().parent
FSDP_CONFIG = TESTS.parent / "recipes" / "accelerate" / "fsdp.yaml"


def test_fsdp2_two_processes_take_the_step_of_one(tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    one.mkdir(), two.mkdir()
    run = dict(env=env(), capture_output=True, text=True, timeout=300)
    proc = subprocess.run([sys.executable, str(TESTS / "fsdp_step.py"), str(one)], **run)
    assert proc.returncode == 0, proc.stderr[-3000:]
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(free_port())]
    proc = subprocess.run([*torchrun, str(TESTS / "fsdp_step.py"), str(two)], **run)
    assert proc.returncode == 0, proc.stderr[-3000:]
    halves = [torch.load(two / f"rank{r}.pt")["loss"] for r in (0, 1)]  # each rank's half of the batch
    assert sum(halves) / 2 == pytest.approx(torch.load(one / "rank0.pt")["loss"], rel=1e-6)
    grads = torch.load(two / "grads.pt")
    for name, grad in torch.load(one / "grads.pt").items():  # FSDP's reduce-scatter averages the halves' gradients
        torch.testing.assert_close(grads[name], grad, rtol=1e-4, atol=1e-7, msg=name)
    initial, whole, sharded = (torch.load(d / name) for d, name in
                               ((one, "initial.pt"), (one, "weights.pt"), (two, "weights.pt")))
    assert whole.keys() == sharded.keys() and any(k.endswith("self_attn.gate") for k in whole)
    for name in whole:  # Adam's first step is lr·sign(g) where |g| ≫ eps: 1e-5 against steps of 1e-2 and 5e-2
        torch.testing.assert_close(sharded[name], whole[name], rtol=0, atol=1e-5, msg=name)
    assert all(not torch.equal(initial[k], whole[k]) for k in whole if k.endswith("self_attn.gate"))  # a real step


def test_accelerate_fsdp_on_a_machine_without_gpus_is_refused(tmp_path, corpus):  # noqa: F811
    cmd = [
        sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(FSDP_CONFIG), "--num_processes", "2",
        "--mixed_precision", "no", "--main_process_port", str(free_port()),
        "-m", "infini_bench.training", "train", *overrides(corpus, tmp_path / "out", **{"run.max_steps": 1}),
    ]
    proc = subprocess.run(cmd, env=env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    assert "accelerate shards with FSDP only on GPUs and this machine has none" in proc.stderr
    assert not (tmp_path / "out" / "latest").exists()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="accelerate runs FSDP only on CUDA (benchmarks/gpu_check.sh)")
def test_accelerate_fsdp_on_one_gpu_trains_as_one_process(tmp_path, corpus):  # noqa: F811
    """The README's FSDP launch (one process on one GPU: the sharding wrappers, the gathered state dict and the
    sharded optimizer state all run) logs the losses of the plain single-process run."""
    settings = {"run.max_steps": 3, "run.save_every": 3, "run.precision": "fp32"}
    gpu = {k: v for k, v in env().items() if k != "CUDA_VISIBLE_DEVICES"}
    plain, sharded = tmp_path / "plain", tmp_path / "fsdp"
    run = dict(env=gpu, capture_output=True, text=True, timeout=300)
    proc = subprocess.run([sys.executable, "-m", "infini_bench.training", "train", *overrides(corpus, plain, **settings)], **run)
    assert proc.returncode == 0, proc.stderr[-3000:]
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(FSDP_CONFIG), "--num_processes",
           "1", "--mixed_precision", "no", "--main_process_port", str(free_port()),
           "-m", "infini_bench.training", "train", *overrides(corpus, sharded, **settings)]
    proc = subprocess.run(cmd, **run)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads((sharded / "latest" / "trainer_state.json").read_text())["distributed"] == "FSDP"
    for a, b in zip(log(plain), log(sharded), strict=True):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-3), a["step"]
