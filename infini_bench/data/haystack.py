"""Haystacks: long irrelevant text, tokenised once per tokenizer, that needles are hidden in.

Three kinds, as RULER names them (``--metadata haystack=...``):

* ``noise``: the filler "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back
  again." repeated. NIAH tasks write it as lines (RULER's ``noise``: one filler per line); passkey tasks write it
  as one space-joined paragraph (Landmark Attention's ``garbage``).
* ``essay``: prose, whitespace collapsed to single spaces (RULER's Paul Graham essays). The text comes from
  ``essays=``: ``stdlib`` (the default: docstring prose of the Python standard library, always present offline),
  a file or folder (``.txt`` files, or RULER's ``PaulGrahamEssays.json`` / any ``.json``/``.jsonl`` with a
  ``text`` field), or ``hf:<dataset>`` (a hub dataset's ``text`` column; needs the network or a local copy).
* ``needle``: lines of distractor needles with other keys (RULER's ``needle``), drawn per document.

The older spellings stay accepted: ``filler`` = ``noise``; ``stdlib``, ``files`` (with ``haystack_files=``) and
``hf:<dataset>`` = ``essay`` from that source.

A haystack is a *unit* text repeated as often as a prompt needs (the filler is one short unit; prose is one long
unit). A prose unit starts with a space; a line unit is whole lines, each ending in a newline. `word_cuts` are the
token indices where a token begins at a space (prompts are stitched there); `insert_chars` are where needles may
go: the first letter of a sentence (prose) or of a line (lines).
"""
from __future__ import annotations

import bisect
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from infini_bench.data import cache
from infini_bench.data.corpus import expand_paths, read_text_file, stdlib_prose
from infini_bench.data.tokens import ANCHOR, LINE_ANCHOR, Encoded, TokenizerView

FILLER = "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again."
HAYSTACK_KINDS = ("noise", "essay", "needle")
#: Older `haystack=` values, still accepted: the kind they mean and the essay source they name.
LEGACY_HAYSTACKS = {"filler": "noise", "stdlib": "essay", "files": "essay"}
DEFAULT_ESSAYS = "stdlib"
_SENTENCE_FINAL = ".!?"
_CLOSERS = "\"')]"


class HaystackError(ValueError):
    """A haystack kind or source is unknown or cannot be read."""


def normalise_text(text: str) -> str:
    """Collapse whitespace to single spaces and prepend one, the form every prose unit has."""
    return " " + " ".join(text.split())


@dataclass(frozen=True)
class HaystackSpec:
    """What `--metadata haystack=... essays=...` asked for: a kind and, for essays, where the text comes from."""

    kind: str  # noise | essay | needle
    source: str = ""  # essays only: "stdlib", "hf:<dataset>" or a path list joined by os.pathsep
    paths: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        return f"essay:{self.source}" if self.kind == "essay" else self.kind


def haystack_spec(value: Any = "noise", options: dict[str, Any] | None = None) -> HaystackSpec:
    """Validate `haystack=` (and `essays=` / `haystack_files=`), naming the bad value in the error."""
    options = options or {}
    raw = "noise" if value in (None, "") else value
    if isinstance(raw, HaystackSpec):
        return raw
    if not isinstance(raw, str):
        raise HaystackError(f"haystack must be one of {', '.join(HAYSTACK_KINDS)}, got {raw!r}")
    kind = raw.strip()
    essays = options.get("essays")
    if kind.startswith("hf:"):
        if len(kind) <= 3:
            raise HaystackError("haystack=hf: needs a dataset name, e.g. haystack=hf:baber/paul_graham_essays")
        kind, essays = "essay", kind
    elif kind == "stdlib":
        kind, essays = "essay", "stdlib"
    elif kind == "files":
        files = options.get("haystack_files")
        if not files:
            raise HaystackError("haystack=files needs haystack_files=[<file or folder>, ...] in --metadata")
        kind, essays = "essay", files
    kind = LEGACY_HAYSTACKS.get(kind, kind)
    if kind not in HAYSTACK_KINDS:
        raise HaystackError(
            f"unknown haystack {raw!r}: choose one of {', '.join(HAYSTACK_KINDS)} (essay text from "
            "essays=stdlib, essays=<file or folder> or essays=hf:<dataset>)"
        )
    if kind != "essay":
        return HaystackSpec(kind)
    essays = DEFAULT_ESSAYS if essays in (None, "", []) else essays
    if isinstance(essays, str) and (essays == "stdlib" or essays.startswith("hf:")):
        if essays == "hf:":
            raise HaystackError("essays=hf: needs a dataset name, e.g. essays=hf:baber/paul_graham_essays")
        return HaystackSpec("essay", essays)
    paths = tuple(str(p) for p in (essays if isinstance(essays, (list, tuple)) else [essays]))
    for path in paths:
        if not Path(path).expanduser().exists():
            raise HaystackError(f"essays: path {path!r} does not exist (give a text file, a folder of them, or a .json)")
    return HaystackSpec("essay", ",".join(paths), paths)


