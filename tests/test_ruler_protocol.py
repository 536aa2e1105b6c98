"""`protocol=ruler`: RULER's own documents (fixtures written by RULER's niah.py), made exact in our tokens.

The fixtures in tests/fixtures/ruler_niah/ were written once by NVIDIA/RULER's scripts/data/synthetic/niah.py
(tests/fixtures/ruler_niah/README.md records the commit, the command and the tokenizer). Our documents must equal
them byte for byte, except where our exact length cuts (or continues) the haystack after the last needle: the
test locates that place and checks that nothing but haystack text differs there.
"""
from __future__ import annotations

import copy
import gzip
import hashlib
import json
from pathlib import Path

import pytest
from tokenizers import processors

from infini_bench.data import CACHE_ENV, tokenizer_view
from infini_bench.data.haystack import FILLER
from infini_bench.data.grid import NIAH_DEPTHS, Grid
from infini_bench.data.niah import niah_spec
from infini_bench.data.ruler_niah import RULER_SEED, RulerDocPlan
from infini_bench.data.ruler_words import SortedPairs

pytest.importorskip("wonderwords")
FIXTURES = Path(__file__).parent / "fixtures" / "ruler_niah"
#: sha256 of the fixture tokenizer's sorted vocabulary (the tiny tokenizer of conftest.py), first 16 hex digits
FIXTURE_TOKENIZER = "9ae4cb606d668166"
LINE_CASES = [(v, n, {1024: {"multikey_3": 48}.get(v, 32), 4096: 128}[n])
              for v in ("single_1", "multikey_2", "multikey_3") for n in (1024, 4096)]


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))


def _vocab_sha(tokenizer) -> str:
    return hashlib.sha256(json.dumps(sorted(tokenizer.get_vocab().items())).encode()).hexdigest()[:16]


def _with_bos(tokenizer):
    """The same tokenizer, adding BOS to every input (as Llama's do): RULER counts no BOS, so the draws stay."""
    tok = copy.deepcopy(tokenizer)
    bos = tok.bos_token
    tok.backend_tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, tok.convert_tokens_to_ids(bos))]
    )
    return tok


