"""Haystacks: long irrelevant text, tokenised once per tokenizer, that needles are hidden in.

A haystack is a *unit* text repeated as often as a prompt needs (the classic filler is one five-sentence unit; a
prose corpus is one long unit). The unit is normalised so that it starts with a space and every whitespace run is a
single space, which makes every word start a clean cut: `word_cuts` are the token indices where a token begins at a
space, `sentence_cuts` those that also follow a sentence end. Needles are inserted at sentence cuts; a prompt's
haystack region ends at a word cut.

Sources: ``filler`` (default), ``stdlib`` (standard-library docstring prose), ``files`` (the user's text files,
``haystack_files=[...]``) and ``hf:<dataset>`` (a hub dataset the user names; needs the network or a local copy).
"""
from __future__ import annotations

import bisect
import hashlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from infini_bench.data import cache
from infini_bench.data.corpus import expand_paths, read_text_file, stdlib_prose
from infini_bench.data.tokens import Encoded, TokenizerView

FILLER = "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again."
HAYSTACK_SOURCES = ("filler", "stdlib", "files", "hf:<dataset>")
_SENTENCE_FINAL = ".!?"
_CLOSERS = "\"')]"


class HaystackError(ValueError):
    """A haystack source is unknown or cannot be read."""


def normalise_text(text: str) -> str:
    """Collapse whitespace to single spaces and prepend one, the form every haystack unit has."""
    return " " + " ".join(text.split())


