"""Task-side pieces without running a model: scoring, metric names, glob expansion, task construction errors."""
from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import pytest

from infini_bench.data import CACHE_ENV, HaystackError, PerplexitySourceError, PromptTooShort, TokenizerError
from infini_bench.harness import list_tasks, prepare_run_args
from infini_bench.tasks import TASKS_DIR, expand_task_patterns, project_tasks, task_names
from infini_bench.tasks.base_task import LengthSkipError
from infini_bench.tasks.names import (
    CONTEXT_LENGTH_NAMES,
    NIAH_VARIANTS,
    bucket_metric,
    depth_metric,
    format_length,
    niah_lengths,
    parse_length,
)
from infini_bench.tasks.scoring import (
    all_values_recalled,
    first_integer,
    first_integer_matches,
    ruler_match,
    ruler_postprocess,
    strict_match,
)


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))


# -- scoring -------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "response, correct",
    [
        ("9054.", True),
        (" 09054", True),
        ("The pass key is 9054 and 1234", True),
        (" 9054. Remember it. 9054 is the pass key.", True),
        ("1234, no wait, 9054", False),
        ("no number at all", False),
        ("", False),
        ("90545", False),
        ("-9054", True),
    ],
)
def test_first_integer_scoring(response, correct):
    assert first_integer_matches(response, "9054") is correct


def test_first_integer_and_all_values():
    assert first_integer("The pass key is 9054 and 1234") == 9054
    assert first_integer("nothing") is None
    assert all_values_recalled("They are 11, 33 and 22.", ["22", "11", "33"])
    assert not all_values_recalled("They are 11 and 22.", ["22", "11", "33"])


NUMBERED_LIST = "\n1. 3188131\n2. 5512903\n3. 7744120\n4. 1093382"


@pytest.mark.parametrize(
    "response, answers, ruler, strict",
    [
        ("\n3188131", ["3188131"], 1.0, 1.0),  # a newline first: nothing is cut (no "\n" stop), both count it
        (" the 1st number is 3188131", ["3188131"], 1.0, 0.0),  # RULER's substring finds it; strict reads "1"
        (" 3188131.", ["3188131"], 1.0, 1.0),
        (" 31881310", ["3188131"], 1.0, 0.0),  # a substring, not the number
        ("", ["3188131"], 0.0, 0.0),
        (NUMBERED_LIST, ["3188131", "5512903", "7744120", "1093382"], 1.0, 1.0),
        (" 3188131, 5512903 and 7744120", ["3188131", "5512903", "7744120", "1093382"], 0.75, 0.0),
        (" 1093382\x00 5512903", ["3188131", "5512903", "7744120", "1093382"], 0.5, 0.0),
        (" B59E5D4E-1A2B-4C3D-8E9F-0A1B2C3D4E5F", ["b59e5d4e-1a2b-4c3d-8e9f-0a1b2c3d4e5f"], 1.0, 1.0),
        (" Amber-Canyon", ["amber-canyon"], 1.0, 1.0),
    ],
)
def test_ruler_match_and_strict_scores_on_hand_written_answers(response, answers, ruler, strict):
    kind = "uuids" if "-" in answers[0] and len(answers[0]) == 36 else "words" if "-" in answers[0] else "numbers"
    assert ruler_match(response, answers) == ruler
    assert strict_match(response, answers, kind) == strict


def test_answer_budget_is_rulers_from_4k_and_holds_every_value_below():
    from infini_bench.data.niah import VARIANTS, default_answer_tokens

    assert [default_answer_tokens(n) for n in (256, 512, 1024, 2048, 4096, 1 << 20)] == [16, 16, 32, 64, 128, 128]
    assert default_answer_tokens(512, VARIANTS["multivalue"]) == 64 == default_answer_tokens(512, VARIANTS["multiquery"])
    assert default_answer_tokens(512, VARIANTS["single_3"]) == 48 and default_answer_tokens(4096, VARIANTS["single_3"]) == 128


def test_ruler_postprocess_is_rulers():
    assert ruler_postprocess("  \t\n 123\x01456 \n") == "123\n456"


# -- names ---------------------------------------------------------------------------------------------------------
def test_metric_and_length_names():
    assert [depth_metric(d) for d in (0, 5, 50.0, 100)] == ["acc_d000", "acc_d005", "acc_d050", "acc_d100"]
    assert depth_metric(12.5) == "acc_d012p5" and depth_metric(50, "ruler_match") == "ruler_match_d050"
    assert bucket_metric(0, 1024) == "token_perplexity_pos_0_1k"
    assert bucket_metric(1024, 2048) == "token_perplexity_pos_1k_2k"
    assert bucket_metric(1 << 20, None) == "token_perplexity_pos_1m_end"
    assert [parse_length(n) for n in ("1k", "128k", "1m", "3000")] == [1024, 131072, 1048576, 3000]
    assert format_length(2048) == "2k" and format_length(1500) == "1500"
    with pytest.raises(ValueError, match="'12q'"):
        parse_length("12q")


