"""Trainer pieces that need no training run: recipes and their errors, optimiser groups, the schedule, and the
gradient path through the memory."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from infini_bench import InfiniConfig, InfiniForCausalLM
from infini_bench.training.commands import main as training_main
from infini_bench.training.loop import Clock
from infini_bench.training.optim import build_optimizer, build_scheduler, lr_factor
from infini_bench.training.recipe import (
    FROM_TOKENIZER,
    MODEL_DEFAULTS,
    ModelConfig,
    OptimConfig,
    RecipeError,
    RunConfig,
    load_recipe,
)

RECIPES = Path(__file__).resolve().parent.parent / "recipes"


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def tiny_model(**overrides) -> InfiniForCausalLM:
    torch.manual_seed(0)
    fields = dict(
        vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, segment_length=8, attention_bias=True,
    )
    fields.update(overrides)
    return InfiniForCausalLM(InfiniConfig(**fields))


# --- recipes -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["quickstart-cpu.yaml", "infini-300m-passkey.yaml"])
def test_shipped_recipes_load(name):
    recipe = load_recipe(RECIPES / name)
    assert recipe.finetune is not None
    assert recipe.optim.betas == [0.9, 0.95] and recipe.optim.eps == 1e-8


def test_seed_recipe_matches_the_issue():
    r = load_recipe(RECIPES / "infini-300m-passkey.yaml")
    assert (r.model.segment_length, r.model.gate_activation, r.model.gate_init) == (1024, "hard_sigmoid", "zeros")
    assert r.data.sequence_length == 8192 and r.optim.gate_lr == 0.01
    f = r.finetune
    assert f.passkey.lengths == [10240] and f.passkey.num_examples == 2000
    assert (f.run.max_steps, f.run.save_every, f.optim.micro_batch_size) == (500, 100, 1)
    assert (f.optim.lr, f.optim.min_lr, f.optim.warmup_steps) == (5e-5, 5e-6, 50)
    assert (f.optim.weight_decay, f.optim.max_grad_norm, f.run.precision) == (0.01, 1.0, "bf16")


def test_unknown_key_is_named(tmp_path):
    recipe = write(tmp_path / "r.yaml", "optim:\n  lrr: 0.1\n")
    with pytest.raises(RecipeError, match=r"'optim\.lrr'"):
        load_recipe(recipe)
    with pytest.raises(RecipeError, match=r"'modle'"):
        load_recipe(write(tmp_path / "s.yaml", "modle: {}\n"))
    with pytest.raises(RecipeError, match=r"finetune\.passkey\.lenghts"):
        load_recipe(None, ["finetune.passkey.lenghts=[64]"])


@pytest.mark.parametrize(
    "text, key",
    [
        ("run:\n  max_steps: many\n", "run.max_steps='many'"),
        ("run:\n  max_steps: 1.5\n", "run.max_steps=1.5"),
        ("model:\n  use_memory: 'yes'\n", "model.use_memory='yes'"),
        ("optim:\n  betas: 0.9\n", "optim.betas=0.9"),
        ("data:\n  paths: [1, 2]\n", "data.paths[0]=1"),
        ("optim: 3\n", "optim must be a mapping"),
    ],
)
def test_wrong_type_is_named(tmp_path, text, key):
    with pytest.raises(RecipeError, match=key.replace(".", r"\.").replace("[", r"\[").replace("]", r"\]")):
        load_recipe(write(tmp_path / "r.yaml", text))


def test_bad_values_are_named():
    with pytest.raises(RecipeError, match="model.memory_update='deltaa'"):
        load_recipe(None, ["model.memory_update=deltaa"])
    with pytest.raises(RecipeError, match="optim.min_lr"):
        load_recipe(None, ["optim.lr=1e-4", "optim.min_lr=1e-3"])
    with pytest.raises(RecipeError, match="not of the form"):
        load_recipe(None, ["run.max_steps"])
    with pytest.raises(RecipeError, match="finetune.text_every=1 is invalid"):
        load_recipe(None, ["finetune.text_every=1"])


def test_model_section_is_infini_configs_own_fields():
    """One home for the model's settings: the recipe's model keys are InfiniConfig's (less those the tokenizer
    sets), validated by InfiniConfig, unknown ones refused by name; truncation is the trainer's (optim)."""
    import dataclasses
    import inspect

    keys = {f.name for f in dataclasses.fields(load_recipe(None).model)} - {"init_from"}
    params = set(inspect.signature(InfiniConfig.__init__).parameters) - {"self", "kwargs"}
    assert keys == params - {"vocab_size", "pad_token_id", "bos_token_id", "eos_token_id"}
    recipe = load_recipe(None, ["model.memory_kernel=torch", "model.num_key_value_heads=2", "optim.detach_every=2"])
    config = recipe.model.infini_config(vocab_size=64)
    assert (config.memory_kernel, config.num_key_value_heads, recipe.optim.detach_every) == ("torch", 2, 2)
    with pytest.raises(RecipeError, match=r"model\.num_attention_heads=4 is not a multiple of num_key_value_heads=3"):
        load_recipe(None, ["model.num_key_value_heads=3"])
    with pytest.raises(RecipeError, match=r"model\.memory_kernel='cuda' is unknown"):
        load_recipe(None, ["model.memory_kernel=cuda"])
    for key in ("model.detach_every=1", "model.vocab_size=5"):
        with pytest.raises(RecipeError, match=rf"unknown recipe key '{key.split('=')[0]}'"):
            load_recipe(None, [key])


