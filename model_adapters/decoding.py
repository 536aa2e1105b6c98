"""How `generate_until` decodes after the prefill: through the model's static cache with the decode step compiled
into CUDA graphs (the default on CUDA), or through the dynamic `InfiniCache` (the default on the CPU, where a
compiled step buys nothing and compiling costs seconds).

Model args `static_cache` and `compile` (true | false) override the defaults. The prefill is the same either way
(streaming.py); the prefilled state is written into the model's reusable static cache for its batch size, so every
request of that size decodes in the same buffers and the captured graph is replayed, not re-recorded.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from transformers import CompileConfig

from infini_bench.modeling import InfiniCache, InfiniForCausalLM
from infini_bench.modeling.static_decode import reusable_static_cache

from . import options


def _compile_config() -> CompileConfig:
    """transformers' defaults (inductor, `reduce-overhead`: CUDA graphs), allowed on any device: `compile=true`
    on the CPU compiles too (slowly) instead of being skipped by transformers' CUDA-only rule."""
    config = CompileConfig()
    config._compile_all_devices = True
    return config


@dataclass(frozen=True)
class Decoding:
    static_cache: bool
    compile: bool
    compile_config: CompileConfig = field(default_factory=_compile_config, compare=False)

    @classmethod
    def resolve(cls, device: torch.device, static_cache: object = None, compile: object = None) -> "Decoding":
        """Defaults by device: static and compiled on CUDA, dynamic elsewhere."""
        cuda = device.type == "cuda"
        static = cuda if static_cache is None else options.boolean("static_cache", static_cache)
        compiled = (static and cuda) if compile is None else options.boolean("compile", compile)
        if compiled and not static:
            raise options.InfiniArgumentError(
                "compile=true needs static_cache=true: only the static cache's decode step has fixed shapes to compile"
            )
        return cls(static, compiled)

    def generate_kwargs(self, model: InfiniForCausalLM, state: InfiniCache | None, batch_size: int) -> dict[str, Any]:
        """`generate`'s cache and compile arguments for `batch_size` prompts whose prefill is `state` (None: none)."""
        if not self.static_cache:
            return {} if state is None else {"cache": state}
        cache = reusable_static_cache(model, batch_size)  # reset
        if state is not None:
            cache.load_(state)
        if self.compile:
            return {"cache": cache, "compile_config": self.compile_config}
        return {"cache": cache, "disable_compile": True}