# -- the YAMLs -----------------------------------------------------------------------------------------------------
def test_committed_yamls_are_the_generators_output():
    from infini_bench.tasks import _generate_configs as generator

    assert generator.differences() == [], "run: python tasks/_generate_configs.py"
    assert len(generator.generate()) == len(list(Path(TASKS_DIR).rglob("*.yaml")))


def test_every_family_has_every_length_and_suites_stop_at_their_limit():
    tasks = set(task_names("task"))
    assert {f"passkey_{n}" for n in CONTEXT_LENGTH_NAMES} <= tasks
    for variant in NIAH_VARIANTS:
        assert {f"niah_{variant}_{n}" for n in niah_lengths(variant)} <= tasks
    assert "niah_multiquery_256" not in tasks and "niah_single_1_256" in tasks  # several needles start at 512
    assert {f"niah_{n}" for n in CONTEXT_LENGTH_NAMES} <= tasks  # the old names, kept
    assert {"ppl_stdlib", "ppl_files", "ppl_pg19"} <= tasks
    infos = {t.name: t for t in project_tasks()}
    for name, info in infos.items():
        if info.kind == "task" and info.context_length:
            assert info.context_length == parse_length(name.rsplit("_", 1)[1]), name
        if info.kind == "group" and "_upto_" in name:
            limit = parse_length(name.rsplit("_", 1)[1])
            assert info.members and all(infos[m].context_length <= limit for m in info.members), name
    assert infos["infinibench_passkey_upto_4k"].members == ("passkey_256", "passkey_512", "passkey_1k", "passkey_2k", "passkey_4k")
    assert len(infos["infinibench_niah_upto_1k"].members) == 3 + 8 + 8
    assert infos["niah_4k"].kind == "task" and infos["niah_4k"].explicit_only  # the old name of niah_single_1_4k
    assert infos["infinibench_ppl"].members == ("ppl_stdlib",)


def test_no_task_or_group_name_is_an_lm_eval_builtin():
    from lm_eval.tasks import TaskManager

    builtin = set(TaskManager(include_defaults=True).all_subtasks) | set(TaskManager(include_defaults=True).all_groups)
    ours = {t.name for t in project_tasks()}
    assert {"niah_single_1", "niah_multikey_1", "passkey", "passkey_with_librusec"} <= builtin  # what we avoid
    assert not ours & builtin


# -- glob expansion ------------------------------------------------------------------------------------------------
def test_globs_select_exactly_this_projects_tasks():
    passkey = expand_task_patterns(["passkey_*"])
    assert passkey == [f"passkey_{n}" for n in CONTEXT_LENGTH_NAMES]
    niah = expand_task_patterns(["niah_*"])
    assert len(niah) == sum(len(niah_lengths(v)) for v in NIAH_VARIANTS)
    assert "niah_single_1" not in niah and "niah_4k" not in niah  # neither RULER's built-ins nor our old names
    assert expand_task_patterns(["niah_single_1_*"]) == [f"niah_single_1_{n}" for n in CONTEXT_LENGTH_NAMES]
    assert expand_task_patterns(["ppl_*"]) == ["ppl_stdlib"]
    assert expand_task_patterns(["ppl_*"], {"files": ["a.txt"]}) == ["ppl_files", "ppl_stdlib"]
    assert expand_task_patterns(["ppl_pg19", "hellaswag", "passkey_1k,niah_single_2_2k", "niah_1k"]) == [
        "ppl_pg19", "hellaswag", "passkey_1k", "niah_single_2_2k", "niah_1k"
    ]
    assert expand_task_patterns(["arc_*"]) == ["arc_*"]  # not ours: left to lm-eval
    assert expand_task_patterns(["infinibench_passkey_upto_2k"]) == ["infinibench_passkey_upto_2k"]
    with pytest.raises(ValueError, match="ppl_pg19 \\(only by exact name\\)"):
        expand_task_patterns(["ppl_pg*"])


