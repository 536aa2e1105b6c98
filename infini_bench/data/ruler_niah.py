"""RULER's own NIAH documents (``--metadata protocol=ruler``), then made exact in the model's tokens.

`RulerNiahGenerator` is RULER's ``scripts/data/synthetic/niah.py`` (NVIDIA/RULER c3f5e3b) step by step, with one
`random.Random(seed)` in place of the script's global ``random.seed(seed)``: the same first draw (an input of
``incremental`` haystack units), the same binary search for the number of haystack units (lines of filler or
distractor needles, or essay words) whose prompt + ``tokens_to_generate`` fits ``max_seq_length``, then per
document the same retry loop, the same key, value, shuffle (``random.Random(seed).shuffle``: one permutation for
every document), depth and query draws, keys from wonderwords' adjective-noun pairs (`ruler_words`), essays split
into sentences by nltk's ``sent_tokenize``. Token counts are RULER's: the whole text (answer prefix included, no
special tokens) in the model's tokenizer; with a chat template its text counts too, as RULER counts a model
template's. So document ``i`` of a length is RULER's document ``i`` at that ``max_seq_length``.

`build_ruler_doc` then does what RULER leaves open: RULER's prompt only fits (it is up to one haystack unit shorter
than allowed, and counts no BOS); ours has exactly ``context_length - answer_tokens`` tokens, special tokens
included. The text up to and including the last needle is RULER's; the haystack after the last needle is RULER's
continued (more filler lines, more distractor lines from a separate generator that never reuses a key of the
document, or the essay's next words) and cut after a word, or inside a word when the count needs it. That cut is
the only place where our text differs from RULER's (``tests/test_ruler_protocol.py`` checks it on documents RULER's
script wrote).
"""
from __future__ import annotations

import functools
import hashlib
import random
import re
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from infini_bench.data import cache
from infini_bench.data.assemble import Needle, PromptTooShort, Span, assemble
from infini_bench.data.docs import PromptFrame
from infini_bench.data.grid import Grid
from infini_bench.data.haystack import FILLER, haystack_text, load_haystack, normalise_text, tokenise_haystack
from infini_bench.data.niah import NIAH_ASK, NIAH_HEAD, NIAH_NEEDLE, NIAH_PREFIX, NiahSpec, singular
from infini_bench.data.ruler_words import RulerDependencyError, ruler_words
from infini_bench.data.tokens import TokenizerView

RULER_COMMIT = "c3f5e3b4f87f97e048793bb510a3a6b19a46bf3a"
RULER_SEED = 42
RULER_SAMPLES = 500
RULER_TOKENS_TO_GENERATE = 128
#: niah.py's DEPTHS: where essay needles go (sentence index = int(n_sentences * depth / 100)).
RULER_DEPTHS = [int(d) for d in np.round(np.linspace(0, 100, num=40, endpoint=True)).astype(int)]
#: The template scripts/data/prepare.py hands niah.py for model_template_type=base: the task template
#: (constants.TASKS['niah']['template']) followed by its answer prefix (which starts with a space).
RULER_TEMPLATE = NIAH_HEAD + "\n{context}\n" + NIAH_ASK + " " + NIAH_PREFIX
_PREFIX_MARK = " " + NIAH_PREFIX[:9]  # niah.py splits at rfind(answer_prefix[:10]) = " The speci"


class _TooLong(Exception):
    """RULER's ``assert length <= max_seq_length`` in its retry loop."""


@dataclass
class RulerDraw:
    """One RULER document before our exact length: its context pieces and what was drawn for it."""

    pieces: list[str]  # context pieces in order; joined by `joiner` they are RULER's context
    needle_at: list[int]  # index in `pieces` of each needle, in needle (shuffled) order
    joiner: str  # "\n" (lines) or " " (essay)
    needles: list[str]  # needle sentences in RULER's shuffled order
    needle_kv: list[tuple[str, str]]
    keys: list[str]
    queries: list[str]
    answers: list[str]
    query: str
    user: str  # RULER's "input" (up to the question mark)
    prefix: str  # RULER's "answer_prefix" (with its leading space)
    num_haystack: int
    ruler_tokens: int = 0  # RULER's count of the whole text (user + prefix), without special tokens
    essay_tail_start: int = 0  # essays: the word index (into the haystack words) where RULER's text stops

    @property
    def text(self) -> str:
        return self.user + self.prefix


