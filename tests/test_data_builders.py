"""Data builders without lm-eval: determinism, seed namespace, grid order, cache, corpus split, bad input."""
from __future__ import annotations

import gzip
import json
import logging
import sysconfig
from pathlib import Path

import pytest

from infini_bench.data import (
    CACHE_ENV,
    EVAL_SEED_FLAG,
    PASSKEY_DEPTHS,
    Cell,
    Grid,
    PasskeySpec,
    HaystackError,
    PromptTooShort,
    build_niah_docs,
    build_niah_sample,
    build_passkey_docs,
    build_passkey_sample,
    build_ppl_doc,
    build_ppl_docs,
    niah_spec,
    check_training_seed,
    is_eval_seed,
    resolve_depths,
    spread_order,
    stdlib_files,
    stdlib_split_of,
    tokenizer_view,
)
from infini_bench.data.cache import cache_root


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    return tmp_path / "cache"


# -- determinism and seeds ---------------------------------------------------------------------------------------
def test_same_seed_same_document_and_different_seed_different_key(tiny_tokenizer):
    a = build_passkey_sample(tiny_tokenizer, PasskeySpec(), Cell(800, 30, 17))
    b = build_passkey_sample(tiny_tokenizer, PasskeySpec(), Cell(800, 30, 17))
    c = build_passkey_sample(tiny_tokenizer, PasskeySpec(), Cell(800, 30, 18))
    assert a == b
    assert a["answer"] != c["answer"]
    assert len(a["answer"]) == 5 and a["answer"][0] != "0"


def test_eval_documents_use_eval_seeds_that_training_refuses(tiny_tokenizer):
    docs, _ = build_passkey_docs(tiny_tokenizer, PasskeySpec(), Grid(600, [0, 100], 2))
    seeds = [d["seed"] for d in docs]
    assert len(set(seeds)) == len(seeds) == 4
    assert all(is_eval_seed(s) and s >= EVAL_SEED_FLAG for s in seeds)
    for seed in seeds:
        with pytest.raises(ValueError, match=str(seed)):
            check_training_seed(seed)
    assert check_training_seed(12345) == 12345 and not is_eval_seed(12345)
    rebuilt = build_passkey_sample(tiny_tokenizer, PasskeySpec(answer_tokens=16), Cell(600, docs[0]["depth_percent"], docs[0]["seed"]))
    assert rebuilt["prompt"] == docs[0]["prompt"] and rebuilt["answer"] == docs[0]["answer"]


def test_doc_order_spreads_depths_so_a_limit_spans_the_grid(tiny_tokenizer):
    assert spread_order(5) == [0, 4, 2, 1, 3]
    assert sorted(spread_order(21)) == list(range(21))
    docs, _ = build_passkey_docs(tiny_tokenizer, PasskeySpec(), Grid(600, PASSKEY_DEPTHS, 2))
    assert len(docs) == 2 * len(PASSKEY_DEPTHS)
    assert [d["depth_percent"] for d in docs[:3]] == [0, 100, 50]
    assert {d["sample_index"] for d in docs[:21]} == {0}
    for doc in docs:
        assert {"context_length", "depth_percent", "answer", "seed", "prompt_tokens", "answer_tokens"} <= doc.keys()
        assert doc["prompt_tokens"] + doc["answer_tokens"] == doc["context_length"] == 600


def test_niah_variants(tiny_tokenizer):
    mk = build_niah_sample(tiny_tokenizer, niah_spec("multikey_1"), Cell(1500, 50, 4))
    assert mk["num_needles"] == 4 and len(set(mk["needle_keys"])) == 4 and mk["key"] in mk["needle_keys"]
    assert mk["answers"] == [mk["needle_values"][mk["needle_keys"].index(mk["key"])]] and len(mk["answer"]) == 7
    mv = build_niah_sample(tiny_tokenizer, niah_spec("multivalue"), Cell(1500, 50, 4))
    assert set(mv["needle_keys"]) == {mv["key"]} and sorted(mv["answers"]) == sorted(mv["needle_values"])
    assert len(mv["answers"]) == 4
    mq = build_niah_sample(tiny_tokenizer, niah_spec("multiquery"), Cell(1500, 50, 4))
    assert sorted(mq["queries"]) == sorted(mq["needle_keys"]) and len(mq["answers"]) == 4
    assert mq["query"] == ", ".join(mq["queries"][:3]) + ", and " + mq["queries"][3]
    for sample in (mk, mv, mq):
        for needle_position, depth in zip(sample["needle_positions"], sample["needle_depths_requested"]):
            assert 0 <= needle_position < sample["prompt_tokens"] and 0 <= depth <= 100
        assert abs(sample["needle_depth_percent"] - 50) < 5  # the first answer's needle sits at the grid depth


