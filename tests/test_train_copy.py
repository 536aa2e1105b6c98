"""In-context copying steps (`finetune.copy_steps`): what a copy row holds, that the first k finetuning steps are
copy steps and retrieval then starts from its own step 0, exact resume, and the recipe's check."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from infini_bench.training.copy_data import GAP, SPAN, CopySpans, ordinary_ids
from infini_bench.training.commands import main as training_main
from infini_bench.training.recipe import RecipeError, load_recipe

from test_train_retrieval import pretrain_then_finetune_args, private_cache  # noqa: F401  (autouse fixture)
from test_train_runs import corpus, log  # noqa: F401  (module fixture and helpers)


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """[start, end) of each run of True in `mask`."""
    edges = np.flatnonzero(np.diff(np.concatenate([[0], mask.astype(int), [0]])))
    return list(zip(edges[::2], edges[1::2]))


def test_copy_rows_repeat_each_span_after_a_gap_and_label_only_the_repeat(tiny_tokenizer):
    ids = ordinary_ids(tiny_tokenizer)
    assert not set(ids) & set(tiny_tokenizer.all_special_ids) and len(ids) == len(tiny_tokenizer) - len(
        set(tiny_tokenizer.all_special_ids))
    source = CopySpans(256, ids, seed=3)
    spans = 0
    for index in range(20):
        row, labels = source.row(index)
        assert row.shape == labels.shape == (256,) and set(row.tolist()) <= set(ids)
        labelled = labels != -100
        assert (labels[labelled] == row[labelled]).all()
        for start, end in _runs(labelled):
            # the labelled tokens (all of a repeat but its first) continue a copy of a span seen SPAN..GAP+SPAN back
            repeat, span = start - 1, end - start + 1
            assert SPAN[0] <= span <= SPAN[1]
            offsets = [d for d in range(span, span + GAP[1] + 1)
                       if repeat - d >= 0 and (row[repeat - d : end - d] == row[repeat:end]).all()]
            assert offsets, (index, start, end)
            spans += 1
        assert (row, labels)[0].tolist() == source.row(index)[0].tolist()  # a pure function of seed and index
    assert spans >= 40  # several spans packed per row
    assert not np.array_equal(CopySpans(256, ids, seed=4).row(0)[0], source.row(0)[0])


def test_copy_rows_refuse_what_cannot_hold_a_copy():
    with pytest.raises(ValueError, match="at least 2 ordinary token ids"):
        CopySpans(256, [5], seed=0)
    with pytest.raises(ValueError, match="copy rows of 10 tokens"):
        CopySpans(10, range(100), seed=0)


@pytest.mark.parametrize("value, message", [(-1, "must be a whole number >= 0"), (1.5, "expected int"),
                                            ("many", "expected int"), (True, "expected int")])
def test_copy_steps_must_be_a_whole_number(value, message):
    with pytest.raises(RecipeError, match=rf"finetune\.copy_steps='?{value}'?.* {message}"):
        load_recipe(None, ["finetune.passkey.lengths=[128]", f"finetune.copy_steps={value}"])


def test_finetune_starts_with_copy_steps_then_retrieval_and_resumes_exactly(tmp_path, corpus):  # noqa: F811
    ft = tmp_path / "ft"
    args = pretrain_then_finetune_args(
        tmp_path, corpus, "[160,192]", "finetune.copy_steps=3", "finetune.passkey.schedule=mix",
        "finetune.run.max_steps=6", "finetune.run.save_every=2",
    )
    assert training_main(args) == 0
    records = log(ft)
    assert [r["source"] for r in records] == ["copy", "copy", "copy", "passkey", "passkey", "passkey"]
    # copy rows are max(passkey.lengths) tokens; retrieval starts at its own step 0 (length 160 first)
    assert [r["seq_len"] for r in records] == [192, 192, 192, 160 - 9, 192 - 9, 160 - 9]
    state = json.loads((ft / "latest" / "trainer_state.json").read_text())
    assert state["cursors"] == {"copy": 6, "160": 4, "192": 2}

    for later in ("checkpoint-000004", "checkpoint-000006", "latest"):  # as if killed after the step-2 save
        path = ft / later
        path.unlink() if path.is_symlink() else shutil.rmtree(path)
    (ft / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records[:2]))
    assert training_main(args) == 0
    resumed = log(ft)
    assert [r["source"] for r in resumed] == [r["source"] for r in records]
    assert [r["loss"] for r in resumed[2:]] == pytest.approx([r["loss"] for r in records[2:]], rel=1e-5)
