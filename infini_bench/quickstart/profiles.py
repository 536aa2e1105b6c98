"""The machines the quickstart knows, the CPU and the GPU profile, and which one this is (`select_profile`); the
stages (plan.py) read everything machine-dependent from the `Profile` they are given."""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from ..recipes import RECIPES_DIR

RECIPE = Path(RECIPES_DIR) / "quickstart-cpu.yaml"
GPU_RECIPE = Path(RECIPES_DIR) / "quickstart-gpu.yaml"
LENGTH_MULTIPLES = (1, 2, 4, 8, 16)
GPU_LENGTH_MULTIPLES = (1, 2, 4, 8, 16, 32, 64)


@dataclass(frozen=True)
class Profile:
    """What the machine decides: the recipe and how far and how the three models are evaluated.

    One object, so that everything that differs between a laptop and a GPU box is in one place and goes into every
    stage's recorded inputs (`Stage.profile`): switching machines reruns the stages instead of mixing results."""

    name: str
    recipe: Path
    multiples: tuple[int, ...]  # evaluation lengths, as multiples of the recipe's finetuning length
    device: str  # lm-eval --device for all three models
    batch_size: str  # lm-eval --batch_size
    infini_dtype: str | None  # the Infini adapter's dtype (None: its default, float32)
    llama_dtype: str  # the exported Llama's dtype under lm-eval's `hf`
    eval_threads: int | None = None  # CPU threads per evaluation (two run side by side); None: torch's default
    llama_gen_kwargs: str | None = None  # lm-eval --gen_kwargs for the Llama's run


# The CPU profile's device, dtypes and batch size are what the README's measured runs used. One thread per
# evaluation, two at a time: the Infini model, memory off and the Llama in turn on one core, the YaRN extension and
# then its evaluation on the other. The Llama decodes with transformers' static
# KV cache: the same answers (33 of 33 NIAH 4k answers identical) without the dynamic cache's copy of the whole
# cache at every new token (its NIAH 4k evaluation 53 -> 32 s on one core). Not on the GPU: there a static cache
# needs an explicit attention mask over its full length, which at 128K tokens rules out the flash SDPA kernel.
CPU = Profile("cpu", RECIPE, LENGTH_MULTIPLES, device="cpu", batch_size="4", infini_dtype=None, llama_dtype="float32",
              eval_threads=1, llama_gen_kwargs="cache_implementation=static")
# bf16 on the GPU: the models trained under bf16 autocast, fla-core's delta_l2 kernel refuses float32, and the
# Llama's float32 attention at 128K tokens would take the slow (non-flash) SDPA path. Batch 8: a 30M model's
# 128K-token batch (prefill in 16K chunks for Infini; a 128K KV cache of 8 layers × 512 per row for the Llama) is a
# few GB per row. Unmeasured, like recipes/quickstart-gpu.yaml.
GPU = Profile("gpu", GPU_RECIPE, GPU_LENGTH_MULTIPLES, device="cuda", batch_size="8", infini_dtype="bfloat16",
              llama_dtype="bfloat16")


def select_profile(recipe: str | Path | None = None) -> tuple[Profile, str]:
    """The profile for this machine and why: GPU exactly when torch sees CUDA. A `--recipe` replaces the profile's
    recipe only; device, dtype, batch size and evaluation multiples still follow the machine (evaluating a
    user's recipe on the CPU while a GPU idles would only be slow). torch is imported here, not at module level,
    so `import infini_bench` and `--help` stay light."""
    import torch

    if torch.cuda.is_available():
        profile, why = GPU, "torch.cuda.is_available() is True"
    else:
        profile, why = CPU, "no CUDA device (torch.cuda.is_available() is False)"
    if recipe is not None:
        recipe = Path(recipe)
        if recipe.resolve() != profile.recipe.resolve():
            why += f"; --recipe {recipe} replaces {profile.recipe.name}"
        profile = replace(profile, recipe=recipe)
    return profile, why
