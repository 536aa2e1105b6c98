"""Retrieval finetuning data (passkey and NIAH): the tasks' own builders, training seeds only, answer-only loss, the
length and family schedule, exact resume, and finetune runs end to end."""
from __future__ import annotations

import json
import shutil

import pytest
import torch

from infini_bench.data.grid import Cell, Grid
from infini_bench.data.niah import VARIANTS, build_niah_docs, niah_spec
from infini_bench.data.passkey import PasskeySpec, build_passkey_docs
from infini_bench.data.seeds import EVAL_SEED_BASE, eval_doc_seed, is_eval_seed
from infini_bench.tasks import TASKS_DIR
from infini_bench.training.batches import Batch, PackedText, RetrievalPools, WithText, retrieval_step
from infini_bench.training.commands import main as training_main
from infini_bench.training.optim import lr_factor
from infini_bench.training.recipe import NiahTrainConfig, OptimConfig, PasskeyConfig, RecipeError, load_recipe
from infini_bench.training.retrieval_data import niah_example, niah_sample, passkey_example, training_seed

from test_train_runs import corpus, log, overrides  # noqa: F401  (module fixture and helpers)

FAMILIES = ("passkey", *(f"niah_{v}" for v in VARIANTS))


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    from infini_bench.data import CACHE_ENV

    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "doc-cache"))


# --- examples --------------------------------------------------------------------------------------------------
def test_passkey_examples_are_the_task_prompt_plus_the_key(tiny_tokenizer):
    """Each example is exactly the prompt the passkey task feeds at that length (length - 16 answer tokens), then
    the key and "."; the loss is on the key and "." only."""
    cfg = PasskeyConfig(lengths=[192])
    assert cfg.answer_budget == 16  # the passkey tasks' default for 5 digits: max(16, digits + 8)
    lengths = set()
    for index in range(4):
        ids, labels, sample = passkey_example(tiny_tokenizer, cfg, 192, index)
        assert sample["prompt_tokens"] == 192 - 16 and sample["input_ids"] == ids[: 192 - 16]
        target = [t for t in labels if t != -100]
        assert tiny_tokenizer.decode(target) == f" {sample['answer']}."  # the key, then where it ends
        assert ids[192 - 16 :] == target and labels[: 192 - 16] == [-100] * (192 - 16)
        assert not is_eval_seed(sample["seed"]) and sample["seed"] == training_seed(0, 192, index)
        assert f"The pass key is {sample['answer']}." in sample["prompt"]
        lengths.add(len(ids))
    assert lengths == {192 - 16 + 7}  # equal lengths: batches need no padding
    ids, labels, _ = passkey_example(tiny_tokenizer, PasskeyConfig(loss_on="all"), 192, 0)
    assert labels == ids


def _lm_eval_task(name: str, tiny_llama_dir, depths: list[int]):
    from lm_eval.tasks import TaskManager

    metadata = {"pretrained": str(tiny_llama_dir), "depths": depths, "samples": 1}
    return TaskManager(include_path=TASKS_DIR, include_defaults=False, metadata=metadata).load([name])["tasks"][name]


