"""The one seam between this project and lm-eval's non-public API (written against lm-eval 0.4.13; pyproject.toml
pins ``lm-eval>=0.4.13,<0.5``, the only place the version is stated).

The rest of the project uses lm-eval's public API directly (`Instance`, `TemplateLM`/`LM`, `register_model`,
`lm_eval.api.metrics`, `ConfigurableTask` as a base class, `simple_evaluate`, the adapter's shared helpers of
`lm_eval.models.utils`). Whatever else it needs of lm-eval goes through a name here, whose docstring says which
lm-eval internal it relies on and why; docs/lm-eval-compat.md lists them beside the test that proves each one
(tests/test_lm_eval_compat.py) and what to do when one breaks.

Importing this module imports neither lm-eval nor `typing`: the installed ``infini_bench_lm_eval.pth`` imports it
(through `infini_bench.lm_eval_plugin`) at the start of every Python process.
"""
from __future__ import annotations

import contextlib
import sys

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (type checkers read this spelling too)
if TYPE_CHECKING:
    import argparse
    from collections.abc import Callable, Iterator, Sequence
    from typing import Any


# --- models: the registry and the order of registration ----------------------------------------------------------

#: lm-eval's module whose import fills the model registry with its built-in models, as lazy entries
#: (lm_eval/models/__init__.py, `_register_all_models`). `get_model` imports it only while the registry is empty, so
#: a model registered before it runs hides every built-in: ours are registered after it (`register_model_once`,
#: and the `.pth` hook's finder waits for it, `infini_bench.lm_eval_plugin`).
BUILTIN_MODELS_MODULE = "lm_eval.models"


def load_builtin_models() -> None:
    """Import `BUILTIN_MODELS_MODULE`, so lm-eval's built-in models are registered before any of ours."""
    __import__(BUILTIN_MODELS_MODULE)


def register_lazy_model(name: str, target: str) -> None:
    """Name a model by its ``"module:Class"`` path in lm-eval's `model_registry` (`Registry.register(name,
    target=...)`, a registry internal; the public `register_model` needs the class imported): nothing of the model's
    module is imported until lm-eval builds it. A name already registered is left as it is."""
    from lm_eval.api.registry import model_registry

    if name not in model_registry:
        model_registry.register(name, target=target)


def register_model_once(name: str, cls: type) -> None:
    """`register_model(name)(cls)` once lm-eval's built-ins are registered (`load_builtin_models`). lm-eval's
    registry upgrades a lazy entry of the class's own ``module:Class`` path to the class and raises ValueError for
    any other existing target, such as an entry point's ``infini_bench.model_adapters:InfiniLM``. That clash is
    accepted only when the entry already there is this project's (read from the registry's ``_objs``: a class, a
    ``module:Class`` string or an EntryPoint); another package's model under `name` still raises."""
    load_builtin_models()
    from lm_eval.api.registry import model_registry, register_model

    try:
        register_model(name)(cls)
    except ValueError:
        current = model_registry._objs.get(name)
        origin = getattr(current, "value", None) or getattr(current, "__module__", None) or str(current)
        if not str(origin).startswith(cls.__module__.split(".")[0] + "."):
            raise


def model_constructor_args() -> set[str]:
    """Parameter names of the constructors of lm-eval's `HFLM` and of every model class in lm-eval's
    `model_registry` whose module is already imported (the registry's `items()` holds classes and lazy
    ``"module:Class"`` strings; a lazy one is never imported here). lm-eval copies every ``--model_args`` key into
    each task's metadata, so these names must pass the tasks' option check; an lm-eval without these yields the
    names found so far."""
    import inspect

    classes: list[type] = []
    try:
        from lm_eval.api.registry import model_registry

        for _, obj in model_registry.items():
            if isinstance(obj, str) and ":" in obj:
                module, _, attr = obj.partition(":")
                obj = getattr(sys.modules.get(module.strip()), attr.strip(), None)
            if isinstance(obj, type):
                classes.append(obj)
        from lm_eval.models.huggingface import HFLM

        classes.append(HFLM)
    except Exception:  # an lm-eval without these: the classes found so far
        pass
    names: set[str] = set()
    for cls in classes:
        for klass in cls.__mro__:
            init = klass.__dict__.get("__init__")
            if init is None:
                continue
            try:
                params = inspect.signature(init).parameters.values()
            except (TypeError, ValueError):
                continue
            names |= {p.name for p in params if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD) and p.name != "self"}
    return names