@dataclass
class Haystack:
    """A unit text repeated forever, with its tokens; see the module docstring. Indices are *global*: token g of
    the endless stream is token ``g % n`` of repetition ``g // n``; char c is char ``c % len(text)``."""

    name: str
    text: str
    ids: np.ndarray
    bounds: np.ndarray  # token j of the unit covers chars [bounds[j], bounds[j+1])
    word_cuts: np.ndarray  # token indices where a token starts at a space
    insert_chars: np.ndarray  # char offsets where a needle may start (a sentence's or a line's first letter)
    separable: bool  # the unit's tokens, repeated, are the repeated text's tokens
    lines: bool = False  # a line unit (each line ends in "\n") rather than prose
    _word_chars: np.ndarray = field(init=False, repr=False)
    _spaces: np.ndarray = field(init=False, repr=False)
    _cpt: float | None = field(init=False, default=None, repr=False)

    def __post_init__(self) -> None:
        if len(self.ids) == 0 or len(self.insert_chars) == 0:
            raise HaystackError(f"haystack {self.name!r} has no sentence boundaries to place needles at")
        self._spaces = np.nonzero(np.frombuffer(self.text.encode("utf-32-le"), dtype=np.uint32) == ord(" "))[0]
        if len(self._spaces) == 0:
            raise HaystackError(f"haystack {self.name!r} has no spaces: it has no words to cut at")
        self._word_chars = self.bounds[self.word_cuts] if len(self.word_cuts) else np.zeros(0, dtype=np.int64)
        if len(self.word_cuts) == 0:
            self.separable = False  # nowhere to cut between tokens: only whole-prompt counting works

    @property
    def n(self) -> int:
        return len(self.ids)

    @property
    def period(self) -> int:
        return len(self.text)

    @property
    def start(self) -> int:
        """Char where the stream's text begins (after a prose unit's leading space)."""
        return 0 if self.lines else 1

    def char_pos(self, g: int) -> int:
        """Character offset of global token index `g` in the endless text."""
        q, r = divmod(int(g), self.n)
        return q * self.period + int(self.bounds[r])

    def chars(self, a: int, b: int) -> str:
        """Text of global character range [a, b) of the endless text."""
        if b <= a:
            return ""
        qa, ra = divmod(int(a), self.period)
        qb, rb = divmod(int(b), self.period)
        if qa == qb:
            return self.text[ra:rb]
        return self.text[ra:] + self.text * (qb - qa - 1) + self.text[:rb]

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

    # -- positions ------------------------------------------------------------------------------------------------
    def word_cut_after(self, c: int) -> int:
        """Smallest global word-cut token whose char is >= c."""
        q, r = divmod(int(c), self.period)
        i = bisect.bisect_left(self._word_chars, r)
        if i < len(self.word_cuts):
            return q * self.n + int(self.word_cuts[i])
        return (q + 1) * self.n + int(self.word_cuts[0])

    def word_cut_before(self, c: int) -> int:
        """Largest global word-cut token whose char is <= c."""
        q, r = divmod(int(c), self.period)
        i = bisect.bisect_right(self._word_chars, r) - 1
        if i >= 0:
            return q * self.n + int(self.word_cuts[i])
        return (q - 1) * self.n + int(self.word_cuts[-1])

    def token_at_char(self, c: int) -> int:
        """Global index of the token that starts at or covers char `c`."""
        q, r = divmod(int(c), self.period)
        return q * self.n + max(int(np.searchsorted(self.bounds, r, side="right")) - 1, 0)

    def nearest(self, points: np.ndarray, target: float, lo: int, hi: int) -> int:
        """The global char among `points` (offsets within one unit) nearest to `target` within [lo, hi] (ties go
        left), or `lo` when none lies inside."""
        base = (int(target) // self.period) * self.period
        best = None
        for shift in (base - self.period, base, base + self.period):
            i = bisect.bisect_left(points, target - shift)
            for j in (i - 1, i):
                if 0 <= j < len(points):
                    cand = shift + int(points[j])
                    if lo <= cand <= hi and (best is None or (abs(cand - target), cand) < (abs(best - target), best)):
                        best = cand
        return lo if best is None else best

    def chars_per_token(self, view: TokenizerView) -> float:
        """Characters per model token in this haystack's text as prompts hold it (measured on a stretch of the
        stream, so it holds for tokenizers whose unit tokens are not the stream's)."""
        if self._cpt is None and self.separable:
            self._cpt = self.period / self.n  # the unit's tokens are the stream's
        if self._cpt is None:
            sample = self.chars(self.start, self.start + min(max(self.period, 4000), 20_000))
            self._cpt = len(sample) / max(len(view.raw(sample)), 1)
        return self._cpt

    def space(self, k: int) -> int:
        """Global char of the k-th space of the endless text (a word ends right before it)."""
        q, r = divmod(int(k), len(self._spaces))
        return q * self.period + int(self._spaces[r])

    def space_index(self, c: int) -> int:
        """Index k of the first space at or after global char c."""
        q, r = divmod(int(c), self.period)
        i = bisect.bisect_left(self._spaces, r)
        return q * len(self._spaces) + i

    def word_end_near(self, c: float, lo: int) -> int:
        """A char >= lo at or before `c` where a word ends (a space follows), so a span cut there ends with a
        whole word."""
        k = self.space_index(int(c) + 1) - 1
        return max(self.space(k), lo) if k >= 0 else lo


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


def line_starts(text: str) -> np.ndarray:
    """Char offsets where a line of a line unit begins (0 and every char after a newline)."""
    found = [0] + [i + 1 for i, ch in enumerate(text) if ch == "\n" and i + 1 < len(text)]
    return np.asarray(found, dtype=np.int64)


def _word_cuts(text: str, bounds: np.ndarray) -> np.ndarray:
    """Token indices where a token begins exactly at a space."""
    starts = bounds[:-1]
    chars = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
    in_range = starts < len(text)
    word = np.zeros(len(starts), dtype=bool)
    word[in_range] = chars[starts[in_range]] == ord(" ")
    return np.nonzero(word)[0].astype(np.int64)


def tokenise_haystack(view: TokenizerView, name: str, text: str, lines: bool = False, use_cache: bool = True) -> Haystack:
    """Tokenise a unit text (cached on disk per tokenizer and text unless `use_cache` is off) and find its cuts.
    A prose unit is normalised (see `normalise_text`); a line unit must end with a newline."""
    if lines:
        if not text.endswith("\n") or not text.strip():
            raise HaystackError(f"haystack {name!r} has no lines")
    elif not text.startswith(" ") or text != normalise_text(text):
        text = normalise_text(text)
    if len(text.strip()) == 0:
        raise HaystackError(f"haystack {name!r} is empty")
    text_sha = hashlib.sha256(text.encode("utf-8")).hexdigest()
    key = {"haystack": 3, "tokenizer": view.fingerprint, "text": text_sha, "lines": lines}
    arrays = cache.load_arrays("haystacks", key) if use_cache else None
    if arrays is None:
        encoded = view.encode_with_bounds(text, LINE_ANCHOR if lines else ANCHOR)
        separable = encoded.in_context and _unit_repeats_cleanly(view, text, encoded)
        insert = line_starts(text) if lines else sentence_starts(text) + 1
        arrays = {
            "ids": encoded.ids.astype(np.int64),
            "bounds": encoded.bounds.astype(np.int64),
            "word_cuts": _word_cuts(text, encoded.bounds),
            "insert_chars": insert.astype(np.int64),
            "separable": np.array(separable),
        }
        if use_cache:
            cache.save_arrays("haystacks", key, arrays)
    return Haystack(
        name=name,
        text=text,
        ids=arrays["ids"],
        bounds=arrays["bounds"],
        word_cuts=arrays["word_cuts"],
        insert_chars=arrays["insert_chars"],
        separable=bool(arrays["separable"]),
        lines=lines,
    )


def _unit_repeats_cleanly(view: TokenizerView, text: str, encoded: Encoded) -> bool:
    """True when the unit's tokens, repeated, are the tokens of the repeated text around the join."""
    doubled = Encoded(
        ids=np.concatenate([encoded.ids, encoded.ids]),
        bounds=np.concatenate([encoded.bounds[:-1], encoded.bounds + len(text)]),
    )
    return view.window_matches(text + text, doubled, len(text))


def essay_text(spec: HaystackSpec, options: dict[str, Any] | None = None) -> str:
    """The raw text of an essay haystack (not yet normalised)."""
    options = options or {}
    if spec.source == "stdlib":
        return stdlib_prose()
    if spec.source.startswith("hf:"):
        return _hub_text(spec.source[3:], options)
    parts = []
    for path in expand_paths(list(spec.paths), what="essays"):
        parts.append(_file_text(path))
    text = " ".join(p for p in parts if p.strip())
    if not text.strip():
        raise HaystackError(f"essays: {', '.join(spec.paths)} holds no text")
    return text


def _file_text(path: Path) -> str:
    """A text file, or the `text` field(s) of a .json (RULER's PaulGrahamEssays.json) or .jsonl file."""
    raw = read_text_file(path, what="essays")
    if path.suffix not in (".json", ".jsonl"):
        return raw
    try:
        rows = [json.loads(line) for line in raw.splitlines() if line.strip()] if path.suffix == ".jsonl" else [json.loads(raw)]
    except json.JSONDecodeError as err:
        raise HaystackError(f"essays: {str(path)!r} is not valid JSON ({err})") from err
    texts: list[str] = []
    for row in rows:
        items = row if isinstance(row, list) else [row]
        for item in items:
            if isinstance(item, dict) and isinstance(item.get("text"), str):
                texts.append(item["text"])
            elif isinstance(item, str):
                texts.append(item)
    if not texts:
        raise HaystackError(f"essays: {str(path)!r} has no 'text' field")
    return " ".join(texts)


def haystack_text(source: "str | HaystackSpec", options: dict[str, Any] | None = None) -> tuple[str, str]:
    """(name, raw text) of a noise or essay haystack; see the module docstring."""
    spec = haystack_spec(source, options)
    if spec.kind == "noise":
        return "noise", FILLER
    if spec.kind == "essay":
        return spec.name, essay_text(spec, options)
    raise HaystackError("the needle haystack is drawn per document (NIAH tasks only), it has no fixed text")


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
            "The hub is unreachable offline; point essays= at a local file or folder, or use essays=stdlib"
        ) from err
    if not parts:
        raise HaystackError(f"hub haystack {dataset!r} split {split!r} is empty")
    return " ".join(parts)