@pytest.mark.parametrize("variant, length", [("single_1", 256), ("multikey_1", 512)])
def test_niah_examples_are_the_task_prompt_plus_the_answer_it_scores(tiny_tokenizer, tiny_llama_dir, variant, length):
    """For the seed and depth of each document the lm-eval task builds, the trainer's builder gives the very same
    prompt (text and token ids, the task's answer budget); a training example is such a prompt followed by the
    answer and ".", and the task's scorer gives that answer full marks."""
    task = _lm_eval_task(f"niah_{variant}_{length}", tiny_llama_dir, [0, 50, 100])
    cfg = NiahTrainConfig(variants=[variant])
    budget = task.config.generation_kwargs["max_gen_toks"]
    for doc in task.eval_docs:
        sample = niah_sample(tiny_tokenizer, cfg.spec(variant, 0), Cell(length, doc["depth_percent"], doc["seed"]))
        assert sample["prompt"] == doc["prompt"] and sample["answer"] == doc["answer"]
        assert sample["input_ids"] == tiny_tokenizer(doc["prompt"])["input_ids"]  # what lm-eval feeds the model
        assert sample["answer_tokens"] == budget and sample["prompt_tokens"] == length - budget
    for index in range(3):
        ids, labels, sample = niah_example(tiny_tokenizer, cfg, variant, length, index)
        n = sample["prompt_tokens"]
        assert ids[:n] == sample["input_ids"] and labels[:n] == [-100] * n and ids[n:] == labels[n:]
        target = tiny_tokenizer.decode(ids[n:])
        assert target == f" {sample['answer']}." and len(ids) - n <= budget
        assert sample["seed"] == training_seed(0, length, index, f"niah_{variant}")
        doc = {**sample, "depth_percent": task.depths[0]}
        assert task.process_results(doc, [target])["acc"] == 1.0  # what the scorer accepts


def test_training_seeds_of_every_family_are_never_evaluation_seeds():
    """Seeds hash the family's name, stay below 2**62, and differ between families and from every evaluation seed
    of a grid like the tasks' (lengths x depths x samples)."""
    seeds = {
        family: {training_seed(base, length, i, family) for base in (0, 1, 2**40) for length in (192, 256, 512)
                 for i in range(300)}
        for family in FAMILIES
    }
    for family, own in seeds.items():
        assert len(own) == 2700 and not any(is_eval_seed(s) for s in own)
        evaluation = {eval_doc_seed(EVAL_SEED_BASE, family.replace("_", "-", 1) if family != "passkey" else family,
                                    length, depth, k)
                      for length in (192, 256, 512) for depth in range(0, 101, 10) for k in range(5)}
        assert all(is_eval_seed(s) for s in evaluation) and not own & evaluation
    assert not seeds["passkey"] & seeds["niah_single_1"]  # each family draws its own examples


@pytest.mark.parametrize("family, length", [("passkey", 192), ("niah_single_1", 256), ("niah_multikey_1", 512),
                                            ("niah_multikey_2", 256)])
def test_no_training_example_is_an_evaluation_document(tiny_tokenizer, family, length):
    """Build the evaluation documents of a small grid and a set of training examples at the same length: no
    prompt (text or token ids) is shared."""
    if family == "passkey":
        docs, _ = build_passkey_docs(tiny_tokenizer, PasskeySpec(), Grid(length, [0, 25, 50, 75, 100], 2))
        examples = [passkey_example(tiny_tokenizer, PasskeyConfig(lengths=[length]), length, i) for i in range(40)]
    else:
        variant = family.removeprefix("niah_")
        docs, _ = build_niah_docs(tiny_tokenizer, niah_spec(variant), Grid(length, [0, 25, 50, 75, 100], 2))
        cfg = NiahTrainConfig(variants=[variant])
        examples = [niah_example(tiny_tokenizer, cfg, variant, length, i) for i in range(40)]
    evaluation = {tuple(tiny_tokenizer(d["prompt"])["input_ids"]) for d in docs}
    assert len(evaluation) == len(docs) == 10 and all(is_eval_seed(d["seed"]) for d in docs)
    for ids, _, sample in examples:
        assert tuple(sample["input_ids"]) not in evaluation and tuple(ids) not in evaluation
        assert sample["prompt"] not in {d["prompt"] for d in docs} and not is_eval_seed(sample["seed"])