@functools.lru_cache(maxsize=1)
def _sent_tokenize() -> Callable[[str], list[str]]:
    """nltk's ``sent_tokenize`` (RULER's sentence splitter) once its punkt_tab data is present."""
    try:
        import nltk
        from nltk.tokenize import sent_tokenize
    except ImportError as err:
        raise RulerDependencyError(
            "protocol=ruler splits essays into sentences with nltk, as RULER does, and nltk is not installed: "
            "pip install 'infini-bench[ruler]'"
        ) from err
    try:
        nltk.data.find("tokenizers/punkt_tab/english/")
    except LookupError as err:
        raise RulerDependencyError(
            "protocol=ruler splits essays into sentences with nltk's punkt_tab data, as RULER does, and it is not "
            "installed: run python -m nltk.downloader punkt_tab (needs the network once), or set NLTK_DATA to a "
            "folder that holds tokenizers/punkt_tab"
        ) from err
    return sent_tokenize


def ruler_essay_words(text: str) -> list[str]:
    """RULER's essay haystack: ``re.sub(r'\\s+', " ", essay).split(" ")`` of PaulGrahamEssays.json's text."""
    return re.sub(r"\s+", " ", text).split(" ")


class RulerNiahGenerator:
    """RULER's niah.py for one configuration and length (see the module doc). `count` gives RULER's token count
    of a whole prompt text (``user + prefix``); `essay_words` is the essay haystack (`ruler_essay_words`)."""

    def __init__(
        self,
        cfg: NiahSpec,
        count: Callable[[str], int],
        max_seq_length: int,
        tokens_to_generate: int,
        *,
        seed: int = RULER_SEED,
        essay_words: Sequence[str] | None = None,
    ) -> None:
        self.essay = cfg.source.kind == "essay"
        if self.essay and not essay_words:
            raise ValueError("an essay haystack needs essay_words (RULER's PaulGrahamEssays.json text)")
        self.cfg, self.count, self.seed, self.n_digits = cfg, count, int(seed), cfg.n_digits
        self.max_seq_length, self.tokens_to_generate = int(max_seq_length), int(tokens_to_generate)
        self.essay_words = list(essay_words or [])
        self.words = ruler_words() if "words" in (cfg.type_needle_k, cfg.type_needle_v) else None
        self.sent_tokenize = _sent_tokenize() if self.essay else None
        self.rng = random.Random(self.seed)
        if self.essay:
            self.incremental = 500
        else:
            self.incremental = 5 if self.max_seq_length < 4096 else 25
        self.num_haystack: int | None = None
        self._states: dict[int, Any] = {}  # RNG state before document i
        self._sentences: dict[int, list[str]] = {}

    # -- RULER's draws ------------------------------------------------------------------------------------------
    def _random(self, kind: str) -> str:
        if kind == "numbers":
            return str(self.rng.randint(10 ** (self.n_digits - 1), 10**self.n_digits - 1))
        if kind == "words":
            return self.rng.choice(self.words)
        return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))

    def _essay_sentences(self, num_haystack: int) -> list[str]:
        if num_haystack not in self._sentences:
            words = self.essay_words
            if num_haystack <= len(words):
                text = " ".join(words[:num_haystack])
            else:
                repeats = (num_haystack + len(words) - 1) // len(words)
                text = " ".join((words * repeats)[:num_haystack])
            if len(self._sentences) > 4:
                self._sentences.clear()
            self._sentences[num_haystack] = self.sent_tokenize(text.strip())
        return self._sentences[num_haystack]

    def draw(self, num_haystack: int) -> RulerDraw:
        """niah.py's ``generate_input_output(num_haystack)``."""
        cfg = self.cfg
        keys, values, needles, kv = [], [], [], []
        for _ in range(cfg.num_needle_k):
            keys.append(self._random(cfg.type_needle_k))
            value = []
            for _ in range(cfg.num_needle_v):
                value.append(self._random(cfg.type_needle_v))
                needles.append(NIAH_NEEDLE.format(type_needle_v=cfg.type_needle_v, key=keys[-1], value=value[-1]))
                kv.append((keys[-1], value[-1]))
            values.append(value)
        order = list(range(len(needles)))
        random.Random(self.seed).shuffle(order)  # the same permutation as shuffling the needles themselves
        needles, kv = [needles[i] for i in order], [kv[i] for i in order]

        if self.essay:
            sents = self._essay_sentences(num_haystack)
            positions = [0] + sorted(int(len(sents) * (d / 100)) for d in self.rng.sample(RULER_DEPTHS, len(needles)))
            positions.append(len(sents))
            pieces, needle_at = [], []
            for i in range(1, len(positions)):
                pieces.append(" ".join(sents[positions[i - 1] : positions[i]]))
                if i - 1 < len(needles):
                    needle_at.append(len(pieces))
                    pieces.append(needles[i - 1])
            joiner = " "
        else:
            if cfg.source.kind == "noise":
                pieces = [FILLER] * num_haystack
            else:
                pieces = [NIAH_NEEDLE.format(type_needle_v=cfg.type_needle_v, key=self._random(cfg.type_needle_k),
                                             value=self._random(cfg.type_needle_v)) for _ in range(num_haystack)]
            indexes = sorted(self.rng.sample(range(num_haystack), len(needles)), reverse=True)
            for index, element in zip(indexes, needles):
                pieces.insert(index, element)
            # where each needle ended up: needle j went in at indexes[j]; later (smaller) inserts shift it on
            needle_at = [idx + sum(1 for other in indexes[j + 1 :] if other <= idx) for j, idx in enumerate(indexes)]
            joiner = "\n"

        indices = self.rng.sample(range(cfg.num_needle_k), cfg.num_needle_q)
        queries = [keys[i] for i in indices]
        answers = [a for i in indices for a in values[i]]
        query = ", ".join(queries[:-1]) + ", and " + queries[-1] if len(queries) > 1 else queries[0]
        template, type_v = RULER_TEMPLATE, cfg.type_needle_v
        if cfg.num_needle_q * cfg.num_needle_v == 1:
            template, type_v = singular(template), type_v[:-1]
        text = template.format(type_needle_v=type_v, context=joiner.join(pieces), query=query)
        cut = text.rfind(_PREFIX_MARK)
        return RulerDraw(pieces, needle_at, joiner, needles, kv, keys, queries, answers, query, text[:cut],
                         text[cut:], num_haystack)

    def _tokens(self, draw: RulerDraw) -> int:
        draw.ruler_tokens = self.count(draw.text)
        return draw.ruler_tokens + self.tokens_to_generate

    def fit(self) -> int:
        """niah.py's search for the number of haystack units (its first draws come from the shared generator)."""
        if self.num_haystack is None:
            sample = self.draw(self.incremental)
            tokens_per_haystack = self.count(sample.text) / self.incremental
            estimated = int((self.max_seq_length / tokens_per_haystack) * 3)
            lower, upper, best = self.incremental, max(estimated, self.incremental * 2), None
            while lower <= upper:
                mid = (lower + upper) // 2
                if self._tokens(self.draw(mid)) <= self.max_seq_length:
                    best, lower = mid, mid + 1
                else:
                    upper = mid - 1
            self.num_haystack = best if best is not None else self.incremental
            self._states[0] = self.rng.getstate()
        return self.num_haystack

    def document(self, index: int) -> RulerDraw:
        """RULER's document `index` (0-based) of this length: its retry loop replayed from the nearest known state."""
        num_haystack = self.fit()
        start = max(i for i in self._states if i <= index)
        self.rng.setstate(self._states[start])
        for i in range(start, index + 1):
            used, tries = num_haystack, 0
            while True:
                tries += 1
                try:
                    draw = self.draw(used)
                    if self._tokens(draw) > self.max_seq_length:
                        raise _TooLong(f"its smallest haystack ({used} units) already needs {draw.ruler_tokens} "
                                       "prompt tokens")
                    break
                except (_TooLong, ValueError) as err:  # RULER's bare `except:` around the draw and the assert
                    if used > self.incremental:
                        used -= self.incremental
                    elif tries > 50:  # RULER's script would loop forever here
                        raise PromptTooShort(
                            f"RULER's generator cannot fit a document into max_seq_length={self.max_seq_length} with "
                            f"tokens_to_generate={self.tokens_to_generate}: {err}; use a longer context_length"
                        ) from None
            self._states[i + 1] = self.rng.getstate()
        return draw


