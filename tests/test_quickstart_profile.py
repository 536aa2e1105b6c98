"""The quickstart's profiles (issue 13, item 4): the GPU profile exactly when CUDA is present, its recipe and 64×
lengths, `--recipe` replacing the recipe only, both recipes valid, multikey NIAH only where it has tasks, and a
switch of profile rerunning the stages. CUDA is faked by patching `torch.cuda.is_available`; nothing here trains
(the stages' work is replaced as in test_reliability_quickstart.py)."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from infini_bench import quickstart
from infini_bench.quickstart import CPU, GPU, GPU_RECIPE, RECIPE, plan, select_profile
from infini_bench.quickstart.records import state_file
from infini_bench.tasks.names import CONTEXT_LENGTH_NAMES, format_length, niah_lengths
from infini_bench.training.recipe import load_recipe
from test_quickstart import TINY_RECIPE
from test_reliability_quickstart import fake_stages  # noqa: F401  (a fixture)


@pytest.fixture(params=[True, False], ids=["cuda", "no-cuda"])
def cuda(request, monkeypatch) -> bool:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: request.param)
    return request.param


def _eval_commands(stages) -> dict[str, list[str]]:
    return {s.name: s.command for s in stages if s.name.startswith("eval_")}


def _option(command: list[str], flag: str) -> str:
    return command[command.index(flag) + 1]


def test_the_gpu_profile_exactly_when_cuda_is_present(cuda, tmp_path):
    profile, why = select_profile()
    assert profile is (GPU if cuda else CPU)
    assert ("is True" if cuda else "no CUDA device") in why
    stages = plan(tmp_path, 10.0, profile=profile)
    assert {s.profile for s in stages} == {profile.name}
    train = next(s for s in stages if s.name == "infini_pretrain")
    assert _option(train.command, "--config") == str(GPU_RECIPE if cuda else RECIPE)
    length = 2048 if cuda else 256
    longest = length * (64 if cuda else 16)
    for command in _eval_commands(stages).values():
        assert _option(command, "--device") == ("cuda" if cuda else "cpu")
        tasks = _option(command, "--tasks").split(",")
        assert [t for t in tasks if t.startswith("passkey_")] == [
            f"passkey_{format_length(length * m)}" for m in profile.multiples]
        assert f"niah_{format_length(length)}" in tasks and f"passkey_{format_length(longest)}" in tasks
    if cuda:
        assert GPU.multiples == (1, 2, 4, 8, 16, 32, 64) and format_length(longest) == "128k"
        assert "dtype=bfloat16" in _option(_eval_commands(stages)["eval_llama"], "--model_args")
        # no static KV cache on the GPU: its full-length attention mask would rule out flash SDPA at 128K
        assert "--gen_kwargs" not in _eval_commands(stages)["eval_llama"]


def test_cpu_evaluation_commands_are_unchanged_by_profiles(tmp_path, monkeypatch):
    """The README's measured CPU runs used these exact model arguments; a CPU rerun must not retrain for nothing."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    commands = _eval_commands(plan(tmp_path, 10.0, profile=select_profile()[0]))
    assert _option(commands["eval_infini"], "--model_args") == f"pretrained={tmp_path / 'infini/finetune/latest'}"
    assert _option(commands["eval_llama"], "--model_args").endswith(",dtype=float32")
    assert _option(commands["eval_infini"], "--batch_size") == "4"
    # the Llama decodes with a static KV cache (same answers, no copy of the cache per token); the adapter has its own
    assert _option(commands["eval_llama"], "--gen_kwargs") == "cache_implementation=static"
    assert "--gen_kwargs" not in commands["eval_infini"] and "--gen_kwargs" not in commands["eval_memory_off"]


def test_recipe_option_replaces_the_recipe_only(cuda, tmp_path):
    recipe = tmp_path / "tiny.yaml"
    recipe.write_text(TINY_RECIPE)
    profile, why = select_profile(recipe)
    assert profile.recipe == recipe and f"--recipe {recipe} replaces" in why
    assert profile.device == ("cuda" if cuda else "cpu")
    assert profile.multiples == (GPU if cuda else CPU).multiples
    stages = plan(tmp_path / "out", 1.0, profile=profile)
    assert all(str(recipe) in s.command for s in stages if s.name.endswith(("_pretrain", "_finetune")))
    tasks = _option(_eval_commands(stages)["eval_infini"], "--tasks").split(",")
    assert f"passkey_{format_length(256 * profile.multiples[-1])}" in tasks  # the tiny recipe finetunes at 256


@pytest.mark.parametrize("path", [RECIPE, GPU_RECIPE], ids=lambda p: p.name)
def test_both_recipes_load_and_validate(path):
    recipe = load_recipe(path)
    assert recipe.finetune is not None
    longest = max(recipe.finetune.passkey.lengths)
    multiples = GPU.multiples if path == GPU_RECIPE else CPU.multiples
    assert all(format_length(longest * m) in CONTEXT_LENGTH_NAMES for m in multiples)
    # the profile's recipe keeps the CPU recipe's structure: the same sections and keys
    def keys(node, prefix=""):
        return {prefix + k for k, v in node.items()} | {
            key for k, v in node.items() if isinstance(v, dict) for key in keys(v, f"{prefix}{k}.")}
    cpu, gpu = (yaml.safe_load(p.read_text()) for p in (RECIPE, GPU_RECIPE))
    assert keys(cpu) <= keys(gpu)


