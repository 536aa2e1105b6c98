"""Passkey finetuning data: the shared builder, training seeds only, answer-only loss, the length schedule, and a
finetune run end to end."""
from __future__ import annotations

import json

import torch

from infini_bench.data.passkey import build_passkey_docs
from infini_bench.data.seeds import is_eval_seed
from infini_bench.training.batches import Batch, PasskeyPools
from infini_bench.training.commands import main as training_main
from infini_bench.training.passkey_data import passkey_example, training_seed
from infini_bench.training.recipe import PasskeyConfig

from test_train_runs import corpus, log, overrides  # noqa: F401  (module fixture and helpers)


def test_examples_are_the_task_prompt_plus_the_key(tiny_tokenizer):
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


def test_training_seeds_never_build_an_evaluation_document(tiny_tokenizer):
    seeds = {training_seed(base, length, i) for base in (0, 1, 2**40) for length in (192, 1024) for i in range(500)}
    assert len(seeds) == 3000 and not any(is_eval_seed(s) for s in seeds)
    docs, _ = build_passkey_docs(tiny_tokenizer, 192, depths=[0, 50, 100], samples=2)
    assert all(is_eval_seed(d["seed"]) for d in docs) and not seeds & {d["seed"] for d in docs}


def pools(lengths, schedule, max_steps):
    fake = {n: Batch(torch.full((4, n), n), torch.full((4, n), n)) for n in lengths}
    return PasskeyPools(fake, schedule, max_steps, seed=0)


def test_length_schedules():
    mix = pools([128, 256, 512], "mix", 9)
    assert [mix.length_at(s) for s in range(6)] == [128, 256, 512, 128, 256, 512]
    ramp = pools([128, 256, 512], "ramp", 9)  # a curriculum: short sequences first, longer ones join the mix
    assert [ramp.length_at(s) for s in range(9)] == [128, 128, 128, 256, 128, 256, 128, 256, 512]
    cursors: dict[str, int] = {}
    batch = mix.global_batch(1, 3, cursors)
    assert batch.input_ids.shape == (3, 256) and cursors == {"256": 3}


def pretrain_then_finetune_args(tmp_path, corpus, lengths: str, *extra: str) -> list[str]:  # noqa: F811
    """Pretrain 2 steps into tmp_path/pre; return a 4-step finetune command (batch 2) writing tmp_path/ft."""
    pre = tmp_path / "pre"
    assert training_main(["train", *overrides(corpus, pre, **{"run.max_steps": 2, "run.save_every": 2})]) == 0
    return [
        "finetune", "--from", str(pre / "latest"), f"finetune.run.output_dir={tmp_path / 'ft'}",
        f"finetune.passkey.lengths={lengths}", "finetune.passkey.num_examples=8", "finetune.optim.batch_size=2",
        "finetune.optim.micro_batch_size=1", "finetune.optim.warmup_steps=1", "finetune.run.max_steps=4",
        "finetune.run.log_every=1", *extra,
    ]


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
