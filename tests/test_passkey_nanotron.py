"""passkey_nanotron_<len>: nanotron's generate_data.py prompt built exact-length, their published sets read and
filtered as their run_passkey_eval.py does, and their score beside ours; the real lm_eval CLI on a tiny model.

The expected texts are nanotron's: the strings of ``generate_data.py`` (huggingface/nanotron 8aa0ee59,
examples/infinite-context-length) and the starts of their published rows as ``data/exp34/debug_eval_dataset.ipynb``
prints them.
"""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from infini_bench.data.haystack import FILLER
from infini_bench.data.nanotron_sets import NanotronSetError
from infini_bench.data.grid import Cell
from infini_bench.data.passkey import PasskeySpec, build_passkey_sample
from infini_bench.data.passkey_nanotron import NanotronStyle, nanotron_key
from infini_bench.tasks import TASKS_DIR, expand_task_patterns

SOFT = ("There is a pass key hidden inside a lot of irrelevant text. Find it and memorize them. I will quiz you "
        "about what is the pass key later on. \n")
SHOT_1 = ("\n Passage: The gatecode is 312. Remember it. 312 is the gatecode. The grass is green. The sky is blue. The "
          "sun is yellow. Here we go. There and back again. The grass is green. The sky is blue. The sun is yellow. "
          "Here we go. There and back again. What is the gatecode? The gatecode is 312. \n")
QUESTION = "What is the pass key? The pass key is "


def _needle(key: str) -> str:
    return f". The pass key is {key}. Remember it. {key} is the pass key. "