# --- recipe ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("override, message", [
    ("finetune.niah.variants=[single_9]", r"finetune\.niah\.variants\[0\]='single_9' is unknown: choose among "
                                          r"single_1, single_2, single_3, multikey_1"),
    ("finetune.niah.variants=[single_1,single_1]", r"names a variant twice"),
    ("finetune.niah.num_examples=0", r"finetune\.niah\.num_examples=0 must be > 0"),
    ("finetune.niah.n_digits=19", r"finetune\.niah\.n_digits=19 must be <= 18"),
    ("finetune.niah.loss_on=key", r"finetune\.niah\.loss_on='key' is unknown"),
    ("finetune.niah.lengths=[]", r"finetune\.niah\.lengths is empty"),
    ("finetune.niah.lengths=[256,-1]", r"finetune\.niah\.lengths\[1\]=-1 must be > 0"),
    (["finetune.niah.variants=[single_1,multikey_1]", "finetune.niah.lengths={multikey_1: [512]}"],
     r"finetune\.niah\.lengths has no entry for variant 'single_1'"),
    ("finetune.niah.lengths={single_1: [256], single_2: [256]}", r"finetune\.niah\.lengths\.single_2 names a variant"),
    ("finetune.niah.lengths={single_1: []}", r"finetune\.niah\.lengths\.single_1 is empty"),
    ("finetune.niah.lengths=big", r"finetune\.niah\.lengths='big' has the wrong type"),
    ("finetune.niah.varients=[single_1]", r"unknown recipe key 'finetune\.niah\.varients'"),
])
def test_niah_recipe_errors_name_the_key(override: str | list[str], message: str):
    extra = [override] if isinstance(override, str) else override
    with pytest.raises(RecipeError, match=message):
        load_recipe(None, ["finetune.niah.variants=[single_1]", *extra])


def test_niah_recipe_lengths():
    r = load_recipe(None, ["finetune.passkey.lengths=[192,256]", "finetune.niah.variants=[single_1,multikey_1]",
                           "finetune.niah.lengths={single_1: [256], multikey_1: [384, 512]}"])
    niah = r.finetune.niah
    assert niah.lengths_for("single_1", [192, 256]) == [256] and niah.lengths_for("multikey_1", []) == [384, 512]
    assert NiahTrainConfig().variants == [] and NiahTrainConfig().lengths_for("single_1", [128]) == [128]
    assert load_recipe(None).finetune is None


# --- schedule --------------------------------------------------------------------------------------------------
def fake_pools(spec: dict[tuple[str, int], int], lengths, schedule="mix") -> RetrievalPools:
    """Pools of `rows` rows whose every token is the row's number, so a batch shows which rows it took."""
    pools = {key: Batch(torch.arange(rows).repeat_interleave(key[1]).view(rows, key[1]), torch.zeros(rows, key[1]))
             for key, rows in spec.items()}
    return RetrievalPools(pools, lengths, schedule, seed=0)


def test_length_schedules():
    mix = fake_pools({("passkey", n): 4 for n in (128, 256, 512)}, [128, 256, 512], "mix")
    assert [mix.length_at(s, s / 9) for s in range(6)] == [128, 256, 512, 128, 256, 512]
    ramp = fake_pools({("passkey", n): 4 for n in (128, 256, 512)}, [128, 256, 512], "ramp")
    # a curriculum: short sequences first, longer ones join the mix (a run of 9 steps)
    assert [ramp.length_at(s, s / 9) for s in range(9)] == [128, 128, 128, 256, 128, 256, 128, 256, 512]
    # the stage follows `done`, not the step: a time-limited run reaches its last stage when its budget says so
    assert [ramp.length_at(s, 0.7) for s in range(3)] == [128, 256, 512]
    assert ramp.length_at(1, 0.0) == 128 and ramp.length_at(2, 1.0) == 512
    cursors: dict[str, int] = {}
    batch = mix.global_batch(1, 3, cursors, 0.1)
    assert batch.input_ids.shape == (3, 256) and cursors == {"256": 3} and batch.source == "passkey"