def _rows(name: str) -> list[dict]:
    with gzip.open(FIXTURES / f"{name}.jsonl.gz", "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def _check_same_but_cut(ours: str, ruler: str, needles: list[str], keys: list[str], tail: str) -> None:
    """`ours` equals `ruler` except in one stretch after the last needle and before the question (`tail`)."""
    assert ours.endswith(tail) and ruler.endswith(tail), "the question and answer prefix must be RULER's"
    s = len(tail)
    p = 0
    while p < min(len(ours), len(ruler)) - s and ours[p] == ruler[p]:
        p += 1
    last_needle_end = max(ruler.index(n) + len(n) for n in needles)
    assert p >= last_needle_end, f"texts differ at char {p}, before RULER's last needle ends ({last_needle_end})"
    for middle in (ours[p : len(ours) - s], ruler[p : len(ruler) - s]):
        assert not any(n in middle for n in needles)
        assert not any(k in middle for k in keys)
        assert "?" not in middle


@pytest.mark.parametrize("bos", [False, True], ids=["no-bos", "bos"])
@pytest.mark.parametrize("variant,length,budget", LINE_CASES)
def test_line_haystacks_are_rulers_documents(tiny_tokenizer, variant, length, budget, bos):
    assert _vocab_sha(tiny_tokenizer) == FIXTURE_TOKENIZER, "the fixture was written with another tokenizer"
    rows = _rows(f"niah_{variant}_{length}")
    view = tokenizer_view(_with_bos(tiny_tokenizer) if bos else tiny_tokenizer, True)
    assert view.n_special == int(bos)
    plan = RulerDocPlan(view, niah_spec(variant, answer_tokens=budget), Grid(length, range(0, 101, 10), len(rows), RULER_SEED))
    for i, row in enumerate(rows):
        doc, _ = plan.doc(i)
        ruler = row["input"] + row["answer_prefix"]
        assert doc["prompt_tokens"] + budget == length
        assert view.count(doc["prompt"]) == doc["prompt_tokens"]
        assert doc["answers"] == row["outputs"] and doc["ruler_tokens"] + budget == row["length"]
        assert doc["gen_prefix"] == row["answer_prefix"].lstrip()
        draw = plan.generator.document(i)
        assert draw.user == row["input"] and draw.prefix == row["answer_prefix"]  # RULER's text, unchanged
        _check_same_but_cut(doc["prompt"], ruler, draw.needles, draw.queries, draw.user[draw.user.rindex("\n"):] + draw.prefix)
        if variant == "single_1":  # the noise haystack: whatever differs is filler
            assert set(doc["prompt"].split("\n")[1:-1]) <= {FILLER, draw.needles[0]} | {
                line for line in doc["prompt"].split("\n")[1:-1] if FILLER.startswith(line)}
        assert 0 <= doc["needle_depth_percent"] <= 100 and doc["depth_percent"] in range(0, 101, 10)


def test_documents_are_drawn_in_rulers_order(tiny_tokenizer):
    """Document i depends on documents 0..i-1 (one generator, as RULER's script): asking for document 5 first
    gives the same document as building 0..5 in order."""
    rows = _rows("niah_multikey_2_1024")
    view = tokenizer_view(tiny_tokenizer, True)
    plan = RulerDocPlan(view, niah_spec("multikey_2", answer_tokens=32), Grid(1024, [0, 50, 100], 8, RULER_SEED))
    assert plan.doc(5)[0]["answers"] == rows[5]["outputs"]
    assert plan.doc(2)[0]["answers"] == rows[2]["outputs"]


def test_sorted_pairs_is_rulers_sorted_set():
    """The lazy key list equals sorted(set(...)) on lists with every hard case: one adjective a prefix of another
    (interleaved blocks), spaces and capitals (sort before '-' and letters) and duplicate pairs."""
    adjectives = ["blue", "blue-eyed", "ad hoc", "ad", "Early", "x-rated", "x", "wide", "wide", "zany"]
    nouns = ["cat", "eyed-cat", "rated-dog", "ATM", "contact lens", "dog", "hoc-x", "aardvark"]
    expected = sorted(set(f"{a}-{n}" for a in adjectives for n in nouns))
    pairs = SortedPairs(adjectives, nouns)
    assert len(pairs) == len(expected)
    assert [pairs[i] for i in range(len(pairs))] == expected
    assert pairs[-1] == expected[-1] and pairs[2:5] == expected[2:5]


# -- the option on lm-eval's tasks ------------------------------------------------------------------------------
def _load(task: str, metadata: dict):
    from lm_eval.tasks import TaskManager

    from infini_bench.tasks import TASKS_DIR

    return TaskManager(include_path=TASKS_DIR, include_defaults=False, metadata=metadata).load([task])["tasks"][task]


def test_task_builds_rulers_documents_with_rulers_defaults(tiny_llama_dir):
    rows = _rows("niah_single_1_1024")
    task = _load("niah_single_1_1k", {"pretrained": str(tiny_llama_dir), "protocol": "ruler"})
    md = task.config.metadata
    assert md["protocol"] == "ruler" and md["samples"] == 500 and md["seed"] == 42 and task.n_docs == 500
    assert md["docs_built"] == 1  # lazily: one document when the task is made
    docs = [task.eval_docs[i] for i in range(3)]
    assert [d["answers"] for d in docs] == [r["outputs"] for r in rows[:3]]
    assert all(d["protocol"] == "ruler" and d["depth_percent"] in range(0, 101, 10) for d in docs)
    scores = task.process_results(docs[0], [" " + docs[0]["answer"]])
    assert scores["acc"] == 1.0 and scores["ruler_match"] == 1.0


def test_essay_variant_without_rulers_essays_is_one_clear_sentence(tiny_llama_dir):
    with pytest.raises(ValueError, match=r"protocol=ruler needs RULER's essay haystack.*essays=.*PaulGrahamEssays\.json"):
        _load("niah_single_2_4k", {"pretrained": str(tiny_llama_dir), "protocol": "ruler"})
    with pytest.raises(ValueError, match=r"protocol must be 'grid' .* or 'ruler' .*got 'rular'"):
        _load("niah_single_1_1k", {"pretrained": str(tiny_llama_dir), "protocol": "rular"})


def test_per_length_niah_group_is_the_plain_mean_of_the_eight_variants():
    """infinibench_niah_<len> is what RULER reports per length: the eight variants at that length, each counted
    once (not weighted by their document counts); the cross-length groups no longer call themselves RULER's."""
    import yaml

    from infini_bench.tasks import TASKS_DIR
    from infini_bench.tasks.names import NIAH_VARIANTS

    text = (Path(TASKS_DIR) / "suites" / "infinibench_niah_4k.yaml").read_text()
    group = yaml.safe_load(text)
    assert group["task"] == [f"niah_{v}_4k" for v in NIAH_VARIANTS] and len(NIAH_VARIANTS) == 8
    assert all(m["weight_by_size"] is False for m in group["aggregate_metric_list"])
    assert not (Path(TASKS_DIR) / "suites" / "infinibench_niah_256.yaml").exists()  # three variants only at 256
    upto = (Path(TASKS_DIR) / "suites" / "infinibench_niah_upto_4k.yaml").read_text()
    assert "not RULER's per-length average" in upto


def test_report_states_what_differs_from_rulers_protocol():
    from infini_bench.reports.ruler_table import ruler_differences

    ruler = {"protocol": "ruler", "samples": 500, "seed": 42, "haystack": "noise", "answer_tokens": 128, "n_digits": 7}
    assert ruler_differences("niah_single_1_4k", ruler, 500) == []
    grid = {"samples": 5, "depths": list(range(0, 101, 10)), "haystack": "essay", "answer_tokens": 128}
    differs = ruler_differences("niah_single_2_8k", grid, 55)
    assert differs[0].startswith("documents: this project's depth x length grid")
    assert "55 documents per length (RULER: 500)" in differs
    assert "essay haystack: the standard library's docstrings (RULER: Paul Graham's essays)" in differs
    short = ruler_differences("niah_single_1_1k", {**ruler, "answer_tokens": 32}, 100)
    assert short == ["--limit: 100 of the 500 documents evaluated", "answer budget 32 tokens (RULER: 128)",
                     "length 1k is below RULER's shortest, 4K"]


def test_wrapper_refuses_lm_evals_libra_passkey_by_name():
    from infini_bench.harness import check_builtin_names

    with pytest.raises(ValueError, match=r"--tasks passkey is lm-eval's own LIBRA passkey task .*passkey_4k"):
        check_builtin_names(["passkey_1k", "passkey"])
    check_builtin_names(["passkey_1k", "passkey_*", "niah_single_1"])  # ours, a glob, lm-eval's RULER port: fine


def test_line_haystack_is_cut_into_a_blank_line_only_as_a_last_resort(tiny_tokenizer):
    """The exact-length cut ends a line haystack right after a newline (a blank line before the question) only when
    the tokenizer's count can be hit nowhere else nearby: rare (tasks/README.md's anchor table)."""
    from infini_bench.data.niah import build_niah_docs

    docs = [d for v in ("single_1", "multikey_2")
            for d in build_niah_docs(tiny_tokenizer, niah_spec(v), Grid(1024, NIAH_DEPTHS, 3))[0]]
    blank = [d for d in docs if "\n\n" in d["prompt"]]
    assert len(blank) <= len(docs) // 10, f"{len(blank)} of {len(docs)} documents have a blank line"
