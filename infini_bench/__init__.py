"""infini-bench: long-context benchmarks for lm-evaluation-harness, and the Infini-attention model they test.

The model classes load on first use (`from infini_bench import InfiniForCausalLM`), so that commands which never
touch a model (`infini-bench report`, the lm-eval plugin hook run at interpreter start) do not pay for importing
torch and transformers. Importing `infini_bench.modeling` registers the model with transformers' Auto classes.
"""
from __future__ import annotations

from importlib import import_module

__version__ = "0.1.0"
__all__ = ["InfiniCache", "InfiniConfig", "InfiniForCausalLM", "InfiniModel", "load_infini", "__version__"]


def __getattr__(name: str):
    if name in __all__:
        return getattr(import_module(".modeling", __name__), name)
    raise AttributeError(f"module 'infini_bench' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