def test_families_take_turns_within_each_length():
    pools = fake_pools({("passkey", 128): 4, ("passkey", 256): 4, ("niah_single_1", 256): 4,
                        ("niah_multikey_1", 256): 4, ("niah_multikey_1", 512): 4}, [128, 256, 512])
    assert [pools.pool_at(s, s / 12) for s in range(9)] == [
        ("passkey", 128), ("passkey", 256), ("niah_multikey_1", 512),
        ("passkey", 128), ("niah_single_1", 256), ("niah_multikey_1", 512),
        ("passkey", 128), ("niah_multikey_1", 256), ("niah_multikey_1", 512),
    ]
    cursors: dict[str, int] = {}
    sources = [pools.global_batch(s, 2, cursors, s / 12).source for s in range(9)]
    assert sources.count("passkey") == 4 and sources.count("niah_multikey_1") == 4
    assert cursors == {"128": 6, "256": 2, "niah_single_1:256": 2, "niah_multikey_1:256": 2,
                       "niah_multikey_1:512": 6}
    with pytest.raises(ValueError, match=r"no retrieval pool at lengths \[1024\]"):
        fake_pools({("passkey", 128): 4}, [128, 1024])


def test_text_steps_do_not_alias_the_retrieval_cycle():
    """With a text batch every 2nd step and two lengths, both lengths (and both families) still train: the pools
    count retrieval steps only."""
    assert [retrieval_step(s, 4) for s in range(9)] == [0, 1, 2, 2, 3, 4, 5, 5, 6]  # steps 3 and 7 are text
    pools = fake_pools({("passkey", 128): 4, ("passkey", 192): 4, ("niah_single_1", 192): 4}, [128, 192])
    text = PackedText(torch.zeros(8, 64, dtype=torch.int64).numpy(), seed=0)
    data = WithText(pools, text, 2)
    cursors: dict[str, int] = {}
    seen = [(b.source, b.input_ids.shape[1]) for b in (data.global_batch(s, 1, cursors, s / 12) for s in range(12))]
    assert set(seen) == {("passkey", 128), ("passkey", 192), ("niah_single_1", 192), ("text", 64)}


def test_global_batches_depend_only_on_the_seed_and_cursors():
    """Exact resume: a fresh pool set, given the cursors saved at step k, serves the batches an uninterrupted run
    serves from step k on."""
    spec = {("passkey", 128): 5, ("niah_single_1", 128): 3, ("niah_multikey_1", 256): 7}

    def run(pools, steps, cursors):
        return [pools.global_batch(s, 2, cursors, s / 20).input_ids[:, 0].tolist() for s in steps]

    straight = run(fake_pools(spec, [128, 256]), range(20), {})
    cursors: dict[str, int] = {}
    first = run(fake_pools(spec, [128, 256]), range(8), cursors)
    saved = json.loads(json.dumps(cursors))  # as the trainer state stores them
    assert first + run(fake_pools(spec, [128, 256]), range(8, 20), saved) == straight
    niah = [r for batch in straight[1::2] for r in batch]  # every 256 step: the NIAH pool of 7 rows
    assert sorted(niah[:7]) == list(range(7))  # an epoch visits every row once


# --- runs ------------------------------------------------------------------------------------------------------
def pretrain_then_finetune_args(tmp_path, corpus, lengths: str, *extra: str) -> list[str]:  # noqa: F811
    """Pretrain 2 steps into tmp_path/pre; return a 4-step finetune command (batch 2) writing tmp_path/ft."""
    pre = tmp_path / "pre"
    if not (pre / "latest").exists():
        assert training_main(["train", *overrides(corpus, pre, **{"run.max_steps": 2, "run.save_every": 2})]) == 0
    return [
        "finetune", "--from", str(pre / "latest"), f"finetune.run.output_dir={tmp_path / 'ft'}",
        f"finetune.passkey.lengths={lengths}", "finetune.passkey.num_examples=8", "finetune.optim.batch_size=2",
        "finetune.optim.micro_batch_size=1", "finetune.optim.warmup_steps=1", "finetune.run.max_steps=4",
        "finetune.run.log_every=1", *extra,
    ]


def resume_after_step_2(ft, args: list[str], records: list[dict]) -> list[dict]:
    """Rerun a 6-step finetuning as if it had been killed after its step-2 save; its log afterwards."""
    for later in ("checkpoint-000004", "checkpoint-000006", "latest"):
        path = ft / later
        path.unlink() if path.is_symlink() else shutil.rmtree(path)
    (ft / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records[:2]))
    assert training_main(args) == 0
    return log(ft)