def resolve_max_length(config: Any, tokenizer: Any = None, *, default: int) -> int:
    """`lm_eval.models.utils.resolve_max_length`: a checkpoint's maximum length read the way lm-eval's `hf` model
    reads it (the config's length fields, then the tokenizer's `model_max_length`, then `default`)."""
    from lm_eval.models.utils import resolve_max_length as resolve

    return resolve(config, tokenizer, default=default)


def hf_max_length(config: Any, tokenizer: Any = None) -> int:
    """The `max_length` lm-eval's `hf` model (`HFLM.max_length`) reports without a ``max_length=`` model arg:
    `resolve_max_length` with its `lm_eval.models.utils.DEFAULT_MAX_LENGTH`."""
    from lm_eval.models.utils import DEFAULT_MAX_LENGTH

    return resolve_max_length(config, tokenizer, default=DEFAULT_MAX_LENGTH)


# --- the command line and the task index ------------------------------------------------------------------------


def parse_lm_eval_cli(argv: list[str]) -> tuple[argparse.Namespace, Callable[[argparse.Namespace], None]]:
    """Parse `argv` with lm-eval's own command line, `lm_eval._cli.HarnessCLI` (private; lm_eval/__main__.py's
    `cli_evaluate` does the same after `lm_eval.utils.setup_logging`): the namespace, and the function that runs it.
    `HarnessCLI.parse_args` reads `sys.argv` (and inserts the implicit ``run`` subcommand), so `argv` stands in for
    it while parsing."""
    from lm_eval._cli import HarnessCLI
    from lm_eval.utils import setup_logging

    setup_logging()
    cli = HarnessCLI()
    saved = sys.argv
    sys.argv = ["lm-eval", *argv]
    try:
        args = cli.parse_args()
    finally:
        sys.argv = saved
    return args, cli.execute


def index_task_folder(path: str) -> list[tuple[str, dict[str, Any], str, bool]]:
    """(name, YAML config, YAML path, whether a group) of each task and group lm-eval finds in `path` alone: the
    raw `Entry` records of `TaskManager.task_index` (`.cfg`, `.yaml_path`) and `TaskManager.all_groups`, the index
    lm-eval resolves ``--tasks`` against."""
    from lm_eval.tasks import TaskManager

    manager = TaskManager(include_path=path, include_defaults=False)
    groups = set(manager.all_groups)
    return [(name, entry.cfg or {}, str(entry.yaml_path), name in groups) for name, entry in manager.task_index.items()]


@contextlib.contextmanager
def skip_builtin_task_index(active: bool) -> Iterator[None]:
    """While active, lm-eval's TaskManager indexes only the include path, not its own task folder.

    `lm_eval run` always indexes every built-in task YAML, about 9 s of a 2-core machine's time per evaluation, even
    when each selected task is on the include path; its CLI has no flag for the TaskManager's `include_defaults`.
    `EvaluatorConfig.process_tasks` (lm_eval/config/evaluate_config.py) imports `lm_eval.tasks.TaskManager` when it
    runs, so swapping that module attribute for the run is enough."""
    if not active:
        yield
        return
    import lm_eval.tasks as lm_tasks

    builtin = lm_tasks.TaskManager

    class IncludePathOnly(builtin):  # type: ignore[misc, valid-type]
        def __init__(self, *args: Any, include_defaults: bool = False, **kwargs: Any) -> None:
            super().__init__(*args, include_defaults=include_defaults, **kwargs)

    lm_tasks.TaskManager = IncludePathOnly
    try:
        yield
    finally:
        lm_tasks.TaskManager = builtin


# --- tasks: the ConfigurableTask hooks a task overrides, and their contract --------------------------------------


def set_test_docs(task: Any, docs: Sequence[dict[str, Any]]) -> None:
    """What a `download` override must leave: `ConfigurableTask.__init__` calls `download`, then reads
    ``task.dataset[config.test_split]`` as the task's documents (`test_docs`, `eval_docs`)."""
    task.dataset = {task.config.test_split: docs}


class PromptSettings:
    """The keywords of `Task.build_all_requests` that shape a prompt, which it passes on to `fewshot_context`."""

    __slots__ = ("apply_chat_template", "chat_template", "system_instruction", "fewshot_as_multiturn")

    def __init__(self, request_kwargs: dict[str, Any]) -> None:
        self.apply_chat_template = bool(request_kwargs.get("apply_chat_template"))
        self.chat_template = request_kwargs.get("chat_template")
        self.system_instruction: str | None = request_kwargs.get("system_instruction")
        self.fewshot_as_multiturn = bool(request_kwargs.get("fewshot_as_multiturn"))


