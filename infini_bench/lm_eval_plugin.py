"""Plain `lm_eval --model infini` after `pip install`: lm-eval 0.4.13 reads no plugin entry points, and its CLI
builds the model before it loads any task, so nothing of this project would run in time.

The installed `infini_bench_lm_eval.pth` imports this module at interpreter start. It only puts a finder in front
of the import system that waits for `lm_eval.models` (the module that fills lm-eval's model registry with its
built-ins) and, right after it has run, registers `infini` as a lazy target: nothing of this project is imported
until lm-eval builds an `infini` model, and a process that never imports lm-eval pays for this module alone.
"""
from __future__ import annotations

import importlib.machinery
import sys

MODEL_NAME = "infini"
TARGET = "infini_bench.model_adapters.infini_lm:InfiniLM"
WATCHED = "lm_eval.models"


def register(registry) -> None:
    """Name `infini` in lm-eval's model registry, lazily (after the built-ins, which must come first)."""
    if MODEL_NAME not in registry:
        registry.register(MODEL_NAME, target=TARGET)


class _AfterLmEvalModels:
    """A meta-path finder that finds nothing itself: it lets the path finder locate `lm_eval.models` and wraps
    the loader so that the registration runs once the module has executed."""

    def find_spec(self, name, path=None, target=None):
        if name != WATCHED:
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is None or spec.loader is None:
            return spec
        run_module = spec.loader.exec_module

        def exec_module(module) -> None:
            run_module(module)
            from lm_eval.api.registry import model_registry

            register(model_registry)

        spec.loader.exec_module = exec_module
        return spec


def install() -> None:
    if WATCHED in sys.modules:
        from lm_eval.api.registry import model_registry

        register(model_registry)
    elif not any(isinstance(finder, _AfterLmEvalModels) for finder in sys.meta_path):
        sys.meta_path.insert(0, _AfterLmEvalModels())


install()