def _stream(n_chars: int) -> str:
    """Their haystack files' text: the filler with a leading space, repeated."""
    unit = " " + FILLER
    return (unit * (n_chars // len(unit) + 2))[:n_chars]


# -- the builder -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("depth", [0, 35, 100])
def test_prompt_is_generate_datas_text_for_a_fixed_key_and_depth(tiny_tokenizer, depth):
    spec = PasskeySpec(n_digits=4, answer_tokens=15, style=NanotronStyle(num_shots=1))
    doc = build_passkey_sample(tiny_tokenizer, spec, Cell(1024, depth, 7))
    key, prompt = doc["answer"], doc["prompt"]
    assert doc["prompt_tokens"] == len(tiny_tokenizer(prompt)["input_ids"]) == 1024 - 15
    head = SOFT + SHOT_1 + " "  # PROMPT = "{} {}. {}": soft prompt, a space, the context
    assert prompt.startswith(head) and prompt.endswith(". " + QUESTION)
    context = prompt[len(head): -len(". " + QUESTION)]
    if depth == 0:  # their row at depth 0: "... later on. \n . The pass key is 80. Remember it. ... \n Passage:  The"
        assert context.startswith(_needle(key) + "\n Passage:  The grass is green.")
        hay = context[len(_needle(key) + "\n Passage: "):]
        assert hay == _stream(len(hay))
    else:
        assert context.startswith("\n Passage:  The grass is green.")
        before, after = context[len("\n Passage: "):].split(_needle(key))
        assert before + after == _stream(len(before + after))  # the haystack goes on after the needle, no restart
        if depth == 100:
            assert after == ""
        else:
            assert after.startswith(" ") and not before.endswith(" ")  # cut after a whole word, as their token cut
            assert abs(doc["needle_depth_percent"] - depth) < 3


def test_shots_and_keys_are_nanotrons(tiny_tokenizer):
    prompts = [build_passkey_sample(tiny_tokenizer, PasskeySpec(n_digits=3, answer_tokens=15, style=NanotronStyle(num_shots=shots)),
                                    Cell(2048, 50, 3))["prompt"] for shots in range(4)]
    for shots, prompt in enumerate(prompts):
        found = [k for k in ("gatecode is 312", "vault key is 415", "encrypted message is 34.") if k in prompt]
        assert len(found) == shots
    assert "What is the gatecode? The vault key is 415. \n \n Passage:  The grass" in prompts[2]  # their 2-shot row
    keys = {int(nanotron_key(seed, 2)) for seed in range(3000)}
    assert 34 not in keys and min(keys) == 10 and max(keys) == 98  # NumPy's randint(10, 99): 99 never drawn
    assert {int(nanotron_key(seed, 1)) for seed in range(500)} == set(range(1, 9))
    assert 312 not in {int(nanotron_key(seed, 3)) for seed in range(5000)}


# -- the task, as lm-eval builds it ----------------------------------------------------------------------------
def _load(task: str, metadata: dict):
    from lm_eval.tasks import TaskManager

    return TaskManager(include_path=TASKS_DIR, include_defaults=False, metadata=metadata).load([task])["tasks"][task]


def test_task_scores_nanotrons_rule_and_ours_per_depth(tiny_llama_dir):
    task = _load("passkey_nanotron_1k", {"pretrained": str(tiny_llama_dir), "depths": [0, 50, 100], "samples": 1,
                                         "num_shots": 2, "depth_metrics": True})
    assert task.config.generation_kwargs["max_gen_toks"] == 15
    docs = list(task.eval_docs)
    assert [d["depth_percent"] for d in docs] == [0, 100, 50] and all(d["num_shots"] == 2 for d in docs)
    assert all(len(d["answer"]) == 4 and d["prompt_tokens"] == 1024 - 15 for d in docs)
    key = docs[2]["answer"]
    contains_only = task.process_results(docs[2], [f"The pass key is 12. {key}"])
    assert contains_only["nanotron_match"] == contains_only["nanotron_match_d050"] == 1.0
    assert contains_only["acc"] == contains_only["acc_d050"] == 0.0  # ours: the first number must be the key
    assert math.isnan(contains_only["nanotron_match_d000"])
    both = task.process_results(docs[2], [f"{key}. Remember it."])
    assert both["acc"] == both["nanotron_match"] == 1.0
    assert {"nanotron_match", "nanotron_match_d100", "acc_d100", "ruler_match_d000"} <= set(task.aggregation())
    plain = _load("passkey_nanotron_1k", {"pretrained": str(tiny_llama_dir), "depths": [0, 50, 100], "samples": 1})
    assert set(plain.aggregation()) == {"acc", "ruler_match", "nanotron_match"}  # per depth: the samples log


def test_globs_keep_the_two_passkey_families_apart():
    assert not any("nanotron" in t for t in expand_task_patterns(["passkey_*"]))
    assert expand_task_patterns(["passkey_nanotron_*"])[:3] == ["passkey_nanotron_256", "passkey_nanotron_512",
                                                                "passkey_nanotron_1k"]


# -- their published sets, from a local fixture in their schema -------------------------------------------------
def _their_selection(dataset, depth_percent, num_shots, num_digits, seed, num_samples):
    """run_passkey_eval.py's load_and_filter_dataset (nanotron 8aa0ee59), the loading left out."""
    filtered = dataset.filter(lambda x: x["depth_percent"] == depth_percent and x["num_shots"] == num_shots)
    if num_digits > 0:
        filtered = filtered.filter(lambda x: x["num_digits"] == num_digits)
    shuffled = filtered.shuffle(seed=seed)
    return shuffled.select(range(min(num_samples, len(shuffled))))


@pytest.fixture(scope="module")
def their_set(tmp_path_factory, tiny_tokenizer):
    """A tiny set with their columns: 2 depths x 2 shot counts x 2 digit counts x 3 prompts, saved three ways."""
    import datasets

    rows = []
    for depth in (0, 50):
        for shots in (0, 1):
            for digits in (2, 3):
                for i in range(3):
                    spec = PasskeySpec(n_digits=digits, answer_tokens=15, style=NanotronStyle(num_shots=shots))
                    doc = build_passkey_sample(tiny_tokenizer, spec, Cell(400, depth, 1000 * depth + 100 * shots + 10 * digits + i))
                    rows.append({"id": f"row-{len(rows)}", "prompt": doc["prompt"], "answer": int(doc["answer"]),
                                 "context_length": 1024, "token_count": 1004, "num_shots": shots,
                                 "num_digits": digits, "depth_percent": depth})
    root = tmp_path_factory.mktemp("nanotron_set")
    ds = datasets.Dataset.from_list(rows)
    ds.to_parquet(str(root / "train-00000-of-00001.parquet"))
    (root / "jsonl").mkdir()
    ds.to_json(str(root / "jsonl" / "train.jsonl"))
    ds.save_to_disk(str(root / "saved"))
    return root, ds


def test_published_set_rows_are_those_run_passkey_eval_picks(tiny_llama_dir, their_set):
    root, ds = their_set
    for source in (root / "train-00000-of-00001.parquet", root / "jsonl", root / "saved"):
        task = _load("passkey_nanotron_1k", {"pretrained": str(tiny_llama_dir), "dataset": str(source),
                                             "depths": [0, 50], "num_shots": 1, "num_digits": 3, "samples": 2,
                                             "seed": 5})
        docs = list(task.eval_docs)
        for depth in (0, 50):
            theirs = _their_selection(ds, depth, 1, 3, 5, 2)
            ours = [d for d in docs if d["depth_percent"] == depth]
            assert [d["set_id"] for d in ours] == theirs["id"]
            assert [d["prompt"] for d in ours] == theirs["prompt"]  # their prompt, unchanged
            assert [d["answer"] for d in ours] == [str(a) for a in theirs["answer"]]
        assert task.config.metadata["nanotron_set"] == str(source)


def test_published_set_defaults_are_run_1024_passkey_evals(tiny_llama_dir, their_set):
    root, ds = their_set
    task = _load("passkey_nanotron_1k", {"pretrained": str(tiny_llama_dir), "dataset": str(root / "saved")})
    md = task.config.metadata
    assert (md["seed"], md["samples"], md["num_shots"], md["num_digits"]) == (69, 50, 0, 0)
    assert len(task.eval_docs) == 12  # 0 shots, any digits: 6 rows at each of the two depths the set has
    doc = task.eval_docs[0]
    assert doc["prompt"].endswith(QUESTION) and doc["gen_prefix"] == "The pass key is "
    scores = task.process_results(doc, [doc["answer"] + ". Remember it."])
    assert scores["nanotron_match"] == scores["acc"] == 1.0


def _write_rows(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.mark.parametrize(
    "metadata, message",
    [
        ({"num_shots": 4}, "num_shots must be 0, 1, 2 or 3 \\(nanotron's generate_data.py has three shot passages\\), got 4"),
        ({"num_shots": "two"}, "num_shots must be 0, 1, 2 or 3 .* got 'two'"),
        ({"num_digits": 0}, "num_digits must be a whole number >= 1, got 0"),
        ({"num_digits": 80}, "num_digits must be a whole number from 1 to 64, got 80"),
        ({"num_shot": 1}, "unknown option 'num_shot' \\(did you mean 'num_shots'"),
        ({"dataset": "nanotron", "context_length": 2048}, "only for 1024 tokens .*16384 tokens .* not for 2048 tokens"),
        ({"dataset": "nanotron/llama3-1024-passkey-retrieval-eval"},
         "cannot load nanotron's passkey set 'nanotron/llama3-1024-passkey-retrieval-eval' from the hub .*"
         "--metadata dataset=DIR"),
        ({"dataset": "NO_ANSWER"}, "lacks the field\\(s\\) answer \\(it has: prompt, depth_percent\\)"),
        ({"dataset": "OTHER_LENGTH"}, "has context_length 16384, not 1024: run the passkey_nanotron task of that length"),
        ({"dataset": "NOT_A_SET"}, "is not a nanotron passkey set: give a .parquet, .jsonl or .json file"),
        ({"dataset": "NO_SHOTS_3", "num_shots": 3},
         "no row of the passkey set .* matches depths .* num_shots=3 \\(the set has depth_percent \\[50\\]; num_shots \\[0\\]"),
    ],
)
def test_bad_input_is_one_clear_sentence(tiny_llama_dir, tmp_path, metadata, message):
    files = {
        "NO_ANSWER": lambda: _write_rows(tmp_path / "a.jsonl", [{"prompt": "x", "depth_percent": 0}]),
        "OTHER_LENGTH": lambda: _write_rows(tmp_path / "b.jsonl", [{"prompt": "x " + QUESTION, "answer": 12,
                                                                     "depth_percent": 50, "context_length": 16384}]),
        "NO_SHOTS_3": lambda: _write_rows(tmp_path / "d.jsonl", [{"prompt": "x " + QUESTION, "answer": 12,
                                                                   "depth_percent": 50, "num_shots": 0}]),
        "NOT_A_SET": lambda: _write_rows(tmp_path / "c.txt", [{"prompt": "x"}]),
    }
    if metadata.get("dataset") in files:
        metadata = {**metadata, "dataset": str(files[metadata["dataset"]]())}
    with pytest.raises((ValueError, NanotronSetError), match=message):
        _load("passkey_nanotron_1k", {"pretrained": str(tiny_llama_dir), **metadata})


# -- the real lm_eval CLI --------------------------------------------------------------------------------------
def test_lm_eval_cli_runs_passkey_nanotron_1k_with_one_shot(tiny_llama_dir, tmp_path):
    out = tmp_path / "out"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
           "CUDA_VISIBLE_DEVICES": "", "INFINI_BENCH_CACHE": str(tmp_path / "cache")}
    argv = [sys.executable, "-m", "lm_eval", "--model", "hf",
            "--model_args", f"pretrained={tiny_llama_dir},dtype=float32", "--device", "cpu",
            "--tasks", "passkey_nanotron_1k", "--include_path", TASKS_DIR,
            "--metadata", json.dumps({"num_shots": 1, "depths": [0, 50, 100], "samples": 1, "depth_metrics": True}),
            "--output_path", str(out), "--log_samples"]
    proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-6000:]
    results = json.loads(next(out.rglob("results_*.json")).read_text())["results"]["passkey_nanotron_1k"]
    for name in ("acc", "ruler_match", "nanotron_match", "acc_d050", "nanotron_match_d000", "nanotron_match_d100"):
        assert 0.0 <= results[f"{name},none"] <= 1.0
    samples = [json.loads(line) for line in next(out.rglob("samples_passkey_nanotron_1k_*.jsonl")).read_text().splitlines()]
    assert len(samples) == 3
    for sample in samples:
        doc = sample["doc"]
        assert doc["num_shots"] == 1 and doc["prompt"].startswith(SOFT + SHOT_1 + " ")
        assert sample["arguments"]["gen_args_0"]["arg_0"] == doc["prompt"]
        assert doc["prompt_tokens"] + 15 == 1024
        response = sample["resps"][0][0]
        assert sample["nanotron_match"] == float(doc["answer"] in response)
