"""Needle in a haystack as RULER writes it (NVIDIA/RULER ``scripts/data/synthetic/niah.py``, ``constants.py``,
``synthetic.yaml``), over a depth x length grid.

The prompt is RULER's template::

    Some special magic numbers are hidden within the following text. Make sure to memorize it. I will quiz you
    about the numbers afterwards.
    <context>
    What are all the special magic numbers for <query> mentioned in the provided text? The special magic numbers
    for <query> mentioned in the provided text are

turned singular ("A special magic number is hidden ...", "What is the special magic number ...") when one answer
is asked for, exactly by RULER's text replacements. The answer prefix (from "The special magic ...") is the
prompt's `gen_prefix`: plain prompts join it with a space (RULER's text), a chat template puts it in the assistant
turn. A needle is "One of the special magic {type_needle_v} for {key} is: {value}.".

The context is RULER's: for ``noise`` and ``needle`` haystacks one filler (or distractor needle) per line with the
needles as lines of their own, for ``essay`` one paragraph with the needles between sentences. The first answer's
needle sits at the grid depth; the other needles at depths drawn from RULER's 40 depths; keys, values, shuffle
and queries follow RULER's generator with the document's seed.

Variants (RULER's names): see `VARIANTS` (from the table in ``tasks/names.py``). Differences from RULER, kept for exact lengths and the depth grid: the
length is exact in the model's tokens (the haystack's last line or sentence is cut after a word, or inside the
last word when the exact count needs it), the first answer's needle is placed at the grid depth (RULER: random),
keys are drawn from this module's word lists (RULER: wonderwords' adjective-noun pairs), and distractor needles
never reuse a real key.
"""
from __future__ import annotations

import random
import uuid
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from infini_bench.data.assemble import Needle, PromptTooShort, Span, assemble
from infini_bench.data.docs import DocPlan, PromptFrame
from infini_bench.data.grid import Cell, Grid
from infini_bench.data.haystack import Haystack, HaystackChoice, tokenise_haystack
from infini_bench.data.seeds import eval_doc_seed
from infini_bench.data.tokens import TokenizerError, TokenizerView, tokenizer_view
from infini_bench.tasks.names import NIAH_VARIANT_ARGS
from infini_bench.validation import whole_number

NIAH_HEAD = (
    "Some special magic {type_needle_v} are hidden within the following text. Make sure to memorize it. "
    "I will quiz you about the {type_needle_v} afterwards."
)
NIAH_ASK = "What are all the special magic {type_needle_v} for {query} mentioned in the provided text?"
NIAH_PREFIX = "The special magic {type_needle_v} for {query} mentioned in the provided text are"
NIAH_NEEDLE = "One of the special magic {type_needle_v} for {key} is: {value}."
NEEDLE_TYPES = ("numbers", "words", "uuids")
#: RULER's needle depths for the needles not on the grid: np.round(np.linspace(0, 100, 40)).astype(int).
RULER_DEPTHS = tuple(int(d) for d in np.round(np.linspace(0, 100, num=40, endpoint=True)).astype(int))
BUILDER_VERSION = 3  # 3: a line haystack is never cut right after a newline (no blank line)


#: The largest `n_digits`: a value must fit a 64-bit int.
MAX_DIGITS = 18


def check_variant(variant: str) -> str:
    """`variant` when it is one of RULER's NIAH variants, else one sentence listing them."""
    if variant not in NIAH_VARIANT_ARGS:
        raise ValueError(f"unknown NIAH variant {variant!r}: choose one of {', '.join(NIAH_VARIANT_ARGS)}")
    return variant


