"""Needle in a haystack over a depth x length grid, RULER-style key -> value needles.

A needle is "One of the special magic numbers for <key> is: <value>." and the question asks for the key's value.
Variants: ``single`` (one needle), ``multikey`` (the target needle plus `num_distractors` needles with other keys
at random depths) and ``multivalue`` (`num_values` needles with the same key; every value must be recalled). The
target needle (for multivalue: the first value) sits at the grid depth; the others are placed by the document seed.
"""
from __future__ import annotations

import hashlib
import random
from typing import Any

from infini_bench.data import cache
from infini_bench.data.assemble import Needle, PromptTooShort, assemble_prompt
from infini_bench.data.grid import NIAH_DEPTHS, check_count, clean_depth, grid_order, resolve_depths
from infini_bench.data.haystack import Haystack, haystack_text, load_haystack, normalise_text
from infini_bench.data.seeds import EVAL_SEED_BASE, eval_doc_seed
from infini_bench.data.tokens import tokenizer_view

NIAH_INSTRUCTION = (
    "Some special magic numbers are hidden within the following text. Make sure to memorize it. "
    "I will quiz you about the numbers afterwards."
)
NIAH_NEEDLE = " One of the special magic numbers for {key} is: {value}."
NIAH_QUESTION = (
    " What is the special magic number for {key} mentioned in the provided text?"
    " The special magic number for {key} mentioned in the provided text is"
)
NIAH_QUESTION_ALL = (
    " What are all the special magic numbers for {key} mentioned in the provided text?"
    " The special magic numbers for {key} mentioned in the provided text are"
)
VARIANTS = ("single", "multikey", "multivalue")
BUILDER_VERSION = 1

_ADJECTIVES = (
    "amber brave calm dusty eager faint gentle hollow icy jolly keen lively mellow narrow olive proud quiet rapid "
    "silver tidy urban vivid wild young zesty bold crisp dark early fuzzy grand hidden"
).split()
_NOUNS = (
    "anchor badger canyon dolphin ember falcon garden harbor island jungle kettle lantern meadow needle orchard "
    "pebble quarry river saddle tunnel umbrella valley walnut yacht zebra beacon castle desert forest glacier "
    "hammer lagoon"
).split()


def _keys(rng: random.Random, count: int) -> list[str]:
    """`count` distinct "adjective-noun" keys."""
    pool = [f"{a}-{n}" for a in _ADJECTIVES for n in _NOUNS]
    return rng.sample(pool, count)


def _values(rng: random.Random, count: int, n_digits: int) -> list[str]:
    return [str(v) for v in rng.sample(range(10 ** (n_digits - 1), 10**n_digits), count)]


def default_answer_tokens(variant: str, n_digits: int, num_values: int) -> int:
    """Generation budget: room for every value the answer must hold plus a few words."""
    wanted = num_values if variant == "multivalue" else 1
    return wanted * (n_digits + 4) + 8


def _check_variant(variant: str, num_distractors: int, num_values: int) -> tuple[int, int]:
    if variant not in VARIANTS:
        raise ValueError(f"unknown NIAH variant {variant!r}: choose one of {', '.join(VARIANTS)}")
    num_distractors = check_count(num_distractors, "num_distractors", minimum=0)
    num_values = check_count(num_values, "num_values", minimum=1)
    if variant == "multikey" and num_distractors < 1:
        raise ValueError("variant multikey needs num_distractors >= 1")
    if variant == "multivalue" and num_values < 2:
        raise ValueError("variant multivalue needs num_values >= 2")
    return num_distractors, num_values


