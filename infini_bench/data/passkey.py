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

import random
from dataclasses import dataclass, replace
from typing import Any

from infini_bench.data.assemble import Needle, Part, PromptTooShort, Span, assemble
from infini_bench.data.docs import DocPlan, PromptFrame
from infini_bench.data.grid import Cell, Grid
from infini_bench.data.haystack import Haystack, HaystackChoice, HaystackError
from infini_bench.data.seeds import eval_doc_seed
from infini_bench.data.tokens import tokenizer_view
from infini_bench.validation import whole_number

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


@dataclass(frozen=True, kw_only=True)
class PasskeySpec(HaystackChoice):
    """What every document of a passkey task (or the trainer's passkey pool) shares, validated once here: the key's
    digits, the answer budget, the haystack (noise or essay) and the protocol's `style`.

    `answer_tokens` None: a sample's budget is its answer's own length, so ``input_ids + answer_ids`` is exactly the
    context length (the trainer's case); a plan's is the task's default, `passkey_answer_tokens`."""

    n_digits: int = 5
    answer_tokens: int | None = None
    style: PasskeyStyle = LANDMARK

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.source.kind == "needle":
            raise HaystackError("passkey haystack must be noise or essay (the needle haystack is a NIAH kind)")
        self.style.key(0, self.n_digits)  # the style's own rule (and wording) for the digits
        object.__setattr__(self, "n_digits", int(self.n_digits))
        if self.answer_tokens is not None:
            object.__setattr__(self, "answer_tokens", whole_number(self.answer_tokens, "answer_tokens"))


def build_passkey_sample(
    tokenizer: Any, spec: PasskeySpec, cell: Cell, frame: PromptFrame | None = None, *, add_special_tokens: bool = True
) -> dict[str, Any]:
    """One passkey sample of exactly `cell.context_length` tokens: prompt + answer budget.

    `input_ids` are the prompt's tokens (special tokens included, as the model is fed them) and
    ``len(input_ids) == context_length - answer_tokens``. `frame` wraps the prompt in a chat template (its tokens
    count in the length). Training code must use seeds below 2**62 (see `infini_bench.data.seeds`).
    """
    frame = frame or PromptFrame()
    view = tokenizer_view(tokenizer, add_special_tokens)
    style = spec.style
    key = style.key(cell.seed, spec.n_digits)
    answer_ids = view.continuation_ids(*style.answer(key))
    budget = len(answer_ids) if spec.answer_tokens is None else spec.answer_tokens
    hay = spec.tokenised(view)
    target = cell.context_length - budget
    needle = style.needle(key)
    try:
        fixed = view.n_special + len(view.raw(style.fixed_text(frame, needle)))
        room = max(target - fixed - 4, 0)  # haystack tokens, give or take the few the joins change
        cut = None
        if cell.depth < 100:
            chars = cell.depth / 100.0 * room * hay.chars_per_token(view)
            cut = hay.word_end_near(hay.start + chars, hay.start) if cell.depth > 0 else hay.start
        prompt = assemble(view, style.parts(frame, hay, needle, cut), target)
    except PromptTooShort as err:
        raise PromptTooShort(
            f"{style.family} context_length={cell.context_length} with answer_tokens={budget}: {err}"
        ) from err
    return {
        **prompt.doc_fields(hay.name, budget),
        "answer": key,
        "answers": [key],
        "gen_prefix": style.prefix,
        "answer_ids": answer_ids,
        "context_length": cell.context_length,
        "depth_percent": float(cell.depth),
        "seed": cell.seed,
        "n_digits": spec.n_digits,
        "needle_position": prompt.needle_positions[0],
        **style.doc_fields(),
    }


def plan_passkey_docs(
    tokenizer: Any, spec: PasskeySpec, grid: Grid, frame: PromptFrame | None = None, *, add_special_tokens: bool = True
) -> DocPlan:
    """The evaluation documents of one passkey length, each built (and cached on disk) when first asked for, in
    `--limit`-friendly order (sample by sample, depths spread). The style's family names the seeds and the cache."""
    frame = frame or PromptFrame()
    view = tokenizer_view(tokenizer, add_special_tokens)
    style = spec.style
    if spec.answer_tokens is None:
        spec = replace(spec, answer_tokens=passkey_answer_tokens(spec.n_digits))

    def cache_key() -> dict[str, Any]:
        return {
            "family": style.family,
            "builder": BUILDER_VERSION,
            "tokenizer": view.fingerprint,
            "context_length": grid.context_length,
            "seed": grid.base_seed,
            "n_digits": spec.n_digits,
            "answer_tokens": spec.answer_tokens,
            "haystack": spec.source.name,
            "haystack_sha": spec.text_sha(),
            "frame": frame.fingerprint,
            **style.cache_fields(),
        }

    def build(index: int, sample_index: int, depth: Any) -> dict[str, Any]:
        seed = eval_doc_seed(grid.base_seed, style.family, grid.context_length, depth, sample_index)
        doc = build_passkey_sample(view, spec, Cell(grid.context_length, depth, seed), frame)
        del doc["input_ids"], doc["answer_ids"]
        return {**doc, "haystack": spec.source.name, "sample_index": sample_index, "base_seed": grid.base_seed,
                "task_family": style.family}

    return DocPlan(style.family, list(grid.depths), grid.samples, cache_key, build)


def build_passkey_docs(*args: Any, **kwargs: Any) -> tuple[list[dict[str, Any]], bool]:
    """All documents of `plan_passkey_docs` (same arguments), built now. Returns (docs, all from the cache)."""
    return plan_passkey_docs(*args, **kwargs).build_all()
