"""Exact token counts in a model's own tokenizer, fast enough for million-token prompts.

`TokenizerView` wraps a transformers *fast* tokenizer and answers the questions the builders ask: the ids of a text
at the start of an input (`raw`) and after other text (`in_context`), the special tokens the model input gets
around it (`lead`, `trail`, as the tokenizer adds them by default, which is what lm-eval's `hf` model feeds), char
boundaries of every token (`encode_with_bounds`), whether tokenisation is local around a cut (`window_matches`),
and a fingerprint that names the tokenizer in cache keys.
"""
from __future__ import annotations

import functools
import hashlib
import json
from dataclasses import dataclass
from typing import Any

import numpy as np

from .cache import tokenizer_fingerprint

# Below this many characters a text is encoded in one call; above it, in parallel chunks cut at spaces.
_CHUNK_CHARS = 1 << 18
# Junction checks re-tokenise this many characters at least on each side of a cut.
WINDOW_CHARS = 64


# Text that precedes a piece when its in-context tokens are computed: a word and a sentence end, the way every
# piece of a prompt follows the previous one.
ANCHOR = "Text."
# The same for text that starts a line (the haystack lines of RULER's noise and needle haystacks).
LINE_ANCHOR = "Text.\n"


class TokenizerError(ValueError):
    """The tokenizer cannot be loaded or cannot be used for exact lengths."""


class NotSeparable(Exception):
    """Tokens merge across a junction, so pieces cannot be counted separately (callers re-tokenise instead)."""


@functools.lru_cache(maxsize=16)
def load_tokenizer(
    name_or_path: str,
    revision: str | None = None,
    subfolder: str | None = None,
    trust_remote_code: bool = False,
) -> Any:
    """Load a tokenizer with `AutoTokenizer` (fast), once per process, with an error that names the value."""
    from transformers import AutoTokenizer

    kwargs: dict[str, Any] = {"use_fast": True, "trust_remote_code": bool(trust_remote_code)}
    if revision:
        kwargs["revision"] = revision
    if subfolder:
        kwargs["subfolder"] = subfolder
    try:
        return AutoTokenizer.from_pretrained(name_or_path, **kwargs)
    except Exception as err:  # transformers raises OSError, ValueError, HF hub errors...
        raise TokenizerError(
            f"cannot load tokenizer {name_or_path!r} ({type(err).__name__}: {err}); pass pretrained=<model dir or "
            "hub id> or tokenizer=<dir or hub id> that exists offline"
        ) from err


@dataclass(frozen=True)
class Encoded:
    """Token ids of a text plus `bounds`: token j covers characters [bounds[j], bounds[j+1])."""

    ids: np.ndarray  # int64 [n]
    bounds: np.ndarray  # int64 [n + 1]; bounds[0] == 0, bounds[n] == len(text)
    in_context: bool = True  # False: tokens across a sentence end merge, so these are start-of-input tokens