@dataclass(frozen=True, kw_only=True)
class NiahSpec(HaystackChoice):
    """What every document of a NIAH task (or the trainer's pool of one variant) shares, validated once here:
    RULER's configuration (``synthetic.yaml``'s args: haystack, needle types and counts), the values' digits and
    the answer budget. Make one with `niah_spec` (a variant's arguments with options overridden).

    `answer_tokens` None: `default_answer_tokens` at the document's length."""

    variant: str = "single_1"
    type_needle_k: str = "words"
    type_needle_v: str = "numbers"
    num_needle_k: int = 1
    num_needle_v: int = 1
    num_needle_q: int = 1
    n_digits: int = 7
    answer_tokens: int | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        check_variant(self.variant)
        for name in ("type_needle_k", "type_needle_v"):
            if getattr(self, name) not in NEEDLE_TYPES:
                raise ValueError(f"{name} must be one of {', '.join(NEEDLE_TYPES)}, got {getattr(self, name)!r}")
        for name in ("num_needle_k", "num_needle_v", "num_needle_q", "n_digits"):
            object.__setattr__(self, name, whole_number(getattr(self, name), name))
        if self.n_digits > MAX_DIGITS:
            raise ValueError(f"n_digits must be <= {MAX_DIGITS}, got {self.n_digits}")
        if self.answer_tokens is not None:
            object.__setattr__(self, "answer_tokens", whole_number(self.answer_tokens, "answer_tokens"))
        object.__setattr__(self, "num_needle_k", max(self.num_needle_k, self.num_needle_q))  # RULER: k = max(k, q)

    def answer_budget(self, context_length: int) -> int:
        """The answer tokens a document of `context_length` tokens reserves."""
        return default_answer_tokens(context_length, self) if self.answer_tokens is None else self.answer_tokens


#: Each variant's spec (RULER's arguments, this project's defaults), from the one table in `tasks/names.py`.
VARIANTS: dict[str, NiahSpec] = {name: NiahSpec(variant=name, **args) for name, args in NIAH_VARIANT_ARGS.items()}  # type: ignore[arg-type]

_ADJECTIVES = (
    "amber brave calm dusty eager faint gentle hollow icy jolly keen lively mellow narrow olive proud quiet rapid "
    "silver tidy urban vivid wild young zesty bold crisp dark early fuzzy grand hidden ancient bitter bright cheap "
    "clever cosmic curly damp dizzy empty fancy fierce flat fluffy giant glossy golden green happy heavy honest "
    "huge humble jagged juicy kind large lazy little loud lucky magic mighty misty modern muddy nervous noble odd "
    "orange pale plain polite purple rare rich rough royal rusty salty scarlet shiny short shy silent simple sleepy"
).split()
_NOUNS = (
    "anchor badger canyon dolphin ember falcon garden harbor island jungle kettle lantern meadow needle orchard "
    "pebble quarry river saddle tunnel umbrella valley walnut yacht zebra beacon castle desert forest glacier "
    "hammer lagoon acorn apron arrow attic basket beetle blanket bottle bridge bucket button cabin camel candle "
    "carpet cherry chimney cloud comet copper cradle crystal dragon drum eagle engine feather fiddle garnet goblet "
    "harp helmet hornet jacket jewel kitten ladder lemon magnet mirror monkey napkin nest oyster paddle parrot pillow"
).split()
_WORDS = sorted({f"{a}-{n}" for a in _ADJECTIVES for n in _NOUNS})


def singular(template: str) -> str:
    """RULER's text replacements for a prompt that asks for one answer (``niah.py``)."""
    return template.replace("Some", "A").replace("are all", "is").replace("are", "is").replace("answers", "answer")


def _draw(rng: random.Random, kind: str, n_digits: int) -> str:
    if kind == "numbers":
        return str(rng.randint(10 ** (n_digits - 1), 10**n_digits - 1))
    if kind == "words":
        return rng.choice(_WORDS)
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def _draw_distinct(rng: random.Random, kind: str, n_digits: int, count: int, taken: set[str]) -> list[str]:
    out: list[str] = []
    for _ in range(count * 1000):
        if len(out) == count:
            break
        value = _draw(rng, kind, n_digits)
        if value not in taken:
            taken.add(value)
            out.append(value)
    if len(out) < count:
        raise ValueError(f"cannot draw {count} distinct {kind} (n_digits={n_digits} is too small)")
    return out


