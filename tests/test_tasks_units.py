"""Task-side pieces without running a model: scoring, metric names, glob expansion, task construction errors."""
from __future__ import annotations

import argparse

import pytest

from infini_bench.data import CACHE_ENV, HaystackError, PerplexitySourceError, PromptTooShort, TokenizerError
from infini_bench.harness import list_tasks, prepare_run_args
from infini_bench.tasks import TASKS_DIR, expand_task_patterns, project_tasks, task_names
from infini_bench.tasks.base_task import LengthSkipError
from infini_bench.tasks.names import CONTEXT_LENGTH_NAMES, bucket_metric, depth_metric, format_length, parse_length
from infini_bench.tasks.scoring import all_values_recalled, first_integer, first_integer_matches


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


# -- names ---------------------------------------------------------------------------------------------------------
def test_metric_and_length_names():
    assert [depth_metric(d) for d in (0, 5, 50.0, 100)] == ["acc_d000", "acc_d005", "acc_d050", "acc_d100"]
    assert depth_metric(12.5) == "acc_d012p5"
    assert bucket_metric(0, 1024) == "token_perplexity_pos_0_1k"
    assert bucket_metric(1024, 2048) == "token_perplexity_pos_1k_2k"
    assert bucket_metric(1 << 20, None) == "token_perplexity_pos_1m_end"
    assert [parse_length(n) for n in ("1k", "128k", "1m", "3000")] == [1024, 131072, 1048576, 3000]
    assert format_length(2048) == "2k" and format_length(1500) == "1500"
    with pytest.raises(ValueError, match="'12q'"):
        parse_length("12q")


# -- the YAMLs -----------------------------------------------------------------------------------------------------
def test_every_family_has_every_length_and_suites_stop_at_their_limit():
    tasks = set(task_names("task"))
    for prefix in ("passkey", "niah", "niah_multikey", "niah_multivalue"):
        assert {f"{prefix}_{n}" for n in CONTEXT_LENGTH_NAMES} <= tasks
    assert {"ppl_stdlib", "ppl_files", "ppl_pg19"} <= tasks
    infos = {t.name: t for t in project_tasks()}
    for name, info in infos.items():
        if info.kind == "task" and info.context_length:
            assert info.context_length == parse_length(name.rsplit("_", 1)[1]), name
        if info.kind == "group" and "_upto_" in name:
            limit = parse_length(name.rsplit("_", 1)[1])
            assert info.members and all(infos[m].context_length <= limit for m in info.members), name
    assert infos["infinibench_passkey_upto_4k"].members == ("passkey_256", "passkey_512", "passkey_1k", "passkey_2k", "passkey_4k")
    assert infos["infinibench_ppl"].members == ("ppl_stdlib",)


# -- glob expansion ------------------------------------------------------------------------------------------------
def test_globs_select_exactly_this_projects_tasks():
    passkey = expand_task_patterns(["passkey_*"])
    assert passkey == [f"passkey_{n}" for n in CONTEXT_LENGTH_NAMES]
    niah = expand_task_patterns(["niah_*"])
    assert len(niah) == 39 and not any(n.startswith("niah_single") for n in niah) and "niah_multikey_1" not in niah
    assert expand_task_patterns(["ppl_*"]) == ["ppl_stdlib"]
    assert expand_task_patterns(["ppl_*"], {"files": ["a.txt"]}) == ["ppl_files", "ppl_stdlib"]
    assert expand_task_patterns(["ppl_pg19", "hellaswag", "passkey_1k,niah_2k"]) == [
        "ppl_pg19", "hellaswag", "passkey_1k", "niah_2k"
    ]
    assert expand_task_patterns(["arc_*"]) == ["arc_*"]  # not ours: left to lm-eval
    assert expand_task_patterns(["infinibench_passkey_upto_2k"]) == ["infinibench_passkey_upto_2k"]
    with pytest.raises(ValueError, match="ppl_pg19 \\(only by exact name\\)"):
        expand_task_patterns(["ppl_pg*"])


