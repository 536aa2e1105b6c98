"""Each hook of `infini_bench.lm_eval_compat` against the installed lm-eval (no mocks of lm-eval): when lm-eval
changes, the failing test here names the hook to fix (docs/lm-eval-compat.md, "What to check when lm-eval
changes")."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
from collections.abc import Sequence
from importlib.metadata import version
from pathlib import Path
from typing import Any

import datasets
import pytest
import lm_eval.tasks
from lm_eval.api.registry import get_model
from lm_eval.api.task import ConfigurableTask
from packaging.requirements import Requirement

from infini_bench import lm_eval_compat as compat
from infini_bench.tasks import TASKS_DIR, task_names

ROOT = Path(__file__).resolve().parents[1]


def test_the_installed_lm_eval_is_inside_the_pin_these_hooks_were_written_for():
    pins = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    [pin] = [Requirement(p) for p in pins if Requirement(p).name == "lm-eval"]
    assert pin.specifier.contains(version("lm-eval")), (version("lm-eval"), str(pin.specifier))


# -- models ----------------------------------------------------------------------------------------------------------
def _fresh_python(code: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", CUDA_VISIBLE_DEVICES="")
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)


def test_the_finder_registers_infini_right_after_lm_eval_registers_its_builtin_models():
    done = _fresh_python(
        "import sys\n"
        f"assert {compat.BUILTIN_MODELS_MODULE!r} not in sys.modules\n"
        "assert any(type(f).__name__ == '_AfterLmEvalModels' for f in sys.meta_path)  # put there by the .pth\n"
        f"import {compat.BUILTIN_MODELS_MODULE}\n"
        "from lm_eval.api.registry import model_registry\n"
        "names = [name for name, _ in model_registry.items()]\n"
        "assert 'infini_bench.model_adapters' not in sys.modules  # a lazy entry: nothing imported yet\n"
        "print(names.index('hf') < names.index('infini'), dict(model_registry.items())['infini'])"
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split() == ["True", "infini_bench.model_adapters.infini_lm:InfiniLM"]


def test_register_model_once_accepts_the_same_class_named_lazily_by_another_path():
    from infini_bench.model_adapters import InfiniLM

    compat.register_lazy_model("infini_compat_test", "infini_bench.model_adapters:InfiniLM")  # an entry point's path
    compat.register_lazy_model("infini_compat_test", "somewhere.else:Other")  # a name already there is kept
    compat.register_model_once("infini_compat_test", InfiniLM)
    assert get_model("infini_compat_test") is InfiniLM
    assert get_model("infini") is InfiniLM and get_model("hf").__name__ == "HFLM"


def test_register_model_once_refuses_a_name_another_package_holds():
    from infini_bench.model_adapters import InfiniLM

    compat.register_lazy_model("infini_compat_taken", "somewhere.else:Other")
    with pytest.raises(ValueError, match="infini_compat_taken"):
        compat.register_model_once("infini_compat_taken", InfiniLM)


def test_model_constructor_args_name_hflm_and_the_loaded_model_classes():
    import infini_bench.model_adapters  # noqa: F401  (InfiniLM's module is loaded: its parameters count)

    names = compat.model_constructor_args()
    assert {"pretrained", "backend", "max_length", "batch_size", "add_bos_token"} <= names  # HFLM's
    assert {"segment_length", "use_memory"} <= names  # InfiniLM's
    assert "self" not in names and "kwargs" not in names


def test_max_lengths_are_what_lm_evals_hf_model_reports(tiny_llama_dir):
    from lm_eval.models.huggingface import HFLM
    from transformers import AutoConfig, AutoTokenizer

    config = AutoConfig.from_pretrained(tiny_llama_dir)
    tokenizer = AutoTokenizer.from_pretrained(tiny_llama_dir)
    hf = HFLM(pretrained=str(tiny_llama_dir), device="cpu", batch_size=1)
    assert compat.hf_max_length(config, tokenizer) == hf.max_length == config.max_position_embeddings
    assert compat.resolve_max_length(config, None, default=7) == config.max_position_embeddings
    assert compat.resolve_max_length(None, None, default=7) == 7


# -- the command line and the task index -----------------------------------------------------------------------------
def test_the_cli_entry_parses_and_runs_lm_evals_own_command_line(tiny_llama_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("INFINI_BENCH_CACHE", str(tmp_path / "cache"))
    saved = list(sys.argv)
    metadata = json.dumps({"pretrained": str(tiny_llama_dir), "samples": 1, "depths": [50]})
    args, execute = compat.parse_lm_eval_cli(
        ["--model", "dummy", "--tasks", "passkey_256", "--include_path", TASKS_DIR, "--metadata", metadata,
         "--limit", "1", "--output_path", str(tmp_path / "out")]
    )
    assert sys.argv == saved
    assert args.command == "run" and args.model == "dummy" and args.tasks == ["passkey_256"]  # `run` inserted
    with compat.skip_builtin_task_index(True):
        execute(args)
    [results] = (tmp_path / "out").rglob("results_*.json")
    data = json.loads(results.read_text())
    assert set(data["results"]) == {"passkey_256"} and data["config"]["model"] == "dummy"


def test_the_task_manager_swap_makes_lm_evals_run_index_only_the_include_path():
    from lm_eval.config.evaluate_config import EvaluatorConfig

    builtin = lm_eval.tasks.TaskManager
    config = EvaluatorConfig(tasks=["passkey_256"], include_path=TASKS_DIR)
    with compat.skip_builtin_task_index(True):
        manager = config.process_tasks({})  # what `lm_eval run` calls to resolve --tasks
    assert config.tasks == ["passkey_256"]
    assert "passkey_256" in manager.all_tasks and set(manager.all_tasks) <= set(task_names())
    assert lm_eval.tasks.TaskManager is builtin


def test_index_task_folder_is_lm_evals_index_of_the_include_path():
    manager = lm_eval.tasks.TaskManager(include_path=TASKS_DIR, include_defaults=False)
    index = {name: (cfg, path, is_group) for name, cfg, path, is_group in compat.index_task_folder(TASKS_DIR)}
    assert set(index) == set(manager.all_tasks)
    assert {name for name, (_, _, is_group) in index.items() if is_group} == set(manager.all_groups)
    cfg, path, _ = index["passkey_256"]
    assert cfg["metadata"]["task_context_length"] == 256 and Path(path).name == "passkey_256.yaml"
    assert "passkey_256" in index["infinibench_passkey_upto_4k"][0]["task"]


# -- tasks -----------------------------------------------------------------------------------------------------------
DOCS = [{"prompt": f"Question {i}?", "answer": str(i)} for i in range(6)]
CONFIG = {"task": "compat_tiny", "output_type": "generate_until", "test_split": "test", "doc_to_text": "prompt",
          "doc_to_target": "answer", "generation_kwargs": {"until": [], "max_gen_toks": 4}}


def _plain_task() -> ConfigurableTask:
    """lm-eval's own ConfigurableTask over the same documents, read whole."""
    return ConfigurableTask(config={**CONFIG, "custom_dataset": lambda **_: {"test": datasets.Dataset.from_list(DOCS)}})