_HAYSTACKS: dict[tuple[str, str, str, bool], Haystack] = {}


@dataclass(frozen=True, kw_only=True)
class HaystackChoice:
    """A task family's `haystack=` option and essay source options (`essays=`, `haystack_files=`, ...), resolved
    once to `source` when the family's spec is made, so a builder never re-reads or re-dispatches the option. The
    tokenised text is kept per tokenizer: a plan's documents share one haystack, as the builders need."""

    haystack: str = "noise"
    haystack_options: dict[str, Any] = field(default_factory=dict, hash=False)
    source: HaystackSpec = field(init=False)
    _tokenised: dict[tuple[str, bool], Haystack] = field(
        init=False, default_factory=dict, repr=False, compare=False, hash=False
    )

    def __post_init__(self) -> None:
        object.__setattr__(self, "haystack_options", dict(self.haystack_options or {}))
        object.__setattr__(self, "source", haystack_spec(self.haystack, self.haystack_options))

    def tokenised(self, view: TokenizerView, lines: bool = False) -> Haystack:
        """The noise or essay haystack in `view`'s tokens (`load_haystack`), loaded once per tokenizer."""
        key = (view.fingerprint, lines)
        if key not in self._tokenised:
            if len(self._tokenised) >= 4:  # a spec outlives its tokenizers (the variant table): keep a few
                self._tokenised.clear()
            self._tokenised[key] = load_haystack(view, self.source, self.haystack_options, lines=lines)
        return self._tokenised[key]

    def text_sha(self) -> str:
        """SHA-256 of the haystack's normalised text, for the document cache key ("" for the needle kind)."""
        text = "" if self.source.kind == "needle" else haystack_text(self.source, self.haystack_options)[1]
        return hashlib.sha256(normalise_text(text).encode("utf-8")).hexdigest()


def load_haystack(
    view: TokenizerView,
    source: "str | HaystackSpec | Haystack" = "noise",
    options: dict[str, Any] | None = None,
    lines: bool = False,
) -> Haystack:
    """The tokenised noise or essay haystack (memoised per process, cached on disk); a Haystack passes through.
    `lines`: noise as RULER writes it, one filler per line (essays are always prose)."""
    if isinstance(source, Haystack):
        return source
    name, text = haystack_text(source, options)
    lines = lines and name == "noise"
    text = FILLER + "\n" if lines else normalise_text(text)
    memo_key = (view.fingerprint, name, hashlib.sha256(text.encode("utf-8")).hexdigest(), lines)
    if memo_key not in _HAYSTACKS:
        if len(_HAYSTACKS) > 8:
            _HAYSTACKS.pop(next(iter(_HAYSTACKS)))
        _HAYSTACKS[memo_key] = tokenise_haystack(view, name, text, lines=lines)
    return _HAYSTACKS[memo_key]