def niah_spec(variant: str, **options: Any) -> NiahSpec:
    """`variant`'s spec with the given options (any `NiahSpec` field but the variant; None or "" keeps the
    variant's value) overridden; errors name the bad value."""
    given = {k: v for k, v in options.items() if v not in (None, "")}
    return replace(VARIANTS[check_variant(variant)], **given)


#: Answer tokens a short context still leaves per expected value (a UUID takes many more than a number).
_PER_VALUE = {"numbers": 16, "words": 16, "uuids": 48}


def default_answer_tokens(context_length: int, cfg: NiahSpec | None = None) -> int:
    """RULER's generation budget (``tokens_to_generate`` 128) from 4K tokens (RULER's shortest length) on; a
    shorter context gets 1/32 of its length, but at least room for every value asked for, so small models' short
    contexts keep room for the prompt and do not generate 128 tokens per answer."""
    cfg = cfg or VARIANTS["single_1"]
    values = cfg.num_needle_q * cfg.num_needle_v
    return min(128, max(_PER_VALUE[cfg.type_needle_v] * values, int(context_length) // 32))


def _texts(cfg: NiahSpec, query: str) -> tuple[str, str, str]:
    """(head, question, answer prefix) with RULER's singular/plural wording."""
    head, ask, prefix, type_v = NIAH_HEAD, NIAH_ASK, NIAH_PREFIX, cfg.type_needle_v
    if cfg.num_needle_q * cfg.num_needle_v == 1:
        head, ask, prefix, type_v = singular(head), singular(ask), singular(prefix), type_v[:-1]
    return (
        head.format(type_needle_v=type_v),
        ask.format(type_needle_v=type_v, query=query),
        prefix.format(type_needle_v=type_v, query=query),
    )


def _needle_haystack(view: TokenizerView, cfg: NiahSpec, rng: random.Random, n_digits: int, room: int,
                     keys: set[str]) -> Haystack:
    """RULER's ``needle`` haystack for one document: lines of needles with other keys, enough for `room` tokens."""

    def line() -> str:
        key = _draw(rng, cfg.type_needle_k, n_digits)
        while key in keys:
            key = _draw(rng, cfg.type_needle_k, n_digits)
        return NIAH_NEEDLE.format(type_needle_v=cfg.type_needle_v, key=key, value=_draw(rng, cfg.type_needle_v, n_digits))

    probe = [line() for _ in range(20)]
    per_line = max(len(view.raw("\n".join(probe))) / len(probe), 1.0)
    lines = probe + [line() for _ in range(max(int(room / per_line * 1.15) + 10 - len(probe), 0))]
    return tokenise_haystack(view, "needle", "\n".join(lines) + "\n", lines=True, use_cache=False)


def build_niah_sample(
    tokenizer: Any, spec: NiahSpec, cell: Cell, frame: PromptFrame | None = None, *, add_special_tokens: bool = True
) -> dict[str, Any]:
    """One NIAH sample of exactly `cell.context_length` tokens (prompt + the spec's answer budget; see the module
    doc)."""
    frame = frame or PromptFrame()
    view = tokenizer_view(tokenizer, add_special_tokens)
    context_length, depth, n_digits = cell.context_length, cell.depth, spec.n_digits
    budget = spec.answer_budget(context_length)
    target = context_length - budget

    # RULER's generate_input_output: keys, values per key, needles shuffled, queries sampled.
    rng = random.Random(cell.seed)
    taken: set[str] = set()
    keys = _draw_distinct(rng, spec.type_needle_k, n_digits, spec.num_needle_k, taken)
    values = [_draw_distinct(rng, spec.type_needle_v, n_digits, spec.num_needle_v, taken) for _ in keys]
    needles = [(k, v) for k, vs in zip(keys, values) for v in vs]
    rng.shuffle(needles)
    queried = rng.sample(range(len(keys)), spec.num_needle_q)
    queries = [keys[i] for i in queried]
    answers = [v for i in queried for v in values[i]]
    query = ", ".join(queries[:-1]) + ", and " + queries[-1] if len(queries) > 1 else queries[0]
    head, ask, prefix = _texts(spec, query)
    texts = {(k, v): NIAH_NEEDLE.format(type_needle_v=spec.type_needle_v, key=k, value=v) for k, v in needles}
    target_needle = (queries[0], answers[0])
    others = [n for n in needles if n != target_needle]
    drawn = rng.sample(RULER_DEPTHS, len(others)) if len(others) <= len(RULER_DEPTHS) else rng.choices(RULER_DEPTHS, k=len(others))
    depths = {target_needle: float(depth), **dict(zip(others, (float(d) for d in drawn)))}

    head_text = frame.before + head + "\n"
    tail_text = "\n" + ask + frame.between + prefix + frame.after
    fixed = view.n_special + len(view.raw(head_text + " ".join(texts.values()) + tail_text)) + len(needles)
    room = max(target - fixed - 4 - 2 * len(needles), 0)
    drawn_lines = spec.source.kind == "needle"  # RULER's needle haystack is drawn per document
    for attempt in range(4):
        if drawn_lines:
            hay = _needle_haystack(view, spec, rng, n_digits, room, set(keys))
        else:
            hay = spec.tokenised(view, lines=spec.source.kind == "noise")
        parts = _context_parts(view, hay, needles, texts, depths, room, head_text, tail_text)
        try:
            prompt = assemble(view, parts, target)
            break
        except PromptTooShort as err:
            raise PromptTooShort(
                f"NIAH ({spec.variant}) context_length={context_length} with answer_tokens={budget}: {err}"
            ) from err
        except TokenizerError:
            # a tokenizer whose count skips the target at every nearby end: a needle haystack draws new lines
            if not drawn_lines or attempt == 3:
                raise
    order = [p for p in parts if isinstance(p, Needle)]
    position = {p.text: (pos, d) for p, pos, d in zip(order, prompt.needle_positions, prompt.needle_depths)}
    return {
        **prompt.doc_fields(spec.source.name, budget),
        "needle_depth_percent": position[texts[target_needle]][1],
        "answer": answers[0] if len(answers) == 1 else ", ".join(answers),
        "answers": answers,
        "gen_prefix": prefix,
        "query": query,
        "key": queries[0],
        "queries": queries,
        "variant": spec.variant,
        "type_needle_k": spec.type_needle_k,
        "type_needle_v": spec.type_needle_v,
        "context_length": context_length,
        "depth_percent": float(depth),
        "seed": cell.seed,
        "n_digits": n_digits,
        "num_needles": len(needles),
        "needle_keys": [k for k, _ in needles],
        "needle_values": [v for _, v in needles],
        "needle_depths_requested": [depths[n] for n in needles],
        "needle_depths": [position[texts[n]][1] for n in needles],
        "needle_positions": [position[texts[n]][0] for n in needles],
        "needle_position": position[texts[target_needle]][0],
    }


def _context_parts(
    view: TokenizerView,
    hay: Haystack,
    needles: list[tuple[str, str]],
    texts: dict[tuple[str, str], str],
    depths: dict[tuple[str, str], float],
    room: int,
    head_text: str,
    tail_text: str,
) -> list[Any]:
    """Prompt parts: head, RULER's context (needles at their depths), tail; the haystack's last span is free.

    Prose (essays) is RULER's ``" ".join(sentences with needles between)``, empty pieces kept; lines (noise,
    needle haystacks) are ``"\\n".join(lines with needle lines inserted)``."""
    start = hay.start
    cpt = hay.chars_per_token(view)
    end_estimate = start + int(room * cpt)
    placed = []  # (insert char or None for "after everything", needle)
    for needle in needles:
        d = depths[needle]
        if d >= 100:
            placed.append((None, needle))
        elif d <= 0:
            placed.append((start, needle))
        else:
            target = start + d / 100.0 * room * cpt
            placed.append((hay.nearest(hay.insert_chars, target, start, end_estimate), needle))
    inside = sorted((c, i, n) for i, (c, n) in enumerate(placed) if c is not None)
    at_end = [n for c, n in placed if c is None]
    joiner = "\n" if hay.lines else " "
    pieces: list[Any] = []  # spans and needles in order, joined below
    prev = start
    for c, _, needle in inside:
        # the span before this needle, without the separator that precedes the next sentence or line
        pieces.append(Span(hay, prev, max(c - 1, prev)))
        pieces.append(Needle(texts[needle]))
        prev = c
    pieces.append(Span(hay, prev))  # the free span
    for needle in at_end:
        pieces.append(Needle(texts[needle]))
        if not hay.lines:
            pieces.append(Span(hay, prev, prev))  # RULER's empty sentence group after a needle at the end
    if hay.lines:  # RULER inserts needle lines into a list: no blank line for an empty group
        pieces = [p for p in pieces if not (isinstance(p, Span) and p.end is not None and p.end <= p.start)]
    parts: list[Any] = [head_text]
    for k, piece in enumerate(pieces):
        if k:
            parts.append(joiner)
        if not (isinstance(piece, Span) and piece.end is not None and piece.end <= piece.start):
            parts.append(piece)  # " ".join keeps an empty piece: only its separator shows
    parts.append(tail_text)
    return parts


def plan_niah_docs(
    tokenizer: Any, spec: NiahSpec, grid: Grid, frame: PromptFrame | None = None, *, add_special_tokens: bool = True
) -> DocPlan:
    """The evaluation documents of one NIAH length and variant, each built (and cached) when first asked for, in
    `--limit`-friendly order."""
    frame = frame or PromptFrame()
    view = tokenizer_view(tokenizer, add_special_tokens)
    spec = replace(spec, answer_tokens=spec.answer_budget(grid.context_length))

    def cache_key() -> dict[str, Any]:
        return {
            "family": "niah",
            "builder": BUILDER_VERSION,
            "tokenizer": view.fingerprint,
            "context_length": grid.context_length,
            "seed": grid.base_seed,
            "variant": spec.variant,
            "config": [spec.haystack, spec.type_needle_k, spec.type_needle_v, spec.num_needle_k, spec.num_needle_v,
                       spec.num_needle_q],
            "n_digits": spec.n_digits,
            "answer_tokens": spec.answer_tokens,
            "haystack": spec.source.name,
            "haystack_sha": spec.text_sha(),
            "frame": frame.fingerprint,
        }

    def build(index: int, sample_index: int, depth: Any) -> dict[str, Any]:
        seed = eval_doc_seed(grid.base_seed, f"niah-{spec.variant}", grid.context_length, depth, sample_index)
        doc = build_niah_sample(view, spec, Cell(grid.context_length, depth, seed), frame)
        del doc["input_ids"]
        return {**doc, "haystack": spec.source.name, "sample_index": sample_index, "base_seed": grid.base_seed,
                "task_family": "niah"}

    return DocPlan(f"niah_{spec.variant}", list(grid.depths), grid.samples, cache_key, build)


def build_niah_docs(*args: Any, **kwargs: Any) -> tuple[list[dict[str, Any]], bool]:
    """All documents of `plan_niah_docs` (same arguments), built now. Returns (docs, all from the cache)."""
    return plan_niah_docs(*args, **kwargs).build_all()


__all__ = [
    "NIAH_NEEDLE",
    "NiahSpec",
    "VARIANTS",
    "build_niah_docs",
    "build_niah_sample",
    "default_answer_tokens",
    "niah_spec",
    "plan_niah_docs",
    "singular",
]