class LazyDocsHooks:
    """A mixin, placed before `ConfigurableTask` in a task's bases, for a task whose documents are built only when
    lm-eval asks for them. It overrides the `ConfigurableTask` hooks lm-eval calls (`download`, `fewshot_docs`,
    `doc_iterator`, `build_all_requests`) and turns them into the task's own: `lazy_docs`, `docs_at`,
    `use_prompt_settings`, `check_prompts` and `n_docs`; `under_construction` is true while lm-eval's constructor
    runs, and `render_prompt` is lm-eval's own rendering of a prompt."""

    n_docs: int
    under_construction = False

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        """`ConfigurableTask.__init__` reads the first document and `features` (its doc_to_text / doc_to_target
        probe) before any request: while it runs, `under_construction` lets the task answer with a placeholder."""
        self.under_construction = True
        super().__init__(*args, **kwargs)
        self.under_construction = False

    # -- what the task provides -------------------------------------------------------------------------------
    def lazy_docs(self) -> Sequence[dict[str, Any]]:
        """Every document as a sequence that builds one when indexed (with lm-eval's `features`)."""
        raise NotImplementedError

    def docs_at(self, indices: list[int]) -> list[dict[str, Any]]:
        """The documents at `indices`, built now if they are not yet."""
        raise NotImplementedError

    def use_prompt_settings(self, settings: PromptSettings) -> None:
        """Take the prompt settings of the requests about to be built, before lm-eval asks for any document."""
        raise NotImplementedError

    def check_prompts(self, settings: PromptSettings) -> None:
        """Check the requests lm-eval has just built under `settings`."""
        raise NotImplementedError

    # -- lm-eval's hooks --------------------------------------------------------------------------------------
    def download(self, dataset_kwargs: dict[str, Any] | None = None, **kwargs: Any) -> None:
        """`ConfigurableTask.download`, called by its constructor: the lazy sequence becomes the test split."""
        set_test_docs(self, self.lazy_docs())

    def fewshot_docs(self) -> None:
        """None: `ConfigurableTask.__init__` then makes no few-shot sampler, which would list (so build) every
        document."""
        return None

    def doc_iterator(
        self, *, rank: int = 0, limit: int | None = None, world_size: int = 1, samples: list[int] | None = None
    ) -> Iterator[tuple[int, Any]]:
        """`Task.doc_iterator`'s order and sharding (`lm_eval.utils.create_iterator`: the `samples` indices in
        document order, else the first `limit`; numbered in that order; every `world_size`-th from `rank`),
        building only this rank's documents within the limit."""
        if samples:
            indices = sorted(i for i in set(samples) if 0 <= i < self.n_docs)
        else:
            limit = int(limit) if limit else None
            indices = list(range(self.n_docs if limit is None else min(limit, self.n_docs)))
        mine = list(enumerate(indices))[int(rank) :: int(world_size)]
        docs = self.docs_at([i for _, i in mine])
        return iter([(doc_id, doc) for (doc_id, _), doc in zip(mine, docs)])

    def build_all_requests(self, **kwargs: Any) -> None:
        """`Task.build_all_requests` gets the chat template, system instruction and multiturn flag as keywords and
        asks for documents only inside: the task takes them first and checks lm-eval's prompts after."""
        settings = PromptSettings(kwargs)
        self.use_prompt_settings(settings)
        super().build_all_requests(**kwargs)  # type: ignore[misc]
        self.check_prompts(settings)

    def render_prompt(self, doc: dict[str, Any], settings: PromptSettings, gen_prefix: str | None) -> str | list[str]:
        """lm-eval's own zero-shot prompt for `doc`: `ConfigurableTask.fewshot_context` called unbound, past a task's
        override of it (which returns the prompt the task built)."""
        from lm_eval.api.task import ConfigurableTask

        return ConfigurableTask.fewshot_context(
            self, doc, 0, system_instruction=settings.system_instruction,
            apply_chat_template=settings.apply_chat_template, fewshot_as_multiturn=settings.fewshot_as_multiturn,
            chat_template=settings.chat_template, gen_prefix=gen_prefix,
        )
