"""Passkey retrieval as Landmark Attention writes it (epfml/landmark-attention, ``llama/run_test.py``,
``generate_prompt``; the Infini-attention paper's passkey benchmark): one builder for the lm-eval tasks and for
the trainer's finetuning data.

The prompt is Landmark's five lines joined with ``"\\n"``::

    There is an important info hidden inside a lot of irrelevant text. Find it and memorize them. I will quiz ...
    The grass is green. The sky is blue. ... (garbage before the key; empty at depth 0)
    The pass key is 71432. Remember it. 71432 is the pass key.
    The grass is green. The sky is blue. ... (garbage after the key; empty at depth 100)
    What is the pass key? The pass key is

Both garbage lines start at the filler's beginning, as Landmark's ``garbage_inf[:n]`` does. The last line's answer
prefix "The pass key is" is the prompt's `gen_prefix`: plain prompts join it to the question with a space (exactly
Landmark's line); with a chat template it opens the assistant turn (see `PromptFrame`). Differences from
Landmark: the length is exact in the model's tokens (Landmark counts characters), the key has `n_digits` digits
(Landmark: 1-50000), the garbage before the key is cut after a whole word at the requested depth (Landmark: a
random character offset), and the garbage after it is cut after a word, or inside the last word when the exact
count needs it.
"""
from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass
from typing import Any

from infini_bench.data.assemble import Needle, Part, PromptTooShort, Span, assemble
from infini_bench.data.docs import DocPlan, PromptFrame
from infini_bench.data.grid import PASSKEY_DEPTHS, clean_depth, resolve_depths
from infini_bench.validation import whole_number
from infini_bench.data.haystack import Haystack, HaystackError, haystack_spec, haystack_text, load_haystack, normalise_text
from infini_bench.data.seeds import EVAL_SEED_BASE, eval_doc_seed
from infini_bench.data.tokens import tokenizer_view

PASSKEY_INSTRUCTION = (
    "There is an important info hidden inside a lot of irrelevant text. Find it and memorize them. "
    "I will quiz you about the important information there."
)
PASSKEY_NEEDLE = "The pass key is {key}. Remember it. {key} is the pass key."
PASSKEY_ASK = "What is the pass key?"
PASSKEY_PREFIX = "The pass key is"
#: The plain prompt's last line: the question and the answer prefix, as Landmark writes it.
PASSKEY_QUESTION = f"{PASSKEY_ASK} {PASSKEY_PREFIX}"
BUILDER_VERSION = 2
MAX_DIGITS = 64


def passkey_answer_tokens(n_digits: int = 5) -> int:
    """The passkey task's default generation budget: the key and its end with room to spare, at least 16 tokens."""
    return max(16, int(n_digits) + 8)


def passkey_for_seed(seed: int, n_digits: int = 5) -> str:
    """The pass key a seed draws: `n_digits` digits, no leading zero."""
    n_digits = whole_number(n_digits, "n_digits")
    if n_digits > MAX_DIGITS:
        raise ValueError(f"n_digits must be <= {MAX_DIGITS}, got {n_digits}")
    rng = random.Random(int(seed))
    return str(rng.randint(10 ** (n_digits - 1), 10**n_digits - 1))


@dataclass(frozen=True)
class PasskeyStyle:
    """One passkey protocol's text and keys: Landmark's (this class, the `passkey_<len>` tasks) or another
    protocol's (a subclass: nanotron's in `infini_bench.data.passkey_nanotron`). The exact-length assembly, the depth
    grid, document seeds and the on-disk cache are shared by every style; a style says only what its prompt says,
    where its needle and haystack go, and how it draws a key."""

    family: str = "passkey"  # task family: document seeds, the cache folder and each doc's task_family
    prefix: str = PASSKEY_PREFIX  # the answer prefix (`gen_prefix`)

    def key(self, seed: int, n_digits: int) -> str:
        """The pass key a document seed draws (raises for an invalid `n_digits`)."""
        return passkey_for_seed(seed, n_digits)

    def needle(self, key: str) -> str:
        return PASSKEY_NEEDLE.format(key=key)

    def answer(self, key: str) -> tuple[str, str]:
        """(text before the answer, the answer's text) for the answer's token ids: Landmark's answer follows the
        prefix after a space."""
        return PASSKEY_QUESTION, " " + key

    def fixed_text(self, frame: PromptFrame, needle: str) -> str:
        """Everything but the haystack, to estimate how many haystack tokens fit."""
        return frame.before + PASSKEY_INSTRUCTION + "\n\n" + needle + "\n\n" + PASSKEY_ASK + frame.between + self.prefix + frame.after

    def parts(self, frame: PromptFrame, hay: Haystack, needle: str, cut: int | None) -> list[Part]:
        """The prompt's parts; `cut` is where the haystack before the needle ends (`hay.start` at depth 0, None at
        depth 100). Landmark's five lines: both garbage lines start at the filler's beginning."""
        head = frame.before + PASSKEY_INSTRUCTION + "\n"
        tail = "\n" + PASSKEY_ASK + frame.between + self.prefix + frame.after
        if cut is None:
            return [head, Span(hay, hay.start), "\n", Needle(needle), "\n", tail]
        return [head, Span(hay, hay.start, cut), "\n", Needle(needle), "\n", Span(hay, hay.start), tail]

    def cache_fields(self) -> dict[str, Any]:
        """What, beyond the shared options, a document of this style depends on (Landmark's: nothing more)."""
        return {}

    def doc_fields(self) -> dict[str, Any]:
        """Fields this style adds to every document."""
        return {}


LANDMARK = PasskeyStyle()


