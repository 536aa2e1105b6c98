"""Tokenising a long document in parallel pieces, with the same ids as one call.

A fast tokenizer encodes one string on one thread: a million-token document spent 3.2 of its 8.5 s of rolling
scoring on an H200 in the tokenizer (benchmarks/RESULTS_gpu.md). A batch of pieces is encoded on all cores by the
tokenizers library. The pieces are cut just before a space that follows a non-space character (where pre-tokenizers
split words anyway), and every cut is checked: the text around it is encoded as one string and its tokens in the
middle of that window must be the pieces' tokens there, with the same character spans. One disagreement, or a
tokenizer without offsets (a slow one), and the document is encoded in one call: the result is always exact.
"""
from __future__ import annotations

from collections.abc import Callable

# Below this many characters one call is already fast; above it, pieces of about this size.
PIECE_CHARS = 1 << 17
# Characters either side of a cut that the check encodes; the tokens in the middle half are compared.
WINDOW_CHARS = 2048

Encode = Callable[[str], list[int]]


def cut_points(text: str, piece_chars: int = PIECE_CHARS) -> list[int]:
    """Offsets where the text is cut: the first space after each multiple of `piece_chars` that follows a
    non-space character (none found: no cut there)."""
    cuts = []
    for target in range(piece_chars, len(text) - piece_chars // 2, piece_chars):
        at = target
        while at < len(text) and not (text[at] == " " and not text[at - 1].isspace()):
            at += 1
        if at < len(text) and (not cuts or at > cuts[-1]):
            cuts.append(at)
    return cuts


def _special_ends(tokenizer, add_special_tokens: dict) -> tuple[list[int], list[int]] | None:
    """The ids the tokenizer adds before and after a text (BOS, EOS, ...), read off a probe; None if the probe's
    plain ids are not kept whole inside its special-token form, or the tokenizers backend encodes it differently
    from the transformers tokenizer (then only one call is trusted)."""
    probe = "infini bench 12"
    plain = tokenizer.encode(probe, add_special_tokens=False)
    if tokenizer.backend_tokenizer.encode(probe, add_special_tokens=False).ids != plain:
        return None
    full = tokenizer.encode(probe, **add_special_tokens)
    for i in range(len(full) - len(plain) + 1):
        if full[i : i + len(plain)] == plain:
            return full[:i], full[i + len(plain) :]
    return None


def _cut_agrees(backend, text: str, cut: int, left, right, left_start: int) -> bool:
    """The whole-text encoding of the window around `cut` has, in the window's middle half, the same tokens (id
    and character span) as the two pieces that meet at `cut` (`left` starts at `left_start`)."""
    start, end = max(0, cut - WINDOW_CHARS), min(len(text), cut + WINDOW_CHARS)
    lo, hi = cut - WINDOW_CHARS // 2, cut + WINDOW_CHARS // 2

    def inside(encoding, shift: int) -> list[tuple[int, int, int]]:
        return [(i, a + shift, b + shift) for i, (a, b) in zip(encoding.ids, encoding.offsets)
                if lo <= a + shift and b + shift <= hi]

    window = backend.encode(text[start:end], add_special_tokens=False)
    return inside(window, start) == inside(left, left_start) + inside(right, cut)


def encode_long(tokenizer, text: str, add_special_tokens: dict, piece_chars: int = PIECE_CHARS) -> list[int]:
    """`tokenizer.encode(text, **add_special_tokens)`, computed in parallel pieces when the text is long."""
    cuts = cut_points(text, piece_chars) if len(text) >= 2 * piece_chars else []
    ends = _special_ends(tokenizer, add_special_tokens) if cuts and getattr(tokenizer, "is_fast", False) else None
    if ends is None:
        return tokenizer.encode(text, **add_special_tokens)
    backend = tokenizer.backend_tokenizer
    bounds = [0, *cuts, len(text)]
    pieces = backend.encode_batch([text[a:b] for a, b in zip(bounds, bounds[1:])], add_special_tokens=False)
    if not all(_cut_agrees(backend, text, cut, pieces[k], pieces[k + 1], bounds[k]) for k, cut in enumerate(cuts)):
        return tokenizer.encode(text, **add_special_tokens)
    before, after = ends
    return before + [i for piece in pieces for i in piece.ids] + after