class _Lazy(Sequence):
    def __init__(self, task: "TinyLazyTask") -> None:
        self.task = task

    def __len__(self) -> int:
        return len(DOCS)

    def __getitem__(self, index: Any) -> dict[str, Any]:
        self.task.read_while_constructing.append(self.task.under_construction)
        return {"prompt": "", "answer": ""} if self.task.under_construction else DOCS[index]

    @property
    def features(self) -> dict[str, None]:
        return dict.fromkeys(("prompt", "answer"))


class TinyLazyTask(compat.LazyDocsHooks, ConfigurableTask):
    """The smallest task on the hooks: it records what lm-eval asks of it."""

    n_docs = len(DOCS)

    def __init__(self) -> None:
        self.read_while_constructing: list[bool] = []
        self.asked: list[list[int]] = []
        self.events: list[str] = []
        super().__init__(config=dict(CONFIG))

    def lazy_docs(self) -> Sequence[dict[str, Any]]:
        return _Lazy(self)

    def docs_at(self, indices: list[int]) -> list[dict[str, Any]]:
        self.asked.append(indices)
        self.events.append("docs")
        return [DOCS[i] for i in indices]

    def use_prompt_settings(self, settings: compat.PromptSettings) -> None:
        self.events.append(f"settings {settings.apply_chat_template} {settings.system_instruction}")

    def check_prompts(self, settings: compat.PromptSettings) -> None:
        self.events.append(f"check {len(self.instances)}")

    def fewshot_context(self, doc: dict[str, Any], num_fewshot: int, **kwargs: Any) -> str:
        return doc["prompt"]  # as the retrieval tasks: the prompt is already whole