@dataclass
class Haystack:
    """A unit text repeated forever, with its tokens; see the module docstring. Indices are *global*: token g of
    the endless stream is token ``g % n`` of repetition ``g // n``."""

    name: str
    text: str
    ids: np.ndarray
    bounds: np.ndarray
    word_cuts: np.ndarray
    sentence_cuts: np.ndarray
    sentence_chars: np.ndarray  # char offsets of the spaces that start a sentence (tokenizer-independent)
    separable: bool
    _word_cut_set: frozenset[int] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if len(self.ids) == 0 or len(self.sentence_chars) == 0:
            raise HaystackError(f"haystack {self.name!r} has no sentence boundaries to place needles at")
        if len(self.sentence_cuts) == 0:
            self.separable = False  # no token boundary at a sentence start: only whole-prompt counting works
        self._word_cut_set = frozenset(int(j) for j in self.word_cuts)

    @property
    def n(self) -> int:
        return len(self.ids)

    def char_pos(self, g: int) -> int:
        """Character offset of global token index `g` in the endless text."""
        q, r = divmod(int(g), self.n)
        return q * len(self.text) + int(self.bounds[r])

    def is_word_cut(self, g: int) -> bool:
        return int(g) % self.n in self._word_cut_set

    def slice_ids(self, a: int, b: int) -> np.ndarray:
        """Token ids of global range [a, b)."""
        if b <= a:
            return self.ids[:0]
        qa, ra = divmod(int(a), self.n)
        qb, rb = divmod(int(b), self.n)
        if qa == qb:
            return self.ids[ra:rb]
        parts = [self.ids[ra:]]
        if qb - qa - 1 > 0:
            parts.append(np.tile(self.ids, qb - qa - 1))
        parts.append(self.ids[:rb])
        return np.concatenate(parts)

    def slice_text(self, a: int, b: int) -> str:
        """Text of global token range [a, b)."""
        if b <= a:
            return ""
        qa, ra = divmod(int(a), self.n)
        qb, rb = divmod(int(b), self.n)
        ca, cb = int(self.bounds[ra]), int(self.bounds[rb])
        if qa == qb:
            return self.text[ca:cb]
        return self.text[ca:] + self.text * (qb - qa - 1) + self.text[:cb]

    def cut_near(self, cuts: np.ndarray, g: float, lo: int, hi: int, period: int | None = None) -> int:
        """The cut nearest to global position `g` within [lo, hi] (ties go left), or `lo` when none is inside.
        `cuts` are positions within one repetition of length `period` (default: tokens, `n`)."""
        period = self.n if period is None else period
        base = (int(g) // period) * period
        best = None
        for shift in (base - period, base, base + period):
            i = bisect.bisect_left(cuts, g - shift)
            for j in (i - 1, i):
                if 0 <= j < len(cuts):
                    cand = shift + int(cuts[j])
                    if lo <= cand <= hi and (best is None or (abs(cand - g), cand) < (abs(best - g), best)):
                        best = cand
        return lo if best is None else best

    def chars(self, a: int, b: int) -> str:
        """Text of global character range [a, b) of the endless text."""
        if b <= a:
            return ""
        period = len(self.text)
        qa, ra = divmod(int(a), period)
        qb, rb = divmod(int(b), period)
        if qa == qb:
            return self.text[ra:rb]
        return self.text[ra:] + self.text * (qb - qa - 1) + self.text[:rb]

    def next_cut(self, cuts: np.ndarray, g: int) -> int:
        """Smallest cut >= g."""
        q, r = divmod(int(g), self.n)
        i = bisect.bisect_left(cuts, r)
        if i < len(cuts):
            return q * self.n + int(cuts[i])
        return (q + 1) * self.n + int(cuts[0])

    def prev_cut(self, cuts: np.ndarray, g: int) -> int:
        """Largest cut <= g."""
        q, r = divmod(int(g), self.n)
        i = bisect.bisect_right(cuts, r) - 1
        if i >= 0:
            return q * self.n + int(cuts[i])
        return (q - 1) * self.n + int(cuts[-1])


def sentence_starts(text: str) -> np.ndarray:
    """Char offsets of the spaces that start a sentence: after . ! ? (optionally closed by a quote or bracket)
    and before a capital, digit or opening quote. Offset 0 counts when the text, repeated, ends a sentence."""
    found = []
    position = text.find(" ")
    while position >= 0:
        prev = text[position - 1] if position > 0 else text[-1]
        prev2 = text[position - 2] if position > 1 else text[position - 2 + len(text)]
        nxt = text[position + 1] if position + 1 < len(text) else ""
        ends_sentence = prev in _SENTENCE_FINAL or (prev in _CLOSERS and prev2 in _SENTENCE_FINAL)
        if ends_sentence and (nxt.isupper() or nxt.isdigit() or nxt in "\"'(["):
            found.append(position)
        position = text.find(" ", position + 1)
    return np.asarray(found, dtype=np.int64)


def _cuts(text: str, bounds: np.ndarray, sentence_chars: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Word cuts (a token boundary exactly at a space) and sentence cuts (word cuts that start a sentence)."""
    starts = bounds[:-1]
    chars = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
    in_range = starts < len(text)
    word = np.zeros(len(starts), dtype=bool)
    word[in_range] = chars[starts[in_range]] == ord(" ")
    word_cuts = np.nonzero(word)[0].astype(np.int64)
    sentence_cuts = word_cuts[np.isin(starts[word_cuts], sentence_chars)]
    return word_cuts, sentence_cuts.astype(np.int64)


def tokenise_haystack(view: TokenizerView, name: str, text: str) -> Haystack:
    """Tokenise a normalised unit text (cached on disk per tokenizer and text) and find its cuts."""
    if not text.startswith(" ") or text != normalise_text(text):
        text = normalise_text(text)
    if len(text) < 2:
        raise HaystackError(f"haystack {name!r} is empty")
    text_sha = hashlib.sha256(text.encode("utf-8")).hexdigest()
    key = {"haystack": 2, "tokenizer": view.fingerprint, "text": text_sha}
    arrays = cache.load_arrays("haystacks", key)
    if arrays is None:
        encoded = view.encode_with_bounds(text)
        sentence_chars = sentence_starts(text)
        word_cuts, sentence_cuts = _cuts(text, encoded.bounds, sentence_chars)
        separable = encoded.in_context and _unit_repeats_cleanly(view, text, encoded)
        arrays = {
            "ids": encoded.ids.astype(np.int64),
            "bounds": encoded.bounds.astype(np.int64),
            "word_cuts": word_cuts,
            "sentence_cuts": sentence_cuts,
            "sentence_chars": sentence_chars,
            "separable": np.array(separable),
        }
        cache.save_arrays("haystacks", key, arrays)
    return Haystack(
        name=name,
        text=text,
        ids=arrays["ids"],
        bounds=arrays["bounds"],
        word_cuts=arrays["word_cuts"],
        sentence_cuts=arrays["sentence_cuts"],
        sentence_chars=arrays["sentence_chars"],
        separable=bool(arrays["separable"]),
    )


def _unit_repeats_cleanly(view: TokenizerView, text: str, encoded: Encoded) -> bool:
    """True when the unit's tokens, repeated, are the tokens of the repeated text around the join."""
    doubled = Encoded(
        ids=np.concatenate([encoded.ids, encoded.ids]),
        bounds=np.concatenate([encoded.bounds[:-1], encoded.bounds + len(text)]),
    )
    return view.window_matches(text + text, doubled, len(text))


def haystack_text(source: str, options: dict[str, Any] | None = None) -> tuple[str, str]:
    """(name, raw text) of a haystack source; see the module docstring for the sources."""
    options = options or {}
    if source == "filler":
        return "filler", FILLER
    if source == "stdlib":
        return "stdlib", stdlib_prose()
    if source == "files":
        paths = options.get("haystack_files")
        if not paths:
            raise HaystackError("haystack=files needs haystack_files=[<file or folder>, ...] in --metadata")
        files = expand_paths(paths, what="haystack_files")
        return "files", " ".join(read_text_file(p, what="haystack_files") for p in files)
    if isinstance(source, str) and source.startswith("hf:") and len(source) > 3:
        return source, _hub_text(source[3:], options)
    raise HaystackError(
        f"unknown haystack source {source!r}: choose one of {', '.join(HAYSTACK_SOURCES)} "
        "(e.g. haystack=stdlib, or haystack=files haystack_files=[notes.txt])"
    )


def _hub_text(dataset: str, options: dict[str, Any]) -> str:
    """Text of a hub dataset's split, joined, up to `haystack_max_chars` characters."""
    split = options.get("haystack_split", "train")
    text_field = options.get("haystack_field", "text")
    limit = int(options.get("haystack_max_chars", 8_000_000))
    try:
        import datasets

        ds = datasets.load_dataset(dataset, options.get("haystack_dataset_name"), split=split, streaming=True)
        parts, total = [], 0
        for row in ds:
            if text_field not in row:
                raise HaystackError(f"hub haystack {dataset!r} has no field {text_field!r} (haystack_field=...)")
            parts.append(str(row[text_field]))
            total += len(parts[-1])
            if total >= limit:
                break
    except HaystackError:
        raise
    except Exception as err:
        raise HaystackError(
            f"cannot load hub haystack dataset {dataset!r} (split {split!r}): {type(err).__name__}: {err}. "
            "The hub is unreachable offline; use haystack=filler, stdlib or files"
        ) from err
    if not parts:
        raise HaystackError(f"hub haystack {dataset!r} split {split!r} is empty")
    return " ".join(parts)


_HAYSTACKS: dict[tuple[str, str, str], Haystack] = {}


def load_haystack(
    view: TokenizerView, source: "str | Haystack" = "filler", options: dict[str, Any] | None = None
) -> Haystack:
    """The tokenised haystack for a source (memoised per process, cached on disk); a Haystack passes through."""
    if isinstance(source, Haystack):
        return source
    name, text = haystack_text(source, options)
    text = normalise_text(text)
    memo_key = (view.fingerprint, name, hashlib.sha256(text.encode("utf-8")).hexdigest())
    if memo_key not in _HAYSTACKS:
        if len(_HAYSTACKS) > 8:
            _HAYSTACKS.pop(next(iter(_HAYSTACKS)))
        _HAYSTACKS[memo_key] = tokenise_haystack(view, name, text)
    return _HAYSTACKS[memo_key]

