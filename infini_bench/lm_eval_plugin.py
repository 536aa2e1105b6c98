"""Plain `lm_eval --model infini` after `pip install`: lm-eval 0.4.13 reads no plugin entry points, and its CLI
builds the model before it loads any task, so nothing of this project would run in time.

The installed `infini_bench_lm_eval.pth` imports this module at interpreter start. It only puts a finder in front
of the import system that waits for lm-eval's module of built-in models (`lm_eval_compat.BUILTIN_MODELS_MODULE`)
and, right after it has run, registers `infini` as a lazy target (`lm_eval_compat.register_lazy_model`): nothing
of this project's adapter is imported until lm-eval builds an `infini` model, and a process that never imports
lm-eval pays for this module and `lm_eval_compat` alone (neither imports lm-eval).
"""
from __future__ import annotations

import importlib.machinery
import sys

from infini_bench.lm_eval_compat import BUILTIN_MODELS_MODULE, register_lazy_model

MODEL_NAME = "infini"
TARGET = "infini_bench.model_adapters.infini_lm:InfiniLM"


def register() -> None:
    """Name `infini` in lm-eval's model registry, lazily (after the built-ins, which must come first)."""
    register_lazy_model(MODEL_NAME, TARGET)


class _AfterLmEvalModels:
    """A meta-path finder that finds nothing itself: it lets the path finder locate lm-eval's module of built-in
    models and wraps the loader so that the registration runs once the module has executed."""

    def find_spec(self, name, path=None, target=None):
        if name != BUILTIN_MODELS_MODULE:
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is None or spec.loader is None:
            return spec
        run_module = spec.loader.exec_module

        def exec_module(module) -> None:
            run_module(module)
            register()

        spec.loader.exec_module = exec_module
        return spec


def install() -> None:
    """Register now if lm-eval's built-in models are already loaded, else put the finder in front (once)."""
    if BUILTIN_MODELS_MODULE in sys.modules:
        register()
    elif not any(isinstance(finder, _AfterLmEvalModels) for finder in sys.meta_path):
        sys.meta_path.insert(0, _AfterLmEvalModels())


install()