def test_overrides_are_parsed_as_yaml():
    r = load_recipe(None, ["run.max_steps=7", "optim.lr=1e-3", "data.paths=[a.txt, b.jsonl]", "run.max_minutes=null"])
    assert r.run.max_steps == 7 and r.optim.lr == 1e-3 and r.data.paths == ["a.txt", "b.jsonl"]
    assert r.run.max_minutes is None
    assert load_recipe(None, ["model.gate_init=0.5"]).model.gate_init == 0.5


def test_sequence_shorter_than_one_segment_is_refused():
    with pytest.raises(RecipeError, match=r"data.sequence_length=32 is shorter than one segment .*segment_length=64"):
        load_recipe(None, ["data.sequence_length=32", "model.segment_length=64"])


def test_cli_reports_missing_data_path(tmp_path, capsys):
    missing = tmp_path / "nowhere.jsonl"
    code = training_main(
        ["train", f"run.output_dir={tmp_path / 'out'}", "data.source=files", f"data.paths=[{missing}]"]
    )
    assert code == 1
    assert str(missing) in capsys.readouterr().err
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").glob("checkpoint-*"))


def test_one_expand_paths_for_every_reader_of_user_files(tmp_path):
    """The corpus reader, essays and ppl_files expand paths by one rule: folders recursively and sorted, hidden
    entries below a named folder skipped (a hidden folder above it is fine), types filtered when the reader asks."""
    from infini_bench.data.corpus import expand_paths
    from infini_bench.data.text_corpus import FILE_SUFFIXES

    root = tmp_path / ".hidden_parent" / "texts"
    (root / "sub").mkdir(parents=True)
    (root / ".git").mkdir()
    for name in ("b.txt", "a.py", "sub/c.jsonl", "notes.bin", ".secret.txt", ".git/x.txt"):
        (root / name).write_text("x")
    assert expand_paths([str(root)], "data.paths", FILE_SUFFIXES) == [root / "a.py", root / "b.txt", root / "sub/c.jsonl"]
    assert expand_paths(str(root), "essays") == [root / n for n in ("a.py", "b.txt", "notes.bin", "sub/c.jsonl")]
    with pytest.raises(ValueError, match=r"data.paths: file '.*notes.bin' has an unsupported type '.bin'"):
        expand_paths([str(root / "notes.bin")], "data.paths", FILE_SUFFIXES)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match=r"data.paths: folder '.*empty' holds no .txt/.*parquet files"):
        expand_paths([str(root), str(tmp_path / "empty")], "data.paths", FILE_SUFFIXES)
    with pytest.raises(FileNotFoundError, match=r"essays: path '.*nowhere' does not exist"):
        expand_paths([str(tmp_path / "nowhere")], "essays")


def test_training_data_is_a_cache_entry_rebuilt_when_damaged(tmp_path, tiny_tokenizer, caplog):
    """The packed corpus lives in the one cache module's format: a damaged entry is rebuilt, not trusted."""
    from infini_bench.data.cache import Store
    from infini_bench.data.text_corpus import packed_rows

    store = Store(tmp_path / "data", "the packed training data", "choose another folder")
    docs = ["def f(x):\n    return x + 1\n" * 20] * 4
    rows = packed_rows(store, {"test": 1}, tiny_tokenizer, iter(docs), 16, None)
    first = np.array(rows)
    (data_file,) = (tmp_path / "data" / "packed").glob("*.bin")
    data_file.write_bytes(data_file.read_bytes()[:10])
    with caplog.at_level("WARNING"):
        again = packed_rows(store, {"test": 1}, tiny_tokenizer, iter(docs), 16, None)
    assert "corrupt or partial" in caplog.text and np.array_equal(np.array(again), first)
    assert packed_rows(store, {"test": 1}, tiny_tokenizer, iter(()), 16, None).shape == first.shape  # read back


