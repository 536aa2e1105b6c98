"""`--apply_chat_template` through the real `lm_eval` CLI on a tiny Llama whose tokenizer has a chat template: the
template's tokens count in the length, nothing is truncated, the answer prefix opens the assistant turn, and
`prompt_tokens` is what the model received."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from infini_bench.tasks import TASKS_DIR

# A ChatML-like template that starts with the BOS token's text (as Llama-3's does): lm-eval's hf model then adds no
# second BOS, and the task must count the same way.
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] | trim }}"
    "{% if not loop.last or add_generation_prompt %}</s>\n{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)
LENGTH = 1024


@pytest.fixture(scope="module")
def chat_run(tiny_llama_dir, tmp_path_factory):
    from transformers import AutoTokenizer

    model = tmp_path_factory.mktemp("chat_llama")
    shutil.copytree(tiny_llama_dir, model, dirs_exist_ok=True)
    tok = AutoTokenizer.from_pretrained(model)
    tok.chat_template = CHAT_TEMPLATE
    tok.save_pretrained(model)
    out = tmp_path_factory.mktemp("chat_out")
    argv = [
        sys.executable, "-m", "lm_eval", "--model", "hf",
        "--model_args", f"pretrained={model},dtype=float32,max_length={LENGTH}", "--device", "cpu",
        "--tasks", "niah_single_1_1k,passkey_1k", "--include_path", TASKS_DIR,
        "--metadata", json.dumps({"depths": [0, 100], "samples": 1}),
        "--apply_chat_template", "--output_path", str(out), "--log_samples",
    ]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
           "CUDA_VISIBLE_DEVICES": "", "INFINI_BENCH_CACHE": str(tmp_path_factory.mktemp("cache"))}
    proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-6000:]
    results = json.loads(next(out.rglob("results_*.json")).read_text())
    samples = {
        path.name[len("samples_"):].rsplit("_", 1)[0]: [json.loads(line) for line in path.read_text().splitlines()]
        for path in out.rglob("samples_*.jsonl")
    }
    return results, samples, proc.stderr, tok


@pytest.mark.parametrize("task", ["niah_single_1_1k", "passkey_1k"])
def test_chat_prompts_are_exact_untruncated_and_end_in_the_assistant_turn(chat_run, task):
    results, samples, stderr, tok = chat_run
    assert "Selected Tasks" in stderr and "Left truncation" not in stderr
    rows = samples[task]
    assert len(rows) == 2
    for row in rows:
        doc, prompt = row["doc"], row["arguments"]["gen_args_0"]["arg_0"]
        assert prompt == doc["prompt"] and prompt.startswith(tok.bos_token + "<|user|>\n")
        # what lm-eval's hf model feeds: no second BOS when the template already starts with one
        fed = tok(prompt, add_special_tokens=False)["input_ids"]
        assert len(fed) == doc["prompt_tokens"] == LENGTH - doc["answer_tokens"]
        user, assistant = prompt.split("</s>\n<|assistant|>\n")
        assert assistant == doc["gen_prefix"] and not user.endswith(doc["gen_prefix"])  # the prefix opens the answer
        assert user.rstrip().endswith("?")
    frame = results["configs"][task]["metadata"]["prompt_frame"]
    assert frame == {"before": "<s><|user|>\n", "between": "</s>\n<|assistant|>\n", "after": ""}
