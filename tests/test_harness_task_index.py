"""The wrapper lets lm-eval index only the include path when every selected task is this project's: lm-eval's own
thousands of task YAMLs cost about 9 s per run on 2 cores and are never used then."""
from __future__ import annotations

import lm_eval.tasks
import pytest

from infini_bench import harness
from infini_bench.tasks import TASKS_DIR, task_names
from test_adapter_support import infini_dir  # noqa: F401
from test_reliability_eval import documents_cache, evaluate  # noqa: F401


@pytest.mark.parametrize(
    "tasks, expected",
    [
        (["passkey_256", "niah_multikey_2_1k", "ppl_stdlib"], True),
        (["infinibench_niah_upto_1k"], True),  # a group of this project's
        (["passkey_256", "hellaswag"], False),  # lm-eval's own task: its index is needed
        (["/some/task.yaml"], False),
        ([], False),
        (None, False),
    ],
)
def test_only_project_tasks(tasks, expected):
    if tasks == ["infinibench_niah_upto_1k"]:
        assert "infinibench_niah_upto_1k" in task_names("group")
    assert harness.only_project_tasks(tasks) is expected


def test_skip_builtin_task_index_indexes_only_the_include_path():
    builtin = lm_eval.tasks.TaskManager
    with harness.skip_builtin_task_index(True):
        manager = lm_eval.tasks.TaskManager(include_path=TASKS_DIR)
        assert "passkey_256" in manager.all_tasks
        assert set(manager.all_tasks) <= set(task_names())
        assert isinstance(manager, builtin)
    assert lm_eval.tasks.TaskManager is builtin
    with harness.skip_builtin_task_index(False):
        assert lm_eval.tasks.TaskManager is builtin


def test_skip_builtin_task_index_restores_the_class_after_an_error():
    builtin = lm_eval.tasks.TaskManager
    with pytest.raises(RuntimeError), harness.skip_builtin_task_index(True):
        raise RuntimeError("the evaluation failed")
    assert lm_eval.tasks.TaskManager is builtin


def test_an_evaluation_of_project_tasks_skips_the_builtin_index(infini_dir, monkeypatch):
    seen = []
    real = harness.skip_builtin_task_index

    def spy(active):
        seen.append(active)
        return real(active)

    monkeypatch.setattr(harness, "skip_builtin_task_index", spy)
    assert evaluate(infini_dir, "--limit", "1") == 0
    assert seen == [True]
