"""Real (tiny) training runs: exact resume after SIGKILL, two processes equal one, checkpoints load with
AutoModelForCausalLM, a failing save keeps the previous checkpoint, resume flags."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel

from infini_bench import InfiniForCausalLM
from infini_bench.training.checkpoint import CheckpointError, list_checkpoints
from infini_bench.training.commands import main as training_main
from infini_bench.training.loop import train
from infini_bench.training.recipe import load_recipe, recipe_to_yaml
from infini_bench.training.stages import pretraining

STDLIB = Path(sysconfig.get_paths()["stdlib"])


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, tiny_tokenizer) -> dict[str, Path]:
    """A few standard-library modules as a local text corpus, and a saved tokenizer (no BPE training per run)."""
    root = tmp_path_factory.mktemp("corpus")
    texts = root / "texts"
    texts.mkdir()
    for name in ("argparse.py", "dataclasses.py", "pathlib.py", "textwrap.py"):
        (texts / name).write_text((STDLIB / name).read_text())
    tokenizer = root / "tokenizer"
    tiny_tokenizer.save_pretrained(tokenizer)
    return {"texts": texts, "tokenizer": tokenizer}


def overrides(corpus: dict[str, Path], out: Path, **extra) -> list[str]:
    settings = {
        "run.output_dir": str(out),
        "data.source": "files",
        "data.paths": f"[{corpus['texts']}]",
        "data.tokenizer": str(corpus["tokenizer"]),
        "data.sequence_length": 64,
        "model.hidden_size": 48,
        "model.intermediate_size": 96,
        "model.num_hidden_layers": 2,
        "model.num_attention_heads": 4,
        "model.segment_length": 16,
        "optim.batch_size": 2,
        "optim.micro_batch_size": 1,
        "optim.warmup_steps": 2,
        "optim.lr": 3e-3,
        "run.log_every": 1,
        "run.max_steps": 12,
        "run.save_every": 4,
    }
    settings.update(extra)
    return [f"{k}={v}" for k, v in settings.items()]


def env() -> dict[str, str]:
    e = dict(os.environ, OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="", HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    e.pop("ACCELERATE_USE_CPU", None)
    return e


def run_cli(args: list[str], check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [sys.executable, "-m", "infini_bench.training", *args], env=env(), capture_output=True, text=True, timeout=300
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"training failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return proc


def log(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]


def test_sigkill_then_resume_gives_the_same_losses(tmp_path, corpus):
    straight = tmp_path / "straight"
    run_cli(["train", *overrides(corpus, straight)])
    reference = log(straight)
    assert [r["step"] for r in reference] == list(range(1, 13))

    killed = tmp_path / "killed"
    proc = subprocess.Popen(
        [sys.executable, "-m", "infini_bench.training", "train", *overrides(corpus, killed)],
        env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    deadline = time.time() + 240
    while not (killed / "checkpoint-000004").is_dir():  # appears (renamed) only once complete
        assert proc.poll() is None, f"run ended before its first checkpoint: {proc.stderr.read()[-2000:]}"
        assert time.time() < deadline, "no checkpoint within 240 s"
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    done = list_checkpoints(killed)
    assert done and done[-1].name != "checkpoint-000012", "the run finished before it could be killed"

    resumed = run_cli(["train", *overrides(corpus, killed)])
    assert "resumed from" in resumed.stdout + resumed.stderr
    after = log(killed)
    assert [r["step"] for r in after] == list(range(1, 13))  # lines logged after the checkpoint were replaced
    for a, b in zip(after, reference):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-6, abs=1e-7), (a["step"], a["loss"], b["loss"])
        assert a["grad_norm"] == pytest.approx(b["grad_norm"], rel=1e-5)
        assert a["lr"] == b["lr"]

    # The logged record carries everything the issue asks for, gates per layer included.
    record = reference[-1]
    assert {"loss", "lr", "gate_lr", "tokens_per_s", "grad_norm", "gates"} <= set(record)
    assert len(record["gates"]) == 2 and all({"mean", "min", "max"} <= set(g) for g in record["gates"])
    assert record["gate_lr"] / record["lr"] == pytest.approx(1e-2 / 3e-3)

    # The final checkpoint is an ordinary transformers folder.
    latest = killed / "latest"
    assert latest.resolve().name == "checkpoint-000012"
    model = AutoModelForCausalLM.from_pretrained(latest)
    tokenizer = AutoTokenizer.from_pretrained(latest)
    assert isinstance(model, InfiniForCausalLM) and model.config.segment_length == 16
    ids = tokenizer("def f(x): return x", return_tensors="pt").input_ids
    other = AutoModelForCausalLM.from_pretrained(straight / "latest")
    torch.testing.assert_close(model(ids).logits, other(ids).logits)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_match_one_with_the_same_global_batch(tmp_path, corpus):
    one = tmp_path / "one"
    settings = {"run.max_steps": 4, "run.save_every": 4, "optim.batch_size": 4, "optim.micro_batch_size": 1}
    run_cli(["train", *overrides(corpus, one, **settings)])  # 1 process, 4 micro-batches accumulated
    two = tmp_path / "two"
    # `--multi_gpu` on a machine without GPUs starts 2 CPU processes (torchrun, gloo); accelerate 1.x's
    # `--cpu --num_processes 2` would start a single process unless mpirun is installed.
    cmd = [
        sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines",
        "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(free_port()),
        "-m", "infini_bench.training", "train", *overrides(corpus, two, **settings),
    ]
    proc = subprocess.run(cmd, env=env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    state = json.loads((two / "latest" / "trainer_state.json").read_text())
    assert state["processes"] == 2
    assert sorted(p.name for p in (two / "latest" / "accelerate").glob("random_states_*")) == [
        "random_states_0.pkl", "random_states_1.pkl"
    ]
    for a, b in zip(log(one), log(two)):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5), a["step"]
        assert a["grad_norm"] == pytest.approx(b["grad_norm"], rel=1e-4), a["step"]
    m1 = AutoModelForCausalLM.from_pretrained(one / "latest").state_dict()
    m2 = AutoModelForCausalLM.from_pretrained(two / "latest").state_dict()
    for name in m1:
        torch.testing.assert_close(m1[name], m2[name], rtol=1e-4, atol=1e-6)


def test_two_process_finetune_of_a_memory_off_model(tmp_path, corpus):
    """The full-attention baseline (use_memory=False) trains under DDP: its gates take no gradient, so the
    accelerator, built once the model is known, tells DDP to expect unused parameters (else step 2 fails)."""
    pre = tmp_path / "pre"
    off = {"model.use_memory": "false", "run.max_steps": 2, "run.save_every": 2}
    assert training_main(["train", *overrides(corpus, pre, **off)]) == 0
    ft = tmp_path / "ft"
    cmd = [
        sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines",
        "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(free_port()),
        "-m", "infini_bench.training", "finetune", "--from", str(pre / "latest"), f"finetune.run.output_dir={ft}",
        "finetune.passkey.lengths=[160]", "finetune.passkey.num_examples=4", "finetune.optim.batch_size=2",
        "finetune.optim.micro_batch_size=1", "finetune.optim.warmup_steps=1", "finetune.run.max_steps=3",
        "finetune.run.save_every=3", "finetune.run.log_every=1",
    ]
    proc = subprocess.run(cmd, env=env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    state = json.loads((ft / "latest" / "trainer_state.json").read_text())
    assert (state["processes"], state["step"]) == (2, 3)
    assert [r["step"] for r in log(ft)] == [1, 2, 3]
    assert AutoModelForCausalLM.from_pretrained(ft / "latest").config.use_memory is False


def test_failed_save_keeps_the_previous_checkpoint(tmp_path, corpus, monkeypatch):
    out = tmp_path / "out"
    recipe = load_recipe(None, overrides(corpus, out, **{"run.max_steps": 4, "run.save_every": 2}))
    original = PreTrainedModel.save_pretrained
    calls = []

    def failing_save(self, folder, *args, **kwargs):
        calls.append(folder)
        if len(calls) == 2:
            original(self, folder, *args, **kwargs)  # the disk fills up half way through the second checkpoint
            raise OSError(28, "No space left on device")
        return original(self, folder, *args, **kwargs)

    monkeypatch.setattr(PreTrainedModel, "save_pretrained", failing_save)
    with pytest.raises(CheckpointError, match=r"step 4 .*No space left.*checkpoint-000002.* is intact"):
        train(recipe.optim, recipe.run, pretraining(recipe), recipe_to_yaml(recipe))
    assert [p.name for p in list_checkpoints(out)] == ["checkpoint-000002"]
    assert (out / "latest").resolve().name == "checkpoint-000002"
    assert not list(out.glob("*.tmp"))  # no half checkpoint left behind
    monkeypatch.setattr(PreTrainedModel, "save_pretrained", original)
    AutoModelForCausalLM.from_pretrained(out / "latest")  # still loads
    assert json.loads((out / "latest" / "trainer_state.json").read_text())["step"] == 2


def test_resume_flags_protect_existing_runs(tmp_path, corpus, capsys):
    out = tmp_path / "out"
    args = overrides(corpus, out, **{"run.max_steps": 2, "run.save_every": 2})
    assert training_main(["train", "--resume", *args]) == 1
    assert "holds no checkpoint" in capsys.readouterr().err
    assert training_main(["train", *args]) == 0
    assert training_main(["train", "--no-resume", *args]) == 1
    assert "already holds checkpoints" in capsys.readouterr().err
    # Resuming a finished run does no more steps and keeps its checkpoint.
    assert training_main(["train", *args]) == 0
    assert [p.name for p in list_checkpoints(out)] == ["checkpoint-000002"]