def test_wrapper_rewrites_include_path_and_drops_tasks_too_long(tiny_llama_dir, capsys):
    args = argparse.Namespace(
        tasks=["passkey_*", "niah_single_1_1k"], model_args={"pretrained": str(tiny_llama_dir)},
        metadata={"max_length": 2048}, include_path=None,
    )
    prepare_run_args(args)
    assert args.tasks == ["passkey_256", "passkey_512", "passkey_1k", "passkey_2k", "niah_single_1_1k"]
    assert args.include_path == TASKS_DIR
    err = capsys.readouterr().err
    assert "leaving out 9 task(s)" in err and "passkey_1m (1048576 tokens)" in err
    args = argparse.Namespace(tasks=["passkey_4k"], model_args={}, metadata={}, include_path="/my/tasks")
    prepare_run_args(args)
    assert args.include_path == ["/my/tasks", TASKS_DIR] and args.tasks == ["passkey_4k"]


def test_list_tasks_prints_names_and_include_path(capsys):
    assert list_tasks([]) == 0
    out = capsys.readouterr().out
    assert f"include path: {TASKS_DIR}" in out
    n_tasks = 3 * len(CONTEXT_LENGTH_NAMES) + sum(len(niah_lengths(v)) for v in NIAH_VARIANTS) + 3  # passkey, passkey_nanotron, niah_<len>
    n_groups = 2 * len(CONTEXT_LENGTH_NAMES) + 1 + sum(all(n in niah_lengths(v) for v in NIAH_VARIANTS) for n in CONTEXT_LENGTH_NAMES)
    assert "passkey_1m" in out and "infinibench_niah_upto_8k" in out and f"{n_tasks} tasks, {n_groups} groups" in out


# -- building tasks the way lm-eval does -------------------------------------------------------------------------
def _load(task: str, metadata: dict):
    from lm_eval.tasks import TaskManager

    return TaskManager(include_path=TASKS_DIR, include_defaults=False, metadata=metadata).load([task])["tasks"][task]


def test_task_built_by_lm_eval_has_both_scores_per_depth_and_reads_the_cache(tiny_llama_dir):
    metadata = {"pretrained": str(tiny_llama_dir), "depths": [0, 50, 100], "samples": 1, "depth_metrics": True}
    task = _load("passkey_2k", metadata)  # depth_metrics: the per-depth view in the results too, on request
    depth_metrics = {f"{s}_d{d:03d}" for s in ("acc", "ruler_match") for d in (0, 50, 100)}
    assert set(task.aggregation()) == {"acc", "ruler_match"} | depth_metrics
    assert task.config.generation_kwargs["max_gen_toks"] == 16 and task.config.generation_kwargs["until"] == []
    assert task.config.metadata["docs_built"] == 1 and task.config.metadata["skipped_docs"] == 0  # doc 0 only
    docs = list(task.eval_docs)
    assert [d["depth_percent"] for d in docs] == [0, 100, 50]
    assert task.config.metadata["docs_built"] == 3
    again = _load("passkey_2k", metadata)
    assert list(again.eval_docs) == docs
    assert again.config.metadata["docs_from_cache"] == 3 and again.config.metadata["docs_built"] == 0
    scores = task.process_results(docs[2], [" " + docs[2]["answer"] + "."])
    assert scores["acc"] == scores["ruler_match"] == scores["acc_d050"] == scores["ruler_match_d050"] == 1.0
    assert math.isnan(scores["acc_d000"]) and math.isnan(scores["ruler_match_d100"])
    del metadata["depth_metrics"]  # the default: lm-eval's table shows the two scores, no per-depth rows
    headline_only = _load("passkey_2k", metadata)
    assert set(headline_only.aggregation()) == {"acc", "ruler_match"}
    assert headline_only.process_results(docs[2], [" " + docs[2]["answer"] + "."]) == {"acc": 1.0, "ruler_match": 1.0}


def test_limit_bounds_the_build_whatever_the_sample_count(tiny_llama_dir):
    started = time.monotonic()
    task = _load("niah_single_1_4k", {"pretrained": str(tiny_llama_dir), "samples": 1_000_000})
    assert len(task.eval_docs) == 11_000_000
    task.build_all_requests(limit=3)
    assert time.monotonic() - started < 30
    assert len(task.instances) == 3 and task.config.metadata["docs_built"] == 3
    assert [d["depth_percent"] for _, d in task.doc_iterator(limit=3)] == [0, 100, 50]
    assert [i.args[1]["max_gen_toks"] for i in task.instances] == [128] * 3  # RULER's budget at RULER's lengths


