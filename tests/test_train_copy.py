"""In-context copying steps (`finetune.copy_steps`): what a copy row holds, that the first k finetuning steps are
copy steps and retrieval then starts from its own step 0, exact resume, and the recipe's check."""
from __future__ import annotations

import json

import numpy as np
import pytest

from infini_bench.training.copy_data import GAP, SPAN, CopySpans, ordinary_ids
from infini_bench.training.commands import main as training_main
from infini_bench.training.recipe import RecipeError, load_recipe

from test_train_retrieval import pretrain_then_finetune_args, private_cache, resume_after_step_2  # noqa: F401  (autouse fixture)
from test_train_runs import corpus, log  # noqa: F401  (module fixture and helpers)


def test_copy_rows_repeat_a_span_after_a_gap_and_label_only_the_repeat(tiny_tokenizer):
    ids = ordinary_ids(tiny_tokenizer)
    special = set(tiny_tokenizer.all_special_ids)
    assert special and not set(ids) & special and len(ids) == len(tiny_tokenizer) - len(special)
    source = CopySpans(ids, seed=3)
    shapes = set()
    for start in range(0, 200, 8):
        rows, labels = source.rows(start, 8)
        width = rows.shape[1]
        labelled = np.flatnonzero(labels[0] != -100)
        span = len(labelled) + 1  # every repeated token but the first
        gap = width - 2 * span
        assert SPAN[0] <= span <= SPAN[1] and GAP[0] <= gap <= GAP[1] and set(rows.ravel().tolist()) <= set(ids)
        assert (rows[:, span + gap :] == rows[:, :span]).all()  # the span again, after the gap
        assert (labels[:, : span + gap + 1] == -100).all() and (labels[:, span + gap + 1 :] == rows[:, span + gap + 1 :]).all()
        assert len({tuple(r) for r in rows.tolist()}) == 8  # rows differ
        np.testing.assert_array_equal(source.rows(start, 8)[0], rows)  # a pure function of seed and position
        shapes.add((span, gap))
    assert len(shapes) > 10  # lengths vary from step to step
    assert not np.array_equal(CopySpans(ids, seed=4).rows(0, 8)[0], source.rows(0, 8)[0])


def test_copy_rows_refuse_a_vocabulary_without_tokens_to_copy():
    with pytest.raises(ValueError, match="at least 2 ordinary token ids"):
        CopySpans([5], seed=0)


@pytest.mark.parametrize("value, message", [(-1, "must be a whole number >= 0"), (1.5, "expected int"),
                                            ("many", "expected int"), (True, "expected int")])
def test_copy_steps_must_be_a_whole_number(value, message):
    with pytest.raises(RecipeError, match=rf"finetune\.copy_steps='?{value}'?.* {message}"):
        load_recipe(None, ["finetune.passkey.lengths=[128]", f"finetune.copy_steps={value}"])


def test_finetune_starts_with_copy_steps_then_retrieval_and_resumes_exactly(tmp_path, corpus):  # noqa: F811
    ft = tmp_path / "ft"
    args = pretrain_then_finetune_args(
        tmp_path, corpus, "[160,192]", "finetune.copy_steps=3", "finetune.copy_lr=1e-4", "finetune.passkey.schedule=mix",
        "finetune.run.max_steps=6", "finetune.run.save_every=2",
    )
    assert training_main(args) == 0
    records = log(ft)
    assert [r["source"] for r in records] == ["copy", "copy", "copy", "passkey", "passkey", "passkey"]
    assert [r["seq_len"] for r in records][3:] == [160 - 9, 192 - 9, 160 - 9]  # retrieval from its own step 0
    assert all(2 * SPAN[0] + GAP[0] <= r["seq_len"] <= 2 * SPAN[1] + GAP[1] for r in records[:3])
    assert [r["lr"] for r in records[:3]] == pytest.approx([1e-4] * 3)  # copy_lr, fixed; then the schedule
    assert records[3]["lr"] != pytest.approx(1e-4)
    state = json.loads((ft / "latest" / "trainer_state.json").read_text())
    assert state["cursors"] == {"copy": 6, "160": 4, "192": 2}

    resumed = resume_after_step_2(ft, args, records)
    assert [r["source"] for r in resumed] == [r["source"] for r in records]
    assert [r["loss"] for r in resumed[2:]] == pytest.approx([r["loss"] for r in records[2:]], rel=1e-5)


def test_copy_formation_benchmark_trains_on_the_copy_rows(tiny_tokenizer, tmp_path, capsys):
    """benchmarks/copy_formation.py (RESULTS_train §10): a fresh Llama of the quickstart's shape on the trainer's
    copy rows, the loss printed per window, starting near ln(vocabulary) (nothing to copy from yet)."""
    import importlib.util
    import math
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "copy_formation.py"
    spec = importlib.util.spec_from_file_location("copy_formation", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    tiny_tokenizer.save_pretrained(tmp_path / "tok")
    module.main(["--fresh", "--tokenizer", str(tmp_path / "tok"), "--steps", "4", "--every", "2", "--batch", "2"])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("copy loss; no copying = ln(") and len(lines) == 3
    first = float(lines[1].split("copy loss")[1].split()[0])
    assert abs(first - math.log(len(ordinary_ids(tiny_tokenizer)))) < 1.5