def build_niah_sample(
    tokenizer: Any,
    context_length: int,
    depth_percent: float,
    seed: int,
    variant: str = "single",
    n_digits: int = 7,
    num_distractors: int = 3,
    num_values: int = 4,
    answer_tokens: int | None = None,
    haystack: "str | Haystack" = "filler",
    haystack_options: dict[str, Any] | None = None,
    add_special_tokens: bool = True,
) -> dict[str, Any]:
    """One NIAH sample of exactly `context_length` tokens (prompt + `answer_tokens` budget; see the module doc)."""
    view = tokenizer_view(tokenizer, add_special_tokens)
    context_length = check_count(context_length, "context_length")
    depth = clean_depth(depth_percent)
    num_distractors, num_values = _check_variant(variant, num_distractors, num_values)
    n_digits = check_count(n_digits, "n_digits")
    if n_digits > 18:
        raise ValueError(f"n_digits must be <= 18, got {n_digits}")
    rng = random.Random(int(seed))
    n_keys = 1 + (num_distractors if variant == "multikey" else 0)
    n_needles = num_values if variant == "multivalue" else n_keys
    keys = _keys(rng, n_keys)
    values = _values(rng, n_needles, n_digits)
    if variant == "multivalue":
        needle_keys = [keys[0]] * n_needles
        answers = values
        question = NIAH_QUESTION_ALL.format(key=keys[0])
    else:
        needle_keys = keys
        answers = values[:1]
        question = NIAH_QUESTION.format(key=keys[0])
    depths = [depth] + [round(rng.uniform(0.0, 100.0), 3) for _ in range(n_needles - 1)]
    needles = [Needle(NIAH_NEEDLE.format(key=k, value=v), d) for k, v, d in zip(needle_keys, values, depths)]
    budget = (
        default_answer_tokens(variant, n_digits, num_values)
        if answer_tokens is None
        else check_count(answer_tokens, "answer_tokens")
    )
    hay = load_haystack(view, haystack, haystack_options)
    start_choice = rng.randrange(1 << 30)
    try:
        prompt = assemble_prompt(view, hay, NIAH_INSTRUCTION, needles, question, context_length - budget, start_choice)
    except PromptTooShort as err:
        raise PromptTooShort(
            f"NIAH ({variant}) context_length={context_length} with answer_tokens={budget}: {err}"
        ) from err
    return {
        **prompt.doc_fields(hay.name, budget),
        "answer": ", ".join(answers),
        "answers": answers,
        "key": keys[0],
        "variant": variant,
        "context_length": context_length,
        "depth_percent": float(depth),
        "seed": int(seed),
        "n_digits": n_digits,
        "num_needles": n_needles,
        "needle_keys": needle_keys,
        "needle_values": values,
        "needle_depths_requested": [float(d) for d in depths],
        "needle_positions": prompt.needle_positions,
    }


def build_niah_docs(
    tokenizer: Any,
    context_length: int,
    depths: list[Any] | None = None,
    samples: int = 5,
    base_seed: int = EVAL_SEED_BASE,
    variant: str = "single",
    n_digits: int = 7,
    num_distractors: int = 3,
    num_values: int = 4,
    answer_tokens: int | None = None,
    haystack: str = "filler",
    haystack_options: dict[str, Any] | None = None,
    add_special_tokens: bool = True,
) -> tuple[list[dict[str, Any]], bool]:
    """All evaluation documents of one NIAH length and variant, in `--limit`-friendly order, cached on disk."""
    view = tokenizer_view(tokenizer, add_special_tokens)
    context_length = check_count(context_length, "context_length")
    depths = resolve_depths(depths, None, NIAH_DEPTHS)
    samples = check_count(samples, "samples")
    num_distractors, num_values = _check_variant(variant, num_distractors, num_values)
    if answer_tokens is None:
        answer_tokens = default_answer_tokens(variant, n_digits, num_values)
    name, text = haystack_text(haystack, haystack_options)
    key = {
        "family": "niah",
        "builder": BUILDER_VERSION,
        "tokenizer": view.fingerprint,
        "context_length": context_length,
        "depths": depths,
        "samples": samples,
        "seed": int(base_seed),
        "variant": variant,
        "n_digits": int(n_digits),
        "num_distractors": num_distractors,
        "num_values": num_values,
        "answer_tokens": int(answer_tokens),
        "haystack": name,
        "haystack_sha": hashlib.sha256(normalise_text(text).encode("utf-8")).hexdigest(),
    }

    def build() -> list[dict[str, Any]]:
        hay = load_haystack(view, haystack, haystack_options)
        docs = []
        for sample_index, depth in grid_order(depths, samples):
            seed = eval_doc_seed(base_seed, f"niah-{variant}", context_length, depth, sample_index)
            doc = build_niah_sample(
                view, context_length, depth, seed, variant, n_digits, num_distractors, num_values, answer_tokens,
                hay, haystack_options, add_special_tokens,
            )
            del doc["input_ids"]
            docs.append({**doc, "sample_index": sample_index, "base_seed": int(base_seed), "task_family": "niah"})
        return docs

    return cache.cached_docs(f"niah_{variant}", key, build)