def _chat(messages: list[dict[str, str]], add_generation_prompt: bool = True) -> str:
    text = "".join(f"<|{m['role']}|>\n{m['content']}\n" for m in messages)
    return text + ("<|assistant|>\n" if add_generation_prompt else "")


def test_lazy_docs_hooks_construct_without_building_and_without_a_few_shot_sampler():
    task = TinyLazyTask()
    assert task.read_while_constructing and all(task.read_while_constructing)  # lm-eval probes the first document
    assert not task.under_construction and task.asked == []
    assert list(task.eval_docs) == DOCS  # `download`'s sequence is lm-eval's test split
    assert task.fewshot_docs() is None and not hasattr(task, "sampler")
    assert hasattr(_plain_task(), "sampler")  # what `fewshot_docs() is None` spares a task


def test_doc_iterator_keeps_lm_evals_order_and_sharding_and_builds_only_its_share():
    plain, lazy = _plain_task(), TinyLazyTask()
    for rank, world_size, limit, samples in [(0, 1, None, None), (1, 2, None, None), (0, 3, 4, None), (2, 3, 5, None),
                                             (0, 1, None, [4, 1, 3]), (1, 2, None, [0, 2, 5])]:
        kwargs = dict(rank=rank, world_size=world_size, limit=limit, samples=samples)
        expected = list(plain.doc_iterator(**kwargs))
        assert list(lazy.doc_iterator(**kwargs)) == expected, kwargs
        assert lazy.asked[-1] == [DOCS.index(doc) for _, doc in expected]


def test_render_prompt_is_lm_evals_own_fewshot_context_past_the_tasks_override():
    plain, lazy = _plain_task(), TinyLazyTask()
    request = {"apply_chat_template": True, "chat_template": _chat, "system_instruction": "Be brief.",
               "fewshot_as_multiturn": False}
    settings = compat.PromptSettings(request)
    expected = plain.fewshot_context(DOCS[2], 0, system_instruction="Be brief.", apply_chat_template=True,
                                     fewshot_as_multiturn=False, chat_template=_chat, gen_prefix="Answer:")
    assert lazy.render_prompt(DOCS[2], settings, "Answer:") == expected
    assert expected.startswith("<|system|>\nBe brief.") and "Question 2?" in expected
    assert lazy.fewshot_context(DOCS[2], 0) == "Question 2?"  # the override the hook gets past
    plain_settings = compat.PromptSettings({})
    assert lazy.render_prompt(DOCS[2], plain_settings, None) == plain.fewshot_context(DOCS[2], 0) == "Question 2?"


def test_build_all_requests_hands_the_prompt_settings_over_before_any_document():
    task = TinyLazyTask()
    task.build_all_requests(limit=3, apply_chat_template=True, chat_template=_chat, system_instruction="Hi")
    assert task.events == ["settings True Hi", "docs", "check 3"]
    assert [i.args[0] for i in task.instances] == ["Question 0?", "Question 1?", "Question 2?"]


def test_set_test_docs_is_where_lm_eval_reads_a_tasks_documents():
    task = _plain_task()
    compat.set_test_docs(task, DOCS[:2])
    assert list(task.eval_docs) == DOCS[:2] and list(task.test_docs()) == DOCS[:2]
