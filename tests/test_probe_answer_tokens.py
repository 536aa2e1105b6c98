"""benchmarks/probe_answer_tokens.py: its documents are the tasks' documents, and its per-token accuracy agrees
with greedy decoding by recomputation."""
import importlib.util
from pathlib import Path

import pytest

from test_adapter_support import greedy_by_recomputation, infini_dir  # noqa: F401
from infini_bench.data.grid import Grid
from infini_bench.data.niah import niah_spec, plan_niah_docs
from infini_bench.data.passkey import PasskeySpec, passkey_answer_tokens, plan_passkey_docs

PROBE = Path(__file__).resolve().parents[1] / "benchmarks" / "probe_answer_tokens.py"


@pytest.fixture(scope="module")
def probe():
    spec = importlib.util.spec_from_file_location("probe_answer_tokens", PROBE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("family, length", [("passkey", 256), ("niah_single_1", 512)])
def test_documents_are_the_tasks_documents(probe, tiny_tokenizer, family, length, tmp_path, monkeypatch):
    monkeypatch.setenv("INFINI_BENCH_CACHE", str(tmp_path / "docs_cache"))
    depths, samples = [0, 50, 100], 2
    if family == "passkey":
        plan = plan_passkey_docs(tiny_tokenizer, PasskeySpec(answer_tokens=passkey_answer_tokens()), Grid(length, depths, samples))
    else:
        plan = plan_niah_docs(tiny_tokenizer, niah_spec("single_1"), Grid(length, depths, samples))
    tasks = {plan.cell(i): plan.doc(i)[0] for i in range(len(plan))}
    docs = probe.documents(tiny_tokenizer, family, length, depths, samples, 1234)
    assert len(docs) == len(tasks)
    for i, doc in enumerate(docs):
        task_doc = tasks[(i % samples, depths[i // samples])]
        assert doc["prompt"] == task_doc["prompt"] and doc["answer"] == task_doc["answer"]
        assert len(doc["input_ids"]) == task_doc["prompt_tokens"] == length - task_doc["answer_tokens"]
        assert tiny_tokenizer.decode(doc["answer_ids"]).strip() == doc["answer"]


def test_unknown_family_is_named(probe, tiny_tokenizer):
    with pytest.raises(SystemExit, match="'niah_nope'"):
        probe.documents(tiny_tokenizer, "niah_nope", 256, [50], 1, 1234)


def test_accuracy_agrees_with_greedy_decoding(probe, infini_dir, tiny_tokenizer):  # noqa: F811
    from transformers import AutoModelForCausalLM

    import infini_bench.modeling  # noqa: F401  registers model_type "infini"

    model = AutoModelForCausalLM.from_pretrained(infini_dir).eval()
    prompts = [tiny_tokenizer("The pass key is 48213. " * k + "What is the pass key?")["input_ids"] for k in (2, 5)]
    greedy = [greedy_by_recomputation(model, p, 6, eos=-1) for p in prompts]
    per_token, whole = probe.answer_token_accuracy(model, list(zip(prompts, greedy)))
    assert per_token == [1.0] * 6 and whole == 1.0  # the model's own greedy answer is right at every token
    wrong_first = [[(g[0] + 1) % len(tiny_tokenizer)] + g[1:] for g in greedy]
    per_token, whole = probe.answer_token_accuracy(model, list(zip(prompts, wrong_first)))
    assert per_token[0] == 0.0 and whole == 0.0