def test_wrapper_rewrites_include_path_and_drops_tasks_too_long(tiny_llama_dir, capsys):
    args = argparse.Namespace(
        tasks=["passkey_*", "niah_1k"], model_args={"pretrained": str(tiny_llama_dir)}, metadata={"max_length": 2048},
        include_path=None,
    )
    prepare_run_args(args)
    assert args.tasks == ["passkey_256", "passkey_512", "passkey_1k", "passkey_2k", "niah_1k"]
    assert args.include_path == TASKS_DIR
    err = capsys.readouterr().err
    assert "leaving out 9 task(s)" in err and "passkey_1m (1048576 tokens)" in err
    args = argparse.Namespace(tasks=["passkey_4k"], model_args={}, metadata={}, include_path="/my/tasks")
    prepare_run_args(args)
    assert args.include_path == ["/my/tasks", TASKS_DIR] and args.tasks == ["passkey_4k"]


def test_list_tasks_prints_names_and_include_path(capsys):
    assert list_tasks() == 0
    out = capsys.readouterr().out
    assert f"include path: {TASKS_DIR}" in out
    assert "passkey_1m" in out and "infinibench_niah_upto_8k" in out and "55 tasks, 53 groups" in out


# -- building tasks the way lm-eval does -------------------------------------------------------------------------
def _load(task: str, metadata: dict):
    from lm_eval.tasks import TaskManager

    return TaskManager(include_path=TASKS_DIR, include_defaults=False, metadata=metadata).load([task])["tasks"][task]


def test_task_built_by_lm_eval_has_depth_metrics_and_reads_the_cache(tiny_llama_dir):
    metadata = {"pretrained": str(tiny_llama_dir), "depths": [0, 50, 100], "samples": 1}
    task = _load("passkey_2k", metadata)
    assert set(task.aggregation()) == {"acc", "acc_d000", "acc_d050", "acc_d100"}
    assert task.config.generation_kwargs["max_gen_toks"] == 16
    assert task.config.metadata["docs_from_cache"] is False and task.config.metadata["skipped_docs"] == 0
    docs = list(task.eval_docs)
    assert [d["depth_percent"] for d in docs] == [0, 100, 50]
    again = _load("passkey_2k", metadata)
    assert again.config.metadata["docs_from_cache"] is True and list(again.eval_docs) == docs


@pytest.mark.parametrize(
    "task, metadata, error, message",
    [
        ("passkey_1k", {"pretrained": None}, TokenizerError, "cannot resolve a tokenizer"),
        ("passkey_1k", {"pretrained": "/no/such/model"}, TokenizerError, "'/no/such/model'"),
        ("passkey_1k", {"depths": [0, 120]}, ValueError, "depth 120 is outside 0-100"),
        ("niah_1k", {"samples": 0}, ValueError, "samples must be a whole number >= 1, got 0"),
        ("passkey_1k", {"context_length": 60}, PromptTooShort, "context_length=60"),
        ("niah_1k", {"haystack": "wikipedia"}, HaystackError, "unknown haystack source 'wikipedia'"),
        ("passkey_1k", {"max_length": 512}, LengthSkipError, "max_length=512"),
        ("ppl_files", {"files": ["/no/such/file.txt"]}, FileNotFoundError, "'/no/such/file.txt'"),
        ("ppl_files", {}, PerplexitySourceError, "needs files="),
        ("ppl_pg19", {}, PerplexitySourceError, "needs the hub dataset 'emozilla/pg19'"),
    ],
)
def test_bad_task_options_fail_early_naming_the_value(tiny_llama_dir, task, metadata, error, message):
    metadata = {"pretrained": str(tiny_llama_dir), **metadata}
    with pytest.raises(error, match=message):
        _load(task, metadata)
