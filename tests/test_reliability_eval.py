"""`infini-bench eval` refuses, before any model is loaded, what would otherwise end wrong or late (issue 14, cases
3, 5, 7 and 9): a --use_cache filled by another model, an unwritable --output_path, a truncated model.safetensors,
a damaged cache database, --limit -1, a read-only INFINI_BENCH_CACHE, ppl_files on an empty file; and its --help
names --model infini and this project's tasks first. In-process calls of the wrapper on tiny checkpoints."""
from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
from pathlib import Path

import pytest

from infini_bench import harness
from infini_bench.cli import main as cli_main
from test_adapter_support import build_infini_checkpoint, infini_dir  # noqa: F401


@pytest.fixture(autouse=True)
def documents_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("INFINI_BENCH_CACHE", str(tmp_path / "docs_cache"))


class CurrentStderr:
    """Whatever sys.stderr is at the time of writing (pytest swaps it per test)."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


def wrapper(argv: list[str]) -> int:
    """`infini-bench eval ARGV` in this process. lm-eval's log handler keeps the stderr of the test that made it
    (closed once that test ends): make it write to the current one."""
    for handler in logging.getLogger("lm_eval").handlers:
        if type(handler) is logging.StreamHandler:  # lm-eval's own, not pytest's capture handlers
            handler.stream = CurrentStderr()
    return harness.main(argv)


def evaluate(ckpt: Path, *extra: str, model: str = "infini", tasks: str = "passkey_256") -> int:
    return wrapper(["--model", model, "--model_args", f"pretrained={ckpt}", "--tasks", tasks, "--device", "cpu",
                    "--metadata", "samples=1", "depths=[50]", *extra])


@pytest.fixture
def no_model_loads(monkeypatch):
    """Any model construction fails the test: the refusals must come first."""
    from lm_eval.api.model import LM

    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded before the refusal")

    monkeypatch.setattr(LM, "create_from_arg_obj", classmethod(refuse))
    monkeypatch.setattr(LM, "create_from_arg_string", classmethod(refuse))


def error_line(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err.strip().splitlines()[-1]


def test_case3_a_cache_serves_one_model(tmp_path, infini_dir, tiny_tokenizer, capsys):
    other = build_infini_checkpoint(tmp_path / "other", tiny_tokenizer, seed=1)
    cache = tmp_path / "lm_cache" / "run"
    assert evaluate(infini_dir, "--use_cache", str(cache), "--limit", "1") == 0
    db = Path(f"{cache}_rank0.db")
    answers = db.read_bytes()
    capsys.readouterr()

    assert evaluate(other, "--use_cache", str(cache), "--limit", "1") == 1
    line = error_line(capsys)
    assert line == (
        f"error: --use_cache '{cache}' holds the answers of another model: it was filled by `--model infini "
        f"--model_args pretrained={infini_dir}`, this run is `--model infini --model_args pretrained={other}`; a cache "
        f"serves one model only: give this model its own --use_cache path, or delete {cache}_rank*.db and "
        f"{cache}_model.json to start the cache over"
    )
    # other model args of the same checkpoint are another model too
    assert wrapper(["--model", "infini", "--model_args", f"pretrained={infini_dir},use_memory=False", "--tasks",
                         "passkey_256", "--use_cache", str(cache)]) == 1
    assert "this run is `--model infini --model_args pretrained=" in error_line(capsys)
    assert db.read_bytes() == answers  # the cache is left as it was

    # the same model answers from it
    assert evaluate(infini_dir, "--use_cache", str(cache), "--limit", "1") == 0
    # the same folder with other weights (retrained in place) is refused, naming the changed file; a new file time
    # alone (a copy, a touch) is still the same model: the files are compared by content
    weights = infini_dir / "model.safetensors"
    stat = weights.stat()
    original = weights.read_bytes()
    try:
        os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
        assert evaluate(infini_dir, "--use_cache", str(cache), "--limit", "1") == 0
        weights.write_bytes(original[:-1] + bytes([original[-1] ^ 1]))
        capsys.readouterr()
        assert evaluate(infini_dir, "--use_cache", str(cache), "--limit", "1") == 1
        assert "whose files changed since (model.safetensors (pretrained))" in error_line(capsys)
    finally:
        weights.write_bytes(original)
        os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns))

    # a cache made without the record (plain lm_eval) cannot be vouched for
    legacy = tmp_path / "legacy" / "run"
    legacy.parent.mkdir()
    shutil.copy(db, f"{legacy}_rank0.db")
    assert evaluate(infini_dir, "--use_cache", str(legacy), "--limit", "1") == 1
    assert "holds cached answers (run_rank0.db) but no record of the model that gave them" in error_line(capsys)


def test_case5_output_path_is_checked_before_the_model_loads(tmp_path, infini_dir, no_model_loads, capsys):
    assert evaluate(infini_dir, "--output_path", "/sys/infini-bench-results") == 1
    assert error_line(capsys) == (
        "error: --output_path '/sys/infini-bench-results' is not writable (Operation not permitted in '/sys'): give a "
        "folder you can write to (nothing was evaluated)"
    )
    mine = tmp_path / "results.txt"
    mine.write_text("my results")
    assert evaluate(infini_dir, "--output_path", str(mine / "out")) == 1
    assert f"'{mine}' is a file, not a folder" in error_line(capsys)
    assert mine.read_text() == "my results"


def test_case7_each_fault_is_one_sentence_before_the_model_loads(tmp_path, infini_dir, tiny_llama_dir, no_model_loads,
                                                                capsys):
    # a truncated model.safetensors, for this project's model and for lm-eval's own `hf`
    for name, source, model in (("infini", infini_dir, "infini"), ("llama", tiny_llama_dir, "hf")):
        broken = tmp_path / name
        shutil.copytree(source, broken)
        weights = broken / "model.safetensors"
        os.truncate(weights, weights.stat().st_size - 100)
        assert evaluate(broken, model=model) == 1
        line = error_line(capsys)
        assert line.startswith(f"error: pretrained='{broken}' cannot be evaluated: '{weights}' is damaged (the file is")
        assert line.endswith("cut short), e.g. by a full disk or an interrupted copy or save: copy or save the "
                             "checkpoint again")
        assert weights.is_file()

    # a damaged --use_cache database
    cache = tmp_path / "cache" / "run"
    cache.parent.mkdir()
    Path(f"{cache}_rank0.db").write_bytes(b"not a database" * 100)
    assert evaluate(infini_dir, "--use_cache", str(cache)) == 1
    assert error_line(capsys) == (
        f"error: --use_cache database '{cache}_rank0.db' is damaged (file is not a database): delete it (its answers "
        "are computed again) or give another --use_cache path"
    )
    assert Path(f"{cache}_rank0.db").read_bytes() == b"not a database" * 100

    # --limit -1 (and 0, and a count that is not whole)
    for limit in ("-1", "0", "2.5"):
        assert evaluate(infini_dir, "--limit", limit) == 1
        assert error_line(capsys) == (
            f"error: --limit {float(limit):g} is invalid: give a number of documents per task (e.g. --limit 10) or a "
            "fraction of them between 0 and 1 (e.g. --limit 0.5)"
        )

    # a glob selects only this project's tasks (lm-eval's own `passkey_with_librusec` would fail offline)
    args = harness.prepare_run_args(argparse.Namespace(include_path=None, tasks=["passkey_*"], model_args={},
                                                       metadata={}))
    assert "passkey_256" in args.tasks and not [t for t in args.tasks if "librusec" in t]


def test_case7_read_only_document_cache(infini_dir, monkeypatch, capsys):
    monkeypatch.setenv("INFINI_BENCH_CACHE", "/sys/infini-bench-cache")  # sysfs refuses new folders, even to root
    assert evaluate(infini_dir, "--limit", "1") == 1
    assert error_line(capsys) == (
        "error: cannot write the document cache in '/sys/infini-bench-cache' (Operation not permitted): set "
        "INFINI_BENCH_CACHE to a writable folder (built documents are cached there)"
    )


def test_case9_ppl_files_on_an_empty_file(tmp_path, infini_dir, capsys):
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    assert wrapper(["--model", "infini", "--model_args", f"pretrained={infini_dir}", "--tasks", "ppl_files",
                         "--device", "cpu", "--metadata", f"files=['{empty}']"]) == 1
    line = error_line(capsys)
    assert line == (
        "error: perplexity source 'files' gave no documents: every one is empty or only whitespace (e.g. empty "
        "files); name files with text in them"
    )
    assert "min_doc_tokens" not in line and empty.exists()


def test_case9_eval_help_names_the_model_and_the_tasks_first(capsys):
    with pytest.raises(SystemExit) as exit_:
        cli_main(["eval", "--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    ours, _, theirs = out.partition("usage: lm-eval run")
    assert "--model infini" in ours and "passkey_<len>" in ours and "niah_<len>" in ours and "ppl_stdlib" in ours
    assert "infini-bench tasks" in ours and "--use_cache" in theirs  # then lm-eval's own flags, all of them