def test_the_gpu_recipe_is_the_larger_model_at_the_longer_length():
    cpu, gpu = load_recipe(RECIPE), load_recipe(GPU_RECIPE)
    assert gpu.model.hidden_size * gpu.model.num_hidden_layers > 8 * cpu.model.hidden_size * cpu.model.num_hidden_layers
    assert max(gpu.finetune.passkey.lengths) == 2048 and gpu.model.memory_update == "delta_l2"
    assert gpu.run.precision in ("auto", "bf16") and gpu.run.max_minutes == cpu.run.max_minutes


@pytest.mark.parametrize("length, multiples", [(256, (1, 2, 4, 8, 16)), (2048, (1, 2, 4, 8, 16, 32, 64))])
def test_multikey_tasks_only_at_lengths_that_have_them(length, multiples):
    tasks = quickstart.retrieval_tasks([length * m for m in multiples])
    names = [format_length(length * m) for m in multiples]
    expected = [n for n in names if n in niah_lengths(quickstart.MULTIKEY_VARIANT)]
    assert [t for t in tasks if t.startswith("niah_multikey_")] == [f"niah_multikey_2_{n}" for n in expected]
    assert expected == names  # multikey_2 has tasks from 256 tokens, the CPU recipe's 1x
    assert [t for t in tasks if t.startswith("passkey_")] == [f"passkey_{n}" for n in names]


def _tiny_run(tmp_path, multiples: str = "1,2") -> tuple[Path, list[str]]:
    """The output folder and the quickstart arguments of a one-minute run of the tests' tiny recipe."""
    recipe = tmp_path / "tiny.yaml"
    recipe.write_text(TINY_RECIPE)
    out = tmp_path / "out"
    return out, ["--out", str(out), "--minutes", "1", "--recipe", str(recipe), "--samples", "1",
                 "--multiples", multiples]


def test_switching_profile_reruns_every_stage(tmp_path, monkeypatch, fake_stages, capsys):  # noqa: F811
    out, args = _tiny_run(tmp_path)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert quickstart.main(args) == 0
    printed = capsys.readouterr().out
    assert printed.count("profile: cpu (no CUDA device") == 1
    assert "niah_multikey_2_256" in (out / "commands.sh").read_text()

    fake_stages.clear()
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert quickstart.main(args) == 0
    printed = capsys.readouterr().out
    assert "profile: gpu (torch.cuda.is_available() is True" in printed
    assert len(fake_stages) == 11
    assert printed.count("made under the cpu profile and this run uses the gpu one") == 11
    assert "--device cuda" in (out / "commands.sh").read_text()


def test_records_from_before_profiles_count_as_cpu(tmp_path, monkeypatch, fake_stages, capsys):  # noqa: F811
    """A quickstart folder made before profiles existed (no "profile" in its records) is not retrained on a CPU."""
    import json

    out, args = _tiny_run(tmp_path)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert quickstart.main(args) == 0
    state = state_file(out)
    records = json.loads(state.read_text())
    for record in records.values():
        del record["inputs"]["profile"]
    state.write_text(json.dumps(records))
    fake_stages.clear()
    capsys.readouterr()
    assert quickstart.main(args) == 0
    assert fake_stages == [] and capsys.readouterr().out.count("already done, skipped") == 11


def test_help_and_the_cli_do_not_need_cuda_or_torch_at_import():
    import subprocess
    import sys

    code = ("import sys, infini_bench.quickstart as q\n"
            "assert 'torch' not in sys.modules, 'torch imported'\n"
            "print(q.GPU.recipe.name)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stdout.strip() == "quickstart-gpu.yaml", proc.stderr[-2000:]
    help_text = subprocess.run([sys.executable, "-m", "infini_bench.cli", "quickstart", "--help"], capture_output=True,
                               text=True).stdout
    assert "1,2,4,8,16,32,64 with CUDA" in " ".join(help_text.split())


def test_seed_option_sets_every_training_seed_and_reruns_training_only(tmp_path, monkeypatch, fake_stages,  # noqa: F811
                                                                       capsys):
    """`--seed N` (the README's seed loop) gives both models' pretraining and finetuning seed N, passkey and NIAH
    examples included; the evaluation commands, and so the documents, are the same for every seed."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    plain = {s.name: s.command for s in plan(tmp_path, 10.0)}
    seeded = {s.name: s.command for s in plan(tmp_path, 10.0, seed=3)}
    for name in ("infini_pretrain", "baseline_pretrain"):
        assert seeded[name] == plain[name] + ["run.seed=3"]
    for name in ("infini_finetune", "baseline_finetune"):
        assert seeded[name] == plain[name] + ["finetune.run.seed=3", "finetune.passkey.seed=3", "finetune.niah.seed=3"]
    assert {n: c for n, c in seeded.items() if n.startswith("eval_")} == {
        n: c for n, c in plain.items() if n.startswith("eval_")}
    for key in ("run", "passkey", "niah"):  # the overrides name real recipe keys
        assert getattr(load_recipe(RECIPE, [f"finetune.{key}.seed=3"]).finetune, key).seed == 3

    _, args = _tiny_run(tmp_path, multiples="1")
    assert quickstart.main(args) == 0
    fake_stages.clear()
    assert quickstart.main([*args, "--seed", "1"]) == 0
    assert {"infini_pretrain", "infini_finetune", "baseline_pretrain", "baseline_finetune"} <= set(fake_stages)
    assert quickstart.main([*args, "--seed", "-1"]) == 1
    assert "--seed=-1 is invalid" in capsys.readouterr().err