def test_needles_follow_depth_order(tiny_tokenizer):
    positions = [build_passkey_sample(tiny_tokenizer, PasskeySpec(), Cell(3000, d, 1))["needle_position"] for d in (0, 25, 50, 75, 100)]
    assert positions == sorted(positions) and len(set(positions)) == 5


# -- haystacks ---------------------------------------------------------------------------------------------------
def test_stdlib_and_file_haystacks(tiny_tokenizer, tmp_path):
    prose = build_niah_sample(tiny_tokenizer, niah_spec("single_1", haystack="stdlib"), Cell(1500, 50, 2))
    assert prose["haystack"] == "essay:stdlib" and "grass is green" not in prose["prompt"]
    assert build_niah_sample(tiny_tokenizer, niah_spec("single_2"), Cell(1500, 50, 2))["prompt"] == prose["prompt"]
    notes = tmp_path / "notes.txt"
    notes.write_text("Alpha beta gamma. Delta epsilon zeta! Eta theta iota? Kappa lambda mu. " * 40)
    own = build_passkey_sample(tiny_tokenizer, PasskeySpec(haystack="files", haystack_options={"haystack_files": [str(notes)]}), Cell(900, 50, 2))
    assert own["haystack"] == f"essay:{notes}" and "Kappa lambda" in own["prompt"]
    assert len(tiny_tokenizer(own["prompt"])["input_ids"]) == own["prompt_tokens"]
    same = build_passkey_sample(tiny_tokenizer, PasskeySpec(haystack="essay", haystack_options={"essays": str(notes)}), Cell(900, 50, 2))
    assert same["prompt"] == own["prompt"]
    essays = tmp_path / "PaulGrahamEssays.json"  # the file RULER's download script writes
    essays.write_text(json.dumps({"text": "Nu xi omicron. Pi rho sigma.\n\nTau upsilon phi. " * 60}))
    pg = build_niah_sample(tiny_tokenizer, niah_spec("single_2", haystack_options={"essays": str(essays)}), Cell(1200, 50, 2))
    assert pg["haystack"] == f"essay:{essays}" and "Tau upsilon phi. Nu xi" in pg["prompt"]


# -- cache ---------------------------------------------------------------------------------------------------------
def test_second_build_reads_the_cache(tiny_tokenizer, private_cache):
    first, hit1 = build_niah_docs(tiny_tokenizer, niah_spec("single_1"), Grid(700, [0, 50], 1))
    second, hit2 = build_niah_docs(tiny_tokenizer, niah_spec("single_1"), Grid(700, [0, 50], 1))
    assert (hit1, hit2) == (False, True) and first == second
    assert cache_root() == private_cache and len(list(private_cache.glob("docs_niah_single_1/*.jsonl.gz"))) == 2
    more, hit = build_niah_docs(tiny_tokenizer, niah_spec("single_1"), Grid(700, [0, 50], 2))
    assert hit is False and more[:2] == first  # each document is cached on its own: more samples reuse these
    _, hit3 = build_niah_docs(tiny_tokenizer, niah_spec("single_1"), Grid(700, [0, 50], 1, 99))
    assert hit3 is False  # another seed is another entry