def test_model_arguments_lm_eval_folds_into_the_metadata_pass_the_option_check(tiny_llama_dir):
    metadata = {"pretrained": str(tiny_llama_dir), "dtype": "float32", "attn_implementation": "sdpa",
                "rms_norm_eps": 1e-6, "batch_size": 1, "trust_remote_code": False, "samples": 1, "depths": [50]}
    assert len(_load("niah_single_1_1k", metadata).eval_docs) == 1
    assert len(_load("passkey_1k", {**metadata, "mystery": 1, "check_options": False}).eval_docs) == 1


def _chat(extra: str):
    def render(messages, add_generation_prompt=True):
        text = extra + "".join(f"<|{m['role']}|>\n{m['content']}\n" for m in messages)
        return text + ("<|assistant|>\n" if add_generation_prompt else "")
    return render


def test_a_chat_template_counts_in_the_length_and_takes_the_answer_prefix(tiny_llama_dir, tiny_tokenizer):
    task = _load("niah_single_1_1k", {"pretrained": str(tiny_llama_dir), "samples": 1, "depths": [0, 100]})
    task.build_all_requests(apply_chat_template=True, chat_template=_chat("<|system|>\nBe brief.\n"))
    for instance in task.instances:
        prompt, doc = instance.args[0], instance.doc
        assert prompt.startswith("<|system|>\nBe brief.\n<|user|>\nA special magic number is hidden")
        assert prompt.endswith(f"?\n<|assistant|>\n{doc['gen_prefix']}\n")
        assert doc["prompt"] == prompt and len(tiny_tokenizer(prompt)["input_ids"]) == doc["prompt_tokens"] == 1024 - 32


@pytest.mark.parametrize(
    "task, metadata, error, message",
    [
        ("passkey_1k", {"pretrained": None}, TokenizerError, "cannot resolve a tokenizer"),
        ("passkey_1k", {"pretrained": "/no/such/model"}, TokenizerError, "'/no/such/model'"),
        ("passkey_1k", {"depths": [0, 120]}, ValueError, "depth 120 is outside 0-100"),
        ("niah_single_1_1k", {"samples": 0}, ValueError, "samples must be a whole number >= 1, got 0"),
        ("passkey_1k", {"context_length": 60}, PromptTooShort, "context_length=60"),
        ("niah_single_1_1k", {"haystack": "wikipedia"}, HaystackError, "unknown haystack 'wikipedia'"),
        ("niah_single_2_1k", {"essays": "/no/such/essays"}, HaystackError, "'/no/such/essays' does not exist"),
        ("niah_single_2_1k", {"essays": "EMPTY"}, HaystackError, "holds no text"),
        ("passkey_1k", {"haystack": "needle"}, HaystackError, "passkey haystack must be noise or essay"),
        ("niah_single_1_1k", {"type_needle_v": "emojis"}, ValueError, "type_needle_v must be one of .*'emojis'"),
        ("passkey_1k", {"sample": 2, "n_digit": 3}, ValueError, "unknown options 'n_digit' \\(did you mean 'n_digits'"),
        ("niah_single_1_1k", {"dephts": [0]}, ValueError, "'dephts' \\(did you mean 'depths'\\?\\).*Task options: .*samples"),
        ("ppl_stdlib", {"doc_token": 10}, ValueError, "unknown option 'doc_token' \\(did you mean 'doc_tokens'"),
        ("passkey_1k", {"max_length": 512}, LengthSkipError, "max_length=512"),
        ("ppl_files", {"files": ["/no/such/file.txt"]}, FileNotFoundError, "'/no/such/file.txt'"),
        ("ppl_files", {}, PerplexitySourceError, "needs files="),
        ("ppl_pg19", {}, PerplexitySourceError, "needs the hub dataset 'emozilla/pg19'"),
    ],
)
def test_bad_task_options_fail_early_naming_the_value(tiny_llama_dir, tmp_path, task, metadata, error, message):
    if metadata.get("essays") == "EMPTY":
        (tmp_path / "empty.txt").write_text("  \n")
        metadata = {**metadata, "essays": str(tmp_path / "empty.txt")}
    metadata = {"pretrained": str(tiny_llama_dir), **metadata}
    with pytest.raises(error, match=message):
        _load(task, metadata)


def test_a_chat_template_that_leaves_no_room_fails_before_any_model_call(tiny_llama_dir):
    task = _load("passkey_256", {"pretrained": str(tiny_llama_dir), "samples": 1, "depths": [50]})
    with pytest.raises(PromptTooShort, match="the chat template adds \\d+ tokens .* no room .*context_length=256"):
        task.build_all_requests(apply_chat_template=True, chat_template=_chat("You are a helpful assistant. " * 20))