# -- exact length ---------------------------------------------------------------------------------------------------
def _extra_lines(draw: RulerDraw, cfg: NiahSpec, count: int, seed: str) -> list[str]:
    """Distractor lines past RULER's text, drawn as RULER draws them but from a generator of their own (RULER's
    documents stay untouched), never with one of the document's keys."""
    rng, n_digits = random.Random(seed), cfg.n_digits
    words = ruler_words() if "words" in (cfg.type_needle_k, cfg.type_needle_v) else None

    def one(kind: str) -> str:
        if kind == "numbers":
            return str(rng.randint(10 ** (n_digits - 1), 10**n_digits - 1))
        if kind == "words":
            return rng.choice(words)
        return str(uuid.UUID(int=rng.getrandbits(128), version=4))

    taken, lines = set(draw.keys), []
    while len(lines) < count:
        key = one(cfg.type_needle_k)
        if key not in taken:
            lines.append(NIAH_NEEDLE.format(type_needle_v=cfg.type_needle_v, key=key, value=one(cfg.type_needle_v)))
    return lines


def build_ruler_doc(
    view: TokenizerView,
    draw: RulerDraw,
    cfg: NiahSpec,
    target: int,
    frame: PromptFrame,
    *,
    essay_words: Sequence[str] | None = None,
    extra_seed: str = "",
) -> dict[str, Any]:
    """The prompt of exactly `target` tokens (special tokens included) from RULER's draw; see the module doc."""
    last = max(draw.needle_at)
    head_text, question = frame.before + draw.user[: draw.user.index("\n") + 1], draw.user[draw.user.rindex("\n") :]
    prefix = draw.prefix[1:]  # RULER's answer prefix without its leading space: plainly, the frame's " " is it
    room = max(target - draw.ruler_tokens, 0) + 64  # tokens the haystack after the last needle may need
    tail = draw.pieces[last + 1 :]
    if draw.joiner == "\n":
        if cfg.source.kind == "noise":
            hay = load_haystack(view, "noise", lines=True)
        else:
            per_line = max(len(view.raw(tail[0])), 4) if tail else 16
            extra = _extra_lines(draw, cfg, len(tail) + room // per_line + 8, extra_seed)
            hay = tokenise_haystack(view, "needle", "\n".join(tail + extra) + "\n", lines=True, use_cache=False)
        span, sep = Span(hay, 0), "\n"
    else:
        words = list(essay_words or [])
        more = [words[(draw.num_haystack + k) % len(words)] for k in range(2 * room + 200)]
        hay = tokenise_haystack(view, "essay", normalise_text(" ".join([*tail, *more])), use_cache=False)
        span, sep = Span(hay, hay.start), " "
    parts: list[Any] = [head_text]
    for k, piece in enumerate(draw.pieces[: last + 1]):
        if k:
            parts.append(sep)
        parts.append(Needle(piece) if k in draw.needle_at else piece)
    parts += [sep, span, question + frame.between + prefix + frame.after]
    try:
        prompt = assemble(view, [p for p in parts if p != ""], target)
    except PromptTooShort as err:
        raise PromptTooShort(f"RULER's document does not fit {target} prompt tokens: {err}") from err
    order = [draw.pieces[i] for i in sorted(draw.needle_at)]
    position = dict(zip(order, prompt.needle_positions))
    start = len(view.lead) + len(view.raw(head_text))
    end = len(prompt.input_ids) - len(view.trail) - len(view.raw(question + frame.between + prefix + frame.after))
    depth = {n: round(100.0 * (position[n] - start) / max(end - start, 1), 3) for n in order}
    target_needle = NIAH_NEEDLE.format(type_needle_v=cfg.type_needle_v, key=draw.queries[0], value=draw.answers[0])
    fields = prompt.doc_fields("", 0)
    fields.update(
        needle_depth_percent=depth[target_needle],
        needle_position=position[target_needle],
        needle_positions=[position[n] for n in draw.needles],
        needle_depths=[depth[n] for n in draw.needles],
        gen_prefix=prefix,
    )
    return fields


def nearest_depth(depths: Sequence[int | float], actual: float) -> int | float:
    """The grid depth a RULER document is reported under: the one nearest its first answer's actual depth (ties
    go to the shallower), so RULER's uniformly drawn depths still fill the depth x length heatmap."""
    return min(depths, key=lambda d: (abs(float(d) - actual), float(d)))


class RulerDocPlan:
    """A length's RULER documents (`DocPlan`'s interface: ``len``, ``doc(i)``, ``build_all``): document ``i`` is
    RULER's document ``i``, built (and cached on disk on its own) when first asked for. A document not in the cache
    replays RULER's draws from the nearest state this process knows, as RULER's script draws them in order."""

    def __init__(self, view: TokenizerView, spec: NiahSpec, grid: Grid, frame: PromptFrame | None = None) -> None:
        self.view, self.cfg, self.variant = view, spec, spec.variant
        self.context_length, self.answer_tokens = grid.context_length, spec.answer_budget(grid.context_length)
        self.depths, self.samples, self.seed, self.n_digits = list(grid.depths), grid.samples, grid.base_seed, spec.n_digits
        self.frame = frame or PromptFrame()
        self.family = f"niah_{spec.variant}"
        self._essay: tuple[str, list[str]] | None = None
        self._generator: RulerNiahGenerator | None = None
        self._key: dict[str, Any] | None = None

    def __len__(self) -> int:
        return self.samples

    def _essays(self) -> tuple[str, list[str]]:
        if self._essay is None:
            if self.cfg.source.kind != "essay":
                self._essay = ("", [])
            else:
                name, text = haystack_text(self.cfg.source, self.cfg.haystack_options)
                self._essay = (name, ruler_essay_words(text))
        return self._essay

    def count(self, text: str) -> int:
        """RULER's count of a whole prompt text in the model's tokens, the chat frame's text included."""
        cut = text.rfind(_PREFIX_MARK)
        return len(self.view.raw(self.frame.wrap(text[:cut], text[cut + 1 :])))

    @property
    def generator(self) -> RulerNiahGenerator:
        if self._generator is None:
            self._generator = RulerNiahGenerator(
                self.cfg, self.count, self.context_length, self.answer_tokens, seed=self.seed,
                essay_words=self._essays()[1],
            )
        return self._generator

    @property
    def key(self) -> dict[str, Any]:
        if self._key is None:
            name, words = self._essays()
            self._key = {
                "family": "niah_ruler",
                "builder": 1,
                "ruler": RULER_COMMIT,
                "tokenizer": self.view.fingerprint,
                "context_length": self.context_length,
                "seed": self.seed,
                "variant": self.variant,
                "config": [self.cfg.source.kind, self.cfg.type_needle_k, self.cfg.type_needle_v, self.cfg.num_needle_k,
                           self.cfg.num_needle_v, self.cfg.num_needle_q],
                "n_digits": self.n_digits,
                "answer_tokens": self.answer_tokens,
                "essays": essay_words_sha(words) if words else "",
                "words": len(ruler_words()) if "words" in (self.cfg.type_needle_k, self.cfg.type_needle_v) else 0,
                "frame": self.frame.fingerprint,
            }
        return self._key

    def doc(self, index: int) -> tuple[dict[str, Any], bool]:
        if not 0 <= index < self.samples:
            raise IndexError(f"document {index} of {self.samples}")
        key = {**self.key, "index": int(index)}
        docs, hit = cache.cached_docs(f"docs_niah_ruler_{self.variant}", key, lambda: [self._build(index)])
        return docs[0], hit

    def build_all(self) -> tuple[list[dict[str, Any]], bool]:
        pairs = [self.doc(i) for i in range(self.samples)]
        return [d for d, _ in pairs], all(hit for _, hit in pairs)

    def _build(self, index: int) -> dict[str, Any]:
        draw = self.generator.document(index)
        target = self.context_length - self.answer_tokens
        fields = build_ruler_doc(
            self.view, draw, self.cfg, target, self.frame, essay_words=self._essays()[1],
            extra_seed=f"infini-bench ruler tail {self.seed} {self.context_length} {self.variant} {index}",
        )
        del fields["input_ids"]
        answers = draw.answers
        haystack = self._essays()[0] if self.cfg.source.kind == "essay" else self.cfg.source.kind
        return {
            **fields,
            "answer_tokens": self.answer_tokens,
            "haystack": haystack,
            "answer": answers[0] if len(answers) == 1 else ", ".join(answers),
            "answers": answers,
            "query": draw.query,
            "key": draw.queries[0],
            "queries": draw.queries,
            "variant": self.variant,
            "type_needle_k": self.cfg.type_needle_k,
            "type_needle_v": self.cfg.type_needle_v,
            "context_length": self.context_length,
            "depth_percent": nearest_depth(self.depths, fields["needle_depth_percent"]),
            "seed": self.seed,
            "base_seed": self.seed,
            "sample_index": int(index),
            "n_digits": self.n_digits,
            "num_needles": len(draw.needles),
            "needle_keys": [k for k, _ in draw.needle_kv],
            "needle_values": [v for _, v in draw.needle_kv],
            "protocol": "ruler",
            "ruler_index": int(index),
            "ruler_num_haystack": draw.num_haystack,
            "ruler_tokens": draw.ruler_tokens,
            "task_family": "niah",
        }


def essay_words_sha(words: Sequence[str]) -> str:
    return hashlib.sha256("\x00".join(words).encode("utf-8")).hexdigest()


__all__ = [
    "RULER_COMMIT",
    "RULER_SAMPLES",
    "RULER_SEED",
    "RulerDraw",
    "RulerDocPlan",
    "RulerNiahGenerator",
    "build_ruler_doc",
    "essay_words_sha",
    "ruler_essay_words",
]