def _passkey_haystack(view, haystack: "str | Haystack", options: dict[str, Any] | None) -> Haystack:
    if isinstance(haystack, Haystack):
        return haystack
    spec = haystack_spec(haystack, options)
    if spec.kind == "needle":
        raise HaystackError("passkey haystack must be noise or essay (the needle haystack is a NIAH kind)")
    return load_haystack(view, spec, options, lines=False)


def build_passkey_sample(
    tokenizer: Any,
    context_length: int,
    depth_percent: float,
    seed: int,
    n_digits: int = 5,
    answer_tokens: int | None = None,
    haystack: "str | Haystack" = "noise",
    haystack_options: dict[str, Any] | None = None,
    add_special_tokens: bool = True,
    frame: PromptFrame | None = None,
    style: PasskeyStyle = LANDMARK,
) -> dict[str, Any]:
    """One passkey sample of exactly `context_length` tokens: prompt + answer budget.

    `input_ids` are the prompt's tokens (special tokens included, as the model is fed them) and
    ``len(input_ids) == context_length - answer_tokens``. With `answer_tokens=None` the budget is the answer's own
    length, so ``input_ids + answer_ids`` is exactly `context_length` tokens (what a trainer wants). `frame` wraps
    the prompt in a chat template (its tokens count in the length). Training code must pass seeds below 2**62
    (see `infini_bench.data.seeds`). `style` is the protocol's text (Landmark's by default).
    """
    frame = frame or PromptFrame()
    view = tokenizer_view(tokenizer, add_special_tokens)
    context_length = whole_number(context_length, "context_length")
    depth = clean_depth(depth_percent)
    key = style.key(seed, n_digits)
    answer_ids = view.continuation_ids(*style.answer(key))
    budget = len(answer_ids) if answer_tokens is None else whole_number(answer_tokens, "answer_tokens")
    hay = _passkey_haystack(view, haystack, haystack_options)
    target = context_length - budget
    needle = style.needle(key)
    try:
        fixed = view.n_special + len(view.raw(style.fixed_text(frame, needle)))
        room = max(target - fixed - 4, 0)  # haystack tokens, give or take the few the joins change
        cut = None
        if depth < 100:
            chars = depth / 100.0 * room * hay.chars_per_token(view)
            cut = hay.word_end_near(hay.start + chars, hay.start) if depth > 0 else hay.start
        prompt = assemble(view, style.parts(frame, hay, needle, cut), target)
    except PromptTooShort as err:
        raise PromptTooShort(f"{style.family} context_length={context_length} with answer_tokens={budget}: {err}") from err
    return {
        **prompt.doc_fields(hay.name, budget),
        "answer": key,
        "answers": [key],
        "gen_prefix": style.prefix,
        "answer_ids": answer_ids,
        "context_length": context_length,
        "depth_percent": float(depth),
        "seed": int(seed),
        "n_digits": int(n_digits),
        "needle_position": prompt.needle_positions[0],
        **style.doc_fields(),
    }


def plan_passkey_docs(
    tokenizer: Any,
    context_length: int,
    depths: list[Any] | None = None,
    samples: int = 5,
    base_seed: int = EVAL_SEED_BASE,
    n_digits: int = 5,
    answer_tokens: int = 16,
    haystack: str = "noise",
    haystack_options: dict[str, Any] | None = None,
    add_special_tokens: bool = True,
    frame: PromptFrame | None = None,
    style: PasskeyStyle = LANDMARK,
) -> DocPlan:
    """The evaluation documents of one passkey length, each built (and cached on disk) when first asked for, in
    `--limit`-friendly order (sample by sample, depths spread). Options are validated here, before any build.
    `style` is the protocol's text (Landmark's by default; its family names the seeds and the cache)."""
    frame = frame or PromptFrame()
    view = tokenizer_view(tokenizer, add_special_tokens)
    context_length = whole_number(context_length, "context_length")
    depths = resolve_depths(depths, None, PASSKEY_DEPTHS)
    samples = whole_number(samples, "samples")
    answer_tokens = whole_number(answer_tokens, "answer_tokens")
    style.key(0, n_digits)  # validates n_digits early
    spec = haystack_spec(haystack, haystack_options)
    if spec.kind == "needle":
        raise HaystackError("passkey haystack must be noise or essay (the needle haystack is a NIAH kind)")

    def cache_key() -> dict[str, Any]:
        _, text = haystack_text(spec, haystack_options)
        return {
            "family": style.family,
            "builder": BUILDER_VERSION,
            "tokenizer": view.fingerprint,
            "context_length": context_length,
            "seed": int(base_seed),
            "n_digits": int(n_digits),
            "answer_tokens": answer_tokens,
            "haystack": spec.name,
            "haystack_sha": hashlib.sha256(normalise_text(text).encode("utf-8")).hexdigest(),
            "frame": frame.fingerprint,
            **style.cache_fields(),
        }

    def build(index: int, sample_index: int, depth: Any) -> dict[str, Any]:
        seed = eval_doc_seed(base_seed, style.family, context_length, depth, sample_index)
        hay = _passkey_haystack(view, spec, haystack_options)
        doc = build_passkey_sample(view, context_length, depth, seed, n_digits, answer_tokens, hay, haystack_options,
                                   add_special_tokens, frame, style)
        del doc["input_ids"], doc["answer_ids"]
        return {**doc, "haystack": spec.name, "sample_index": sample_index, "base_seed": int(base_seed),
                "task_family": style.family}

    return DocPlan(style.family, depths, samples, cache_key, build)


def build_passkey_docs(*args: Any, **kwargs: Any) -> tuple[list[dict[str, Any]], bool]:
    """All documents of `plan_passkey_docs` (same arguments), built now. Returns (docs, all from the cache)."""
    return plan_passkey_docs(*args, **kwargs).build_all()