class TokenizerView:
    """A fast tokenizer seen as a token counter; see the module docstring."""

    def __init__(self, tokenizer: Any, add_special_tokens: bool = True) -> None:
        backend = getattr(tokenizer, "backend_tokenizer", None)
        if not getattr(tokenizer, "is_fast", False) or backend is None:
            raise TokenizerError(
                f"tokenizer {getattr(tokenizer, 'name_or_path', tokenizer)!r} is a slow ({type(tokenizer).__name__}) "
                "tokenizer; infini-bench needs a fast (Rust) tokenizer to count tokens exactly at 1M tokens"
            )
        from tokenizers import Tokenizer

        serialized = backend.to_str()
        # A private copy without the truncation/padding a tokenizer.json may ship with: counts must be untruncated.
        self.backend = Tokenizer.from_str(serialized)
        self.backend.no_truncation()
        self.backend.no_padding()
        self.tokenizer = tokenizer
        self.name = str(getattr(tokenizer, "name_or_path", "") or type(tokenizer).__name__)
        self.add_special_tokens = bool(add_special_tokens)
        self.lead, self.trail = self._special_layout()
        self._anchor_ids = self.raw(ANCHOR)
        self._anchors: dict[str, list[int]] = {}
        meta = json.dumps(
            [type(tokenizer).__name__, self.add_special_tokens, self.lead, self.trail], sort_keys=True
        )
        self.fingerprint = hashlib.sha256((tokenizer_fingerprint(tokenizer) + meta).encode()).hexdigest()

    # -- counting ---------------------------------------------------------------------------------------------
    def raw(self, text: str) -> list[int]:
        """Token ids of `text` at the start of an input, with no special tokens."""
        return self.backend.encode(text, add_special_tokens=False).ids

    def full(self, text: str) -> list[int]:
        """The ids the model is fed for `text`: special tokens included the way the tokenizer adds them."""
        return self.backend.encode(text, add_special_tokens=self.add_special_tokens).ids

    def count(self, text: str) -> int:
        """Number of tokens the model is fed for `text`."""
        return len(self.full(text))

    @property
    def n_special(self) -> int:
        return len(self.lead) + len(self.trail)

    def in_context(self, text: str, anchor: str = ANCHOR) -> list[int]:
        """Token ids of `text` as it tokenises *after* other text, not at the start of an input: encoded behind
        `anchor` (default `ANCHOR`, a word and a sentence end, for text that starts with a space; `LINE_ANCHOR`
        for text that starts a line) and the anchor's tokens dropped. This neutralises start-of-input rules such
        as a prepended "▁" (Llama-2 style normalisers). Raises `NotSeparable` when the anchor's tokens merge with
        the text."""
        return self.in_context_with_starts(text, anchor)[0]

    def in_context_with_starts(self, text: str, anchor: str = ANCHOR) -> tuple[list[int], list[int]]:
        """`in_context` ids plus the character offset in `text` where each token starts."""
        encoding = self.backend.encode(anchor + text, add_special_tokens=False)
        anchor_ids = self._anchor_ids if anchor == ANCHOR else self._anchor(anchor)
        k = len(anchor_ids)
        if encoding.ids[:k] != anchor_ids:
            raise NotSeparable(f"tokenizer {self.name!r} merges text across a sentence end")
        shift = len(anchor)
        return list(encoding.ids[k:]), [max(o[0] - shift, 0) for o in encoding.offsets[k:]]

    def raw_with_starts(self, text: str) -> tuple[list[int], list[int]]:
        """`raw` ids plus the character offset in `text` where each token starts."""
        encoding = self.backend.encode(text, add_special_tokens=False)
        return list(encoding.ids), [o[0] for o in encoding.offsets]

    def _anchor(self, anchor: str) -> list[int]:
        if anchor not in self._anchors:
            self._anchors[anchor] = self.raw(anchor)
        return self._anchors[anchor]

    def continuation_ids(self, context: str, continuation: str) -> list[int]:
        """Ids `continuation` gets when it follows `context` (for an answer after its question): in-context ids,
        or for a tokenizer that merges across spaces, the tail of tokenising both together."""
        try:
            return self.in_context(continuation)
        except NotSeparable:
            head, whole = self.raw(context), self.raw(context + continuation)
            return whole[len(head) :] if whole[: len(head)] == head else self.raw(continuation)

    # -- token boundaries -------------------------------------------------------------------------------------
    def encode_with_bounds(self, text: str, anchor: str = ANCHOR) -> Encoded:
        """In-context ids (see `in_context`; `anchor` is the text assumed before `text`) of `text` with character
        bounds. Long texts are encoded in parallel chunks cut at spaces; the cuts are verified, falling back to one
        call when a cut changes the tokens."""
        starts = [0]
        while starts[-1] + _CHUNK_CHARS < len(text):
            cut = text.find(" ", starts[-1] + _CHUNK_CHARS)
            if cut <= 0:
                break
            starts.append(cut)
        pieces = [text[a:b] for a, b in zip(starts, starts[1:] + [len(text)])]
        try:
            encoded = self._encode_pieces(pieces, starts, len(text), anchor)
            if len(starts) > 1 and not all(self.window_matches(text, encoded, cut) for cut in starts[1:]):
                encoded = self._encode_pieces([text], [0], len(text), anchor)
        except NotSeparable:
            encoded = self._encode_pieces([text], [0], len(text), None)
        return encoded

    def _encode_pieces(self, pieces: list[str], starts: list[int], total_chars: int, anchor: str | None) -> Encoded:
        """Encode pieces in parallel, the first behind `anchor`, the others (which start at a space) behind
        `ANCHOR`; `anchor=None` encodes one piece as the start of an input."""
        anchors = [anchor or "", *[ANCHOR] * (len(pieces) - 1)]
        encodings = self.backend.encode_batch([a + p for a, p in zip(anchors, pieces)], add_special_tokens=False)
        ids_parts, bound_parts = [], [np.zeros(1, dtype=np.int64)]
        for start, enc, piece_anchor in zip(starts, encodings, anchors):
            anchor_ids = self._anchor(piece_anchor) if piece_anchor else []
            k = len(anchor_ids)
            if enc.ids[:k] != anchor_ids:
                raise NotSeparable(f"tokenizer {self.name!r} merges text across a sentence end")
            ids_parts.append(np.asarray(enc.ids[k:], dtype=np.int64))
            ends = np.asarray([o[1] for o in enc.offsets[k:]], dtype=np.int64) - len(piece_anchor) + start
            bound_parts.append(ends)
        ids = np.concatenate(ids_parts)
        bounds = np.concatenate(bound_parts)
        bounds[-1] = total_chars
        return Encoded(ids=ids, bounds=np.maximum(bounds, 0), in_context=anchor is not None)

    def window_matches(self, text: str, encoded: Encoded, cut: int) -> bool:
        """True when re-tokenising `text` around char `cut` (space to space, at least WINDOW_CHARS each side)
        gives the same tokens as `encoded`: tokenisation is local there, so pieces joined at `cut` count exactly.
        `text` must start with a space (in-context text, see `in_context`)."""
        left = max(text.rfind(" ", 0, max(cut - WINDOW_CHARS, 0) + 1), 0)
        right = text.find(" ", min(cut + WINDOW_CHARS, len(text)))
        right = len(text) if right < 0 else right
        jl = int(np.searchsorted(encoded.bounds, left, side="left"))
        jr = int(np.searchsorted(encoded.bounds, right, side="left"))
        if jr >= len(encoded.bounds) or encoded.bounds[jl] != left or encoded.bounds[jr] != right:
            return False
        try:
            return self.in_context(text[left:right]) == encoded.ids[jl:jr].tolist()
        except NotSeparable:
            return False

    def _special_layout(self) -> tuple[list[int], list[int]]:
        """Special tokens the tokenizer puts before and after any text (e.g. BOS), by encoding a probe."""
        probe = "a b"
        bare = self.raw(probe)
        dressed = self.backend.encode(probe, add_special_tokens=self.add_special_tokens).ids
        for i in range(len(dressed) - len(bare) + 1):
            if dressed[i : i + len(bare)] == bare:
                return list(dressed[:i]), list(dressed[i + len(bare) :])
        raise TokenizerError(f"cannot locate the text tokens inside the special-token template of {self.name!r}")


_VIEWS: dict[tuple[int, bool], tuple[Any, TokenizerView]] = {}


def tokenizer_view(tokenizer: Any, add_special_tokens: bool = True) -> TokenizerView:
    """A (memoised) `TokenizerView` for a tokenizer object, or for a name/path loaded with `load_tokenizer`."""
    if isinstance(tokenizer, TokenizerView):
        return tokenizer
    if isinstance(tokenizer, str):
        tokenizer = load_tokenizer(tokenizer)
    key = (id(tokenizer), bool(add_special_tokens))
    if key not in _VIEWS:
        if len(_VIEWS) >= 16:
            _VIEWS.pop(next(iter(_VIEWS)))
        # The tokenizer is kept alongside its view so that its id cannot be reused by another object.
        _VIEWS[key] = (tokenizer, TokenizerView(tokenizer, add_special_tokens=add_special_tokens))
    return _VIEWS[key][1]