def test_finetune_runs_from_a_pretrained_checkpoint(tmp_path, corpus):  # noqa: F811
    ft = tmp_path / "ft"
    args = pretrain_then_finetune_args(
        tmp_path, corpus, "[160,192]", "finetune.run.save_every=2", "finetune.passkey.schedule=mix"
    )
    assert training_main(args) == 0
    records = log(ft)
    assert [r["seq_len"] for r in records] == [160 - 9, 192 - 9, 160 - 9, 192 - 9]  # prompt + key + "."
    state = json.loads((ft / "latest" / "trainer_state.json").read_text())
    assert state["step"] == 4 and state["cursors"] == {"160": 4, "192": 4}
    assert (ft / "latest" / "tokenizer.json").is_file()  # the tokenizer comes from --from
    assert training_main([*args[:3], f"finetune.run.output_dir={tmp_path / 'x'}", "finetune.passkey.lengths=[8]"]) == 1


def test_finetune_mixes_corpus_text_in_every_kth_step(tmp_path, corpus):  # noqa: F811
    ft = tmp_path / "ft"
    # the recipe's data section (the corpus the text steps read) comes from the same overrides as pretraining's
    args = pretrain_then_finetune_args(
        tmp_path, corpus, "[160]", *overrides(corpus, tmp_path / "unused"), "finetune.text_every=2",
        "finetune.run.save_every=4",
    )
    assert training_main(args) == 0
    records = log(ft)
    assert [r["source"] for r in records] == ["passkey", "text", "passkey", "text"]
    assert [r["seq_len"] for r in records] == [160 - 9, 64, 160 - 9, 64]  # text rows: the recipe's data section
    state = json.loads((ft / "latest" / "trainer_state.json").read_text())
    assert state["cursors"] == {"160": 4, "text": 4}
    assert all(r["losses"] == {r["source"]: r["loss"]} for r in records)  # one step per log line

    # Logged every 2nd step, a line still carries each source's curve (the logged step alone shows only "text")
    shutil.rmtree(ft)
    assert training_main([*args, "finetune.run.log_every=2"]) == 0
    coarse = log(ft)
    assert [r["source"] for r in coarse] == ["text", "text"]
    for line, (first, second) in zip(coarse, zip(records[::2], records[1::2])):
        assert line["losses"] == pytest.approx({first["source"]: first["loss"], second["source"]: second["loss"]},
                                               rel=1e-5)


def test_finetune_with_niah_logs_each_family_and_resumes_exactly(tmp_path, corpus):  # noqa: F811
    """passkey at 160 and 256, NIAH single_1 at 256: steps cycle 160 / 256, and at 256 passkey and NIAH take turns;
    a run resumed from its step-2 checkpoint logs the same losses as the uninterrupted run."""
    ft = tmp_path / "ft"
    args = pretrain_then_finetune_args(
        tmp_path, corpus, "[160,256]", "finetune.niah.variants=[single_1]", "finetune.niah.lengths=[256]",
        "finetune.niah.num_examples=6", "finetune.run.max_steps=6", "finetune.run.save_every=2",
    )
    assert training_main(args) == 0
    records = log(ft)
    assert [r["source"] for r in records] == ["passkey", "passkey", "passkey", "niah_single_1", "passkey", "passkey"]
    assert [r["seq_len"] for r in records] == [151, 256 - 9, 151, 256 - 16 + 9, 151, 256 - 9]  # answer + "."
    state = json.loads((ft / "latest" / "trainer_state.json").read_text())
    assert state["cursors"] == {"160": 6, "256": 4, "niah_single_1:256": 2}
    assert sorted(p.name for p in (ft / "data").iterdir()) == ["niah_single_1", "passkey"]

    resumed = resume_after_step_2(ft, args, records)
    assert [r["step"] for r in resumed] == [1, 2, 3, 4, 5, 6]
    assert [r["source"] for r in resumed] == [r["source"] for r in records]
    assert [r["loss"] for r in resumed[2:]] == pytest.approx([r["loss"] for r in records[2:]], rel=1e-5)