@pytest.mark.parametrize("damage", ["truncate", "garbage", "no_manifest", "wrong_count"])
def test_corrupt_or_partial_cache_is_rebuilt(tiny_tokenizer, private_cache, damage, caplog):
    docs, _ = build_passkey_docs(tiny_tokenizer, PasskeySpec(), Grid(600, [0, 100], 1))
    data = next(private_cache.glob("docs_passkey/*.jsonl.gz"))
    manifest = data.with_name(data.name.replace(".jsonl.gz", ".manifest.json"))
    if damage == "truncate":
        data.write_bytes(data.read_bytes()[: len(data.read_bytes()) // 2])
    elif damage == "garbage":
        data.write_bytes(b"not gzip at all")
    elif damage == "no_manifest":
        manifest.unlink()
    else:
        meta = json.loads(manifest.read_text())
        lines = gzip.decompress(data.read_bytes()).decode().splitlines()
        assert len(lines) == meta["n_docs"] == 1
        meta["n_docs"] = 2
        manifest.write_text(json.dumps(meta))
    with caplog.at_level(logging.WARNING):
        again, hit = build_passkey_docs(tiny_tokenizer, PasskeySpec(), Grid(600, [0, 100], 1))
    assert hit is False and again == docs
    assert "corrupt or partial" in caplog.text
    _, hit = build_passkey_docs(tiny_tokenizer, PasskeySpec(), Grid(600, [0, 100], 1))
    assert hit is True


# -- corpus split --------------------------------------------------------------------------------------------------
def test_stdlib_split_is_deterministic_disjoint_and_skips_tests():
    root = Path(sysconfig.get_paths()["stdlib"])
    train, evaluation, everything = stdlib_files("train"), stdlib_files("eval"), stdlib_files("all")
    assert set(train).isdisjoint(evaluation) and set(train) | set(evaluation) == set(everything)
    assert 0.04 < len(evaluation) / len(everything) < 0.2
    for path in evaluation:
        assert stdlib_split_of(path.relative_to(root).as_posix()) == "eval"
    for path in everything:
        parts = path.relative_to(root).parts
        assert not {"site-packages", "dist-packages", "test", "tests"} & set(parts[:-1])
    assert stdlib_files("eval") == evaluation
    with pytest.raises(ValueError, match="'validation'"):
        stdlib_files("validation")


# -- perplexity documents ------------------------------------------------------------------------------------------
def test_ppl_doc_prefix_cuts_are_exact_prefixes(tiny_tokenizer):
    text = (Path(sysconfig.get_paths()["stdlib"]) / "ast.py").read_text()
    doc = build_ppl_doc(tiny_tokenizer, "ast.py", text, doc_tokens=5000)
    ids = tiny_tokenizer(doc["text"])["input_ids"]
    assert doc["truncated"] and len(ids) == doc["n_tokens"] == 5000
    assert doc["prefix_nominal"] == [1024, 2048, 4096] == doc["prefix_tokens"]
    for cut, n in zip(doc["prefix_chars"], doc["prefix_tokens"]):
        assert tiny_tokenizer(doc["text"][:cut])["input_ids"] == ids[:n]


def test_ppl_docs_from_files_and_min_length(tiny_tokenizer, tmp_path):
    (tmp_path / "a.txt").write_text("short text.")
    (tmp_path / "b.txt").write_text("A longer document with many words in it. " * 100)
    docs, _ = build_ppl_docs(tiny_tokenizer, "files", {"files": [str(tmp_path)]}, min_doc_tokens=50)
    assert [Path(d["name"]).name for d in docs] == ["b.txt"]


# -- bad input: clear errors naming the value ----------------------------------------------------------------------
def test_bad_inputs_raise_clear_errors(tiny_tokenizer, tmp_path):
    with pytest.raises(ValueError, match=r"depth 150 is outside 0-100"):
        build_passkey_sample(tiny_tokenizer, PasskeySpec(), Cell(1000, 150, 1))
    with pytest.raises(ValueError, match=r"depth -5 is outside 0-100"):
        resolve_depths([0, -5], None, [0])
    with pytest.raises(PromptTooShort, match=r"context_length=40 .*need \d+ tokens"):
        build_passkey_sample(tiny_tokenizer, PasskeySpec(answer_tokens=16), Cell(40, 50, 1))
    with pytest.raises(ValueError, match=r"samples must be a whole number >= 1, got 0"):
        build_passkey_docs(tiny_tokenizer, PasskeySpec(), Grid(1000, PASSKEY_DEPTHS, 0))
    with pytest.raises(HaystackError, match=r"unknown haystack 'wikipedia'"):
        build_passkey_sample(tiny_tokenizer, PasskeySpec(haystack="wikipedia"), Cell(1000, 50, 1))
    missing = str(tmp_path / "nope.txt")
    with pytest.raises(FileNotFoundError, match="nope.txt"):
        build_ppl_docs(tiny_tokenizer, "files", {"files": [missing]})
    with pytest.raises(HaystackError, match="nope.txt' does not exist"):
        build_passkey_sample(tiny_tokenizer, PasskeySpec(haystack="files", haystack_options={"haystack_files": missing}), Cell(1000, 50, 1))
    with pytest.raises(HaystackError, match="nope.txt' does not exist"):
        build_niah_sample(tiny_tokenizer, niah_spec("single_2", haystack_options={"essays": missing}), Cell(1000, 50, 1))
    (tmp_path / "blank.txt").write_text(" \n\t ")
    with pytest.raises(HaystackError, match="blank.txt holds no text"):
        build_niah_sample(tiny_tokenizer, niah_spec("single_1", haystack="essay", haystack_options={"essays": str(tmp_path / "blank.txt")}), Cell(1000, 50, 1))
    with pytest.raises(ValueError, match="unknown NIAH variant 'multikey': choose one of single_1, .*multiquery"):
        build_niah_sample(tiny_tokenizer, niah_spec("multikey"), Cell(1000, 50, 1))
    with pytest.raises(ValueError, match="cannot load tokenizer '/no/such/model'"):
        tokenizer_view("/no/such/model")