def test_cli_reports_from_folder_that_is_no_checkpoint(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    code = training_main(["finetune", "--config", str(RECIPES / "quickstart-cpu.yaml"), "--from", str(empty)])
    assert code == 1
    err = capsys.readouterr().err
    assert str(empty) in err and "config.json" in err


# --- optimiser groups and schedule -----------------------------------------------------------------------------


def test_gate_group_has_its_own_lr_and_no_decay():
    model = tiny_model()
    optim = OptimConfig(lr=1e-3, min_lr=1e-4, gate_lr=0.05, weight_decay=0.1, warmup_steps=0)
    optimizer = build_optimizer(model, optim)
    groups = {g["name"]: g for g in optimizer.param_groups}
    names = {id(p): n for n, p in model.named_parameters()}
    gate_names = sorted(names[id(p)] for p in groups["gates"]["params"])
    assert gate_names == [f"model.layers.{i}.self_attn.gate" for i in range(2)]
    no_decay = {names[id(p)] for p in groups["no_decay"]["params"]}
    assert all(n.endswith(("norm.weight", ".bias")) for n in no_decay) and "model.norm.weight" in no_decay
    assert all(p.dim() == 2 for p in groups["decay"]["params"])
    assert (groups["gates"]["lr"], groups["gates"]["weight_decay"]) == (0.05, 0.0)
    assert groups["no_decay"]["weight_decay"] == 0.0 and groups["decay"]["weight_decay"] == 0.1

    # With zero gradients only decoupled weight decay moves a parameter: gates and norms must not move.
    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.gate.fill_(1.0)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    optimizer.step()
    after = dict(model.named_parameters())
    gate = "model.layers.0.self_attn.gate"
    assert torch.equal(after[gate], before[gate])
    assert torch.equal(after["model.norm.weight"], before["model.norm.weight"])
    w = "model.layers.0.mlp.up_proj.weight"
    torch.testing.assert_close(after[w], before[w] * (1 - 1e-3 * 0.1))

    # A real gradient: Adam's first step moves each element by exactly its group's learning rate.
    optimizer = build_optimizer(model, optim)
    ids = torch.randint(0, 64, (2, 24))
    model(ids, labels=ids).loss.backward()
    before = after[gate].detach().clone()
    optimizer.step()
    moved = (after[gate] - before).abs()
    torch.testing.assert_close(moved, torch.full_like(moved, 0.05), rtol=1e-3, atol=0)


def test_schedule_warmup_then_cosine_to_min_lr():
    optim = OptimConfig(lr=1e-3, min_lr=1e-4, warmup_steps=10)
    assert lr_factor(0, optim, 100) == pytest.approx(0.1)
    assert lr_factor(9, optim, 100) == pytest.approx(1.0)
    assert lr_factor(55, optim, 100) == pytest.approx(0.1 + 0.5 * 0.9)
    assert lr_factor(100, optim, 100) == pytest.approx(0.1)
    assert lr_factor(500, optim, 100) == pytest.approx(0.1)
    factors = [lr_factor(s, optim, 100) for s in range(10, 101)]
    assert all(a >= b for a, b in zip(factors, factors[1:]))
    model = tiny_model()
    optimizer = build_optimizer(model, OptimConfig(lr=1e-3, min_lr=1e-4, gate_lr=0.01, warmup_steps=10))
    scheduler = build_scheduler(optimizer, OptimConfig(lr=1e-3, min_lr=1e-4, gate_lr=0.01, warmup_steps=10), 100)
    for _ in range(55):
        optimizer.step()  # no gradients: nothing moves, the schedule advances
        scheduler.step()
    lrs = {g["name"]: g["lr"] for g in optimizer.param_groups}
    assert lrs["decay"] == pytest.approx(1e-3 * (0.1 + 0.45)) and lrs["gates"] == pytest.approx(0.01 * (0.1 + 0.45))
    assert math.isclose(lrs["gates"] / lrs["decay"], 10.0)


def test_a_time_limited_run_goes_through_its_whole_schedule():
    """The schedules follow whichever of steps and time budget is further along: a run that its budget stops at
    step 30 of 100 still ends its learning-rate decay (and its length curriculum) there."""
    clock = Clock(RunConfig(max_steps=100, max_minutes=1))
    assert clock.done(10) == 0.1 and not clock.out_of_time()
    clock.spent = 30.0
    assert clock.done(10) == 0.5 and clock.done(80) == 0.8
    clock.spent = 60.0
    assert clock.done(10) == 1.0 and clock.out_of_time()
    steps_only = Clock(RunConfig(max_steps=100, max_minutes=None), spent=1e9)
    assert steps_only.done(10) == 0.1 and not steps_only.out_of_time()

    optim = OptimConfig(lr=1e-3, min_lr=1e-4, gate_lr=0.01, warmup_steps=2)
    optimizer = build_optimizer(tiny_model(), optim)
    clock = Clock(RunConfig(max_steps=100, max_minutes=1))
    scheduler = build_scheduler(optimizer, optim, 100, clock.done)
    for step in range(30):
        clock.spent = 2.0 * (step + 1)  # each step takes 2 s: the minute is spent at step 30
        optimizer.step()
        scheduler.step()
        if step == 14:
            assert optimizer.param_groups[0]["lr"] == pytest.approx(1e-3 * lr_factor(50, optim, 100))
    assert optimizer.param_groups[0]["lr"] == pytest.approx(1e-4)


# --- gradient through the memory -------------------------------------------------------------------------------


def first_segment_embedding_grad(model: InfiniForCausalLM, detach_every: int = 0) -> torch.Tensor:
    """Loss on the last of 4 segments only; the gradient on the embeddings of tokens that occur only in the first."""
    seg = model.config.segment_length
    first = torch.arange(40, 40 + seg)  # token ids used nowhere else
    rest = torch.randint(0, 40, (3 * seg,), generator=torch.Generator().manual_seed(0))
    ids = torch.cat([first, rest]).unsqueeze(0)
    labels = torch.full_like(ids, -100)
    labels[:, -seg:] = ids[:, -seg:]
    model.zero_grad()
    model(ids, labels=labels, detach_every=detach_every).loss.backward()
    return model.model.embed_tokens.weight.grad[first]


def test_gradient_reaches_the_first_segment_from_the_last():
    model = tiny_model(vocab_size=40 + 8)
    grad = first_segment_embedding_grad(model)
    assert grad.abs().sum() > 0 and torch.isfinite(grad).all()
    # The only path from segment 4's loss to segment 1's tokens is the memory: cut it and the gradient vanishes.
    assert first_segment_embedding_grad(model, detach_every=1).abs().sum() == 0
    assert first_segment_embedding_grad(tiny_model(vocab_size=48, use_memory=False)).abs().sum() == 0
    # Truncating every 2 segments cuts the path from segment 4 back to segment 1 as well.
    assert first_segment_embedding_grad(model, detach_every=2).abs().sum() == 0


@pytest.mark.parametrize(
    "memory_update, use_memory, length, unused",
    [("delta_l2", True, 17, False), ("delta_l2", True, 8, True), ("linear", True, 17, False), ("linear", False, 17, True)],
)
def test_ddp_is_told_when_a_step_leaves_parameters_unused(memory_update, use_memory, length, unused):
    """The accelerator is made from the built model and data: memory off (gates unused) or sequences of one
    segment (delta_l2's write strength unused) make DDP look for unused parameters, as a real step shows."""
    from infini_bench.training.loop import may_leave_parameters_unused

    model = tiny_model(memory_update=memory_update, use_memory=use_memory)
    ids = torch.randint(0, 64, (1, length))
    model(ids, labels=ids).loss.backward()
    without_grad = [name for name, p in model.named_parameters() if p.grad is None]
    assert bool(without_grad) == unused == may_leave_parameters_unused(model, length), without_grad


def test_model_config_lists_exactly_infini_configs_fields():
    """`ModelConfig` is written out for type checkers; it must stay InfiniConfig's signature (names, types and
    defaults, but the tokenizer's fields and the recipe's small `MODEL_DEFAULTS`), plus `init_from`."""
    import dataclasses
    import inspect
    import typing

    params = [p for name, p in inspect.signature(InfiniConfig.__init__, eval_str=True).parameters.items()
              if name != "self" and p.kind is not p.VAR_KEYWORD and name not in FROM_TOKENIZER]
    expected = [("init_from", typing.Union[str, None], None)]
    expected += [(p.name, p.annotation, MODEL_DEFAULTS.get(p.name, p.default)) for p in params]
    hints = typing.get_type_hints(ModelConfig)
    assert [(f.name, hints[f.name], f.default) for f in dataclasses.fields(ModelConfig)] == expected