def test_finetune_names_the_niah_variant_and_length_the_builder_refuses(tmp_path, corpus, capsys):  # noqa: F811
    args = pretrain_then_finetune_args(
        tmp_path, corpus, "[160]", "finetune.niah.variants=[multikey_1]", "finetune.niah.num_examples=2",
    )
    capsys.readouterr()
    assert training_main(args) == 1
    err = capsys.readouterr().err
    assert "finetune.niah: variant multikey_1 at length 160 is refused by the NIAH builder" in err
    assert "Traceback" not in err


def test_niah_answer_budgets_cycle_over_the_examples(tiny_tokenizer):
    """`answer_tokens: [16, 32]` puts the prompt's end where the tasks put it at short and long lengths (16 tokens
    before a 32-token segment boundary, or on one); rows of unequal length are right-padded, no loss on padding."""
    from infini_bench.training.retrieval_data import _stack

    cfg = NiahTrainConfig(variants=["single_1"], answer_tokens=[16, 32])
    rows = [niah_example(tiny_tokenizer, cfg, "single_1", 256, i) for i in range(4)]
    assert [r[2]["prompt_tokens"] for r in rows] == [240, 224, 240, 224]
    stacked = _stack([r[:2] for r in rows], pad_id=0)
    assert stacked["input_ids"].shape[1] == max(len(r[0]) for r in rows)
    short = len(rows[1][0])
    assert (stacked["labels"][1, short:] == -100).all() and list(stacked["input_ids"][1, :short]) == rows[1][0]
    with pytest.raises(RecipeError, match=r"finetune.niah.answer_tokens\[1\]"):
        NiahTrainConfig(variants=["single_1"], answer_tokens=[16, 0]).check("finetune.niah")
    with pytest.raises(RecipeError, match="finetune.niah.answer_tokens is empty"):
        NiahTrainConfig(variants=["single_1"], answer_tokens=[]).check("finetune.niah")
    from infini_bench.quickstart import RECIPE

    for value, parsed in (("[16, 32]", [16, 32]), ("24", 24), ("null", None)):
        assert load_recipe(RECIPE, [f"finetune.niah.answer_tokens={value}"]).finetune.niah.answer_tokens == parsed


def test_a_time_limited_finetune_reaches_its_last_curriculum_stage(tmp_path, corpus, monkeypatch):  # noqa: F811
    """max_steps 1000 with a budget of 2 s at 0.25 s a step (a fake clock): the budget stops the run at step 8, and
    the ramp and the learning-rate decay follow the budget, not the 8/1000 of the steps, to their ends."""
    from types import SimpleNamespace

    from infini_bench.training import loop

    ticks = iter(range(10**6))
    monkeypatch.setattr(loop, "time", SimpleNamespace(perf_counter=lambda: 0.25 * next(ticks)))  # 2 reads a step
    ft = tmp_path / "ft"
    args = pretrain_then_finetune_args(
        tmp_path, corpus, "[160,192]", "finetune.passkey.schedule=ramp", "finetune.run.max_steps=1000",
        "finetune.run.max_minutes=0.0333333333", "finetune.run.save_every=1000", "finetune.optim.lr=3e-3",
        "finetune.optim.min_lr=1e-4",
    )
    assert training_main(args) == 0
    records = log(ft)
    assert [r["step"] for r in records] == list(range(1, 9))
    assert [r["done"] for r in records] == pytest.approx([0.125 * k for k in range(1, 9)], abs=1e-3)
    assert [r["seq_len"] for r in records] == [151] * 4 + [151, 183] * 2  # 192 joins at half the budget
    # the 8th step ran at the rate for 7/8 of the schedule (step 875 of 1000); by steps alone it would be 3e-3
    assert records[-1]["lr"] == pytest.approx(3e-3 * lr_factor(875, OptimConfig(3e-3, 1e-4, warmup_steps=1), 1000))
