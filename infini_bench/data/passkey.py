"""Passkey retrieval (Mohtashami & Jaggi 2023; the Infini-attention paper's benchmark): one builder for the
lm-eval tasks and for the trainer's finetuning data.

The prompt is the classic one: an instruction, the filler "The grass is green. The sky is blue. ..." repeated, the
needle "The pass key is N. Remember it. N is the pass key." at a sentence boundary at the requested depth, and
"What is the pass key? The pass key is". Its length is exact in the model's own tokens.
"""
from __future__ import annotations

import hashlib
import random
from typing import Any

from infini_bench.data import cache
from infini_bench.data.assemble import Needle, PromptTooShort, assemble_prompt
from infini_bench.data.grid import PASSKEY_DEPTHS, check_count, clean_depth, grid_order, resolve_depths
from infini_bench.data.haystack import Haystack, haystack_text, load_haystack, normalise_text
from infini_bench.data.seeds import EVAL_SEED_BASE, eval_doc_seed
from infini_bench.data.tokens import tokenizer_view

PASSKEY_INSTRUCTION = (
    "There is an important info hidden inside a lot of irrelevant text. Find it and memorize them. "
    "I will quiz you about the important information there."
)
PASSKEY_NEEDLE = " The pass key is {key}. Remember it. {key} is the pass key."
PASSKEY_QUESTION = " What is the pass key? The pass key is"
BUILDER_VERSION = 1
MAX_DIGITS = 64


def passkey_for_seed(seed: int, n_digits: int = 5) -> str:
    """The pass key a seed draws: `n_digits` digits, no leading zero."""
    n_digits = check_count(n_digits, "n_digits")
    if n_digits > MAX_DIGITS:
        raise ValueError(f"n_digits must be <= {MAX_DIGITS}, got {n_digits}")
    rng = random.Random(int(seed))
    return str(rng.randint(10 ** (n_digits - 1), 10**n_digits - 1))


def build_passkey_sample(
    tokenizer: Any,
    context_length: int,
    depth_percent: float,
    seed: int,
    n_digits: int = 5,
    answer_tokens: int | None = None,
    haystack: "str | Haystack" = "filler",
    haystack_options: dict[str, Any] | None = None,
    add_special_tokens: bool = True,
) -> dict[str, Any]:
    """One passkey sample of exactly `context_length` tokens: prompt + answer budget.

    `input_ids` are the prompt's tokens (special tokens included, as the model is fed them) and
    ``len(input_ids) == context_length - answer_tokens``. With `answer_tokens=None` the budget is the answer's own
    length, so ``input_ids + answer_ids`` is exactly `context_length` tokens (what a trainer wants). Training code
    must pass seeds below 2**62 (see `infini_bench.data.seeds`).
    """
    view = tokenizer_view(tokenizer, add_special_tokens)
    context_length = check_count(context_length, "context_length")
    depth = clean_depth(depth_percent)
    key = passkey_for_seed(seed, n_digits)
    answer_ids = view.continuation_ids(PASSKEY_QUESTION, " " + key)
    budget = len(answer_ids) if answer_tokens is None else check_count(answer_tokens, "answer_tokens")
    hay = load_haystack(view, haystack, haystack_options)
    try:
        prompt = assemble_prompt(
            view,
            hay,
            PASSKEY_INSTRUCTION,
            [Needle(PASSKEY_NEEDLE.format(key=key), depth)],
            PASSKEY_QUESTION,
            context_length - budget,
            start_choice=0,
        )
    except PromptTooShort as err:
        raise PromptTooShort(f"passkey context_length={context_length} with answer_tokens={budget}: {err}") from err
    return {
        **prompt.doc_fields(hay.name, budget),
        "answer": key,
        "answer_ids": answer_ids,
        "context_length": context_length,
        "depth_percent": float(depth),
        "seed": int(seed),
        "n_digits": int(n_digits),
        "needle_position": prompt.needle_positions[0],
    }


def build_passkey_docs(
    tokenizer: Any,
    context_length: int,
    depths: list[Any] | None = None,
    samples: int = 5,
    base_seed: int = EVAL_SEED_BASE,
    n_digits: int = 5,
    answer_tokens: int = 16,
    haystack: str = "filler",
    haystack_options: dict[str, Any] | None = None,
    add_special_tokens: bool = True,
) -> tuple[list[dict[str, Any]], bool]:
    """All evaluation documents of one passkey length, in `--limit`-friendly order, cached on disk.

    Returns (docs, from_cache). Each doc is a `build_passkey_sample` without the id lists, plus `sample_index`
    and `base_seed`; its `seed` is an evaluation seed (see `infini_bench.data.seeds`).
    """
    view = tokenizer_view(tokenizer, add_special_tokens)
    context_length = check_count(context_length, "context_length")
    depths = resolve_depths(depths, None, PASSKEY_DEPTHS)
    samples = check_count(samples, "samples")
    answer_tokens = check_count(answer_tokens, "answer_tokens")
    passkey_for_seed(0, n_digits)  # validates n_digits early
    name, text = haystack_text(haystack, haystack_options)
    key = {
        "family": "passkey",
        "builder": BUILDER_VERSION,
        "tokenizer": view.fingerprint,
        "context_length": context_length,
        "depths": depths,
        "samples": samples,
        "seed": int(base_seed),
        "n_digits": int(n_digits),
        "answer_tokens": answer_tokens,
        "haystack": name,
        "haystack_sha": hashlib.sha256(normalise_text(text).encode("utf-8")).hexdigest(),
    }

    def build() -> list[dict[str, Any]]:
        hay = load_haystack(view, haystack, haystack_options)
        docs = []
        for sample_index, depth in grid_order(depths, samples):
            seed = eval_doc_seed(base_seed, "passkey", context_length, depth, sample_index)
            doc = build_passkey_sample(
                view, context_length, depth, seed, n_digits, answer_tokens, hay, haystack_options, add_special_tokens
            )
            del doc["input_ids"], doc["answer_ids"]
            docs.append({**doc, "sample_index": sample_index, "base_seed": int(base_seed), "task_family": "passkey"})
        return docs

    return cache.cached_docs("passkey", key, build)
