"""Exact-length prompts: a prefix, a haystack region with needles at sentence boundaries, a question.

Layout: ``PREFIX + H[s:c1] + NEEDLE_1 + H[c1:c2] + ... + H[ck:e] + QUESTION`` where ``H[a:b]`` is a token range of
the (repeating) haystack, ``c_i`` are sentence cuts chosen by depth and ``e`` is a word cut chosen so that the
whole prompt, special tokens included, has exactly the requested number of tokens.

Every piece after the prefix starts with a space, so for the tokenizers in use (whitespace pre-tokenisation:
byte-level BPE, SentencePiece/Metaspace, WordPiece) tokens never cross a junction and the prompt's tokens are the
concatenation of each piece's in-context tokens. That is the fast *stitched* path: a 1M-token prompt costs array
copies, not a million-token tokenisation. It is not assumed blindly: the text around every junction is
re-tokenised and compared. When a check fails the *retokenised* path tokenises the whole prompt and moves the
haystack end until the count is exact, which is slower but holds for any tokenizer.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from infini_bench.data.haystack import Haystack
from infini_bench.data.tokens import WINDOW_CHARS, NotSeparable, TokenizerError, TokenizerView

_MAX_START_TRIES = 256


class PromptTooShort(ValueError):
    """The requested length cannot hold the fixed parts of the prompt."""


@dataclass(frozen=True)
class Needle:
    """Text hidden in the haystack (must start with a space) and where: percent of the haystack before it."""

    text: str
    depth_percent: float


@dataclass
class AssembledPrompt:
    text: str
    input_ids: np.ndarray  # exactly what the model is fed, special tokens included
    needle_positions: list[int]  # index in input_ids of each needle's first token, in needle order
    needle_depths: list[float]  # actual percent of haystack tokens before each needle
    haystack_tokens: int
    method: str  # "stitched" or "retokenised"

    def doc_fields(self, haystack: str, answer_tokens: int) -> dict:
        """The fields every retrieval doc carries about its prompt (passkey and NIAH alike)."""
        return {
            "prompt": self.text,
            "input_ids": self.input_ids.tolist(),
            "prompt_tokens": len(self.input_ids),
            "answer_tokens": answer_tokens,
            "needle_depth_percent": self.needle_depths[0],
            "haystack": haystack,
            "haystack_tokens": self.haystack_tokens,
            "build_method": self.method,
        }


@dataclass
class _Piece:
    text: str
    ids: np.ndarray
    region: tuple[int, int] | None = None  # global haystack token range for haystack pieces
    char_start: int = 0
    tok_start: int = 0


def assemble_prompt(
    view: TokenizerView,
    haystack: Haystack,
    prefix: str,
    needles: list[Needle],
    question: str,
    total_tokens: int,
    start_choice: int = 0,
) -> AssembledPrompt:
    """A prompt of exactly `total_tokens` model tokens; see the module docstring. `start_choice` picks which
    haystack sentence the region starts at (deterministic per document)."""
    for piece in [*(n.text for n in needles), question]:
        if not piece.startswith(" ") or piece != piece.rstrip():
            raise ValueError(f"prompt pieces after the prefix must start with a space and not end with one: {piece!r}")
    for needle in needles:
        if not 0 <= needle.depth_percent <= 100:
            raise ValueError(f"depth {needle.depth_percent!r} is outside 0-100 %")
    if haystack.separable:
        try:
            return _stitched(view, haystack, prefix, needles, question, total_tokens, start_choice)
        except NotSeparable:
            pass
    return _retokenised(view, haystack, prefix, needles, question, total_tokens, start_choice)


def _too_short(total_tokens: int, fixed: int) -> PromptTooShort:
    return PromptTooShort(
        f"{total_tokens} prompt tokens cannot hold the instruction, needle(s) and question, which need {fixed} "
        "tokens before any haystack: use a longer context_length or fewer answer tokens"
    )


def _choose_region(haystack: Haystack, length: int, start_choice: int) -> tuple[int, int]:
    """Region [s, s+length) starting at a sentence (else a word) and ending at a word cut when possible."""
    for cuts in (haystack.sentence_cuts, haystack.word_cuts):
        m = len(cuts)
        first = start_choice % m
        for k in range(min(m, _MAX_START_TRIES)):
            s = int(cuts[(first + k) % m])
            if haystack.is_word_cut(s + length):
                return s, s + length
    s = int(haystack.sentence_cuts[start_choice % len(haystack.sentence_cuts)])
    return s, s + length  # ends inside a word; the junction check (or re-tokenisation) decides


def _place(haystack: Haystack, needles: list[Needle], s: int, e: int) -> list[int]:
    """Global haystack cut for each needle: the sentence cut nearest its depth (the region start counts as one)."""
    length = e - s
    cuts = []
    for needle in needles:
        target = s + needle.depth_percent / 100.0 * length
        cut = haystack.cut_near(haystack.sentence_cuts, target, s, e)
        if abs(s - target) <= abs(cut - target):
            cut = s
        cuts.append(cut)
    return cuts


def _layout(haystack: Haystack, needles: list[Needle], s: int, e: int) -> tuple[list[int], list[int]]:
    """Each needle's haystack cut, and the needle indices in the order they appear in the prompt."""
    cuts = _place(haystack, needles, s, e)
    order = sorted(range(len(needles)), key=lambda i: (cuts[i], i))
    return cuts, order


def _stitched(
    view: TokenizerView,
    haystack: Haystack,
    prefix: str,
    needles: list[Needle],
    question: str,
    total_tokens: int,
    start_choice: int,
) -> AssembledPrompt:
    prefix_ids = np.asarray(view.raw(prefix), dtype=np.int64)
    needle_ids = [np.asarray(view.in_context(n.text), dtype=np.int64) for n in needles]
    question_ids = np.asarray(view.in_context(question), dtype=np.int64)
    fixed = view.n_special + len(prefix_ids) + sum(len(x) for x in needle_ids) + len(question_ids)
    length = total_tokens - fixed
    if length < 0:
        raise _too_short(total_tokens, fixed)
    s, e = _choose_region(haystack, length, start_choice)
    cuts, order = _layout(haystack, needles, s, e)

    pieces = [_Piece(prefix, prefix_ids)]
    needle_piece: dict[int, int] = {}
    prev = s
    for i in order:
        if cuts[i] > prev:
            pieces.append(_Piece(haystack.slice_text(prev, cuts[i]), haystack.slice_ids(prev, cuts[i]), (prev, cuts[i])))
        needle_piece[i] = len(pieces)
        pieces.append(_Piece(needles[i].text, needle_ids[i]))
        prev = cuts[i]
    if e > prev:
        pieces.append(_Piece(haystack.slice_text(prev, e), haystack.slice_ids(prev, e), (prev, e)))
    pieces.append(_Piece(question, question_ids))

    char, tok = 0, 0
    for piece in pieces:
        piece.char_start, piece.tok_start = char, tok
        char += len(piece.text)
        tok += len(piece.ids)
    text = "".join(p.text for p in pieces)
    content = np.concatenate([p.ids for p in pieces])
    for k in range(len(pieces) - 1):
        _check_junction(view, haystack, text, content, pieces[k], pieces[k + 1])

    lead = np.asarray(view.lead, dtype=np.int64)
    input_ids = np.concatenate([lead, content, np.asarray(view.trail, dtype=np.int64)])
    if len(input_ids) != total_tokens:  # arithmetic guard; cannot differ unless the code above is wrong
        raise AssertionError(f"stitched prompt has {len(input_ids)} tokens, expected {total_tokens}")
    return AssembledPrompt(
        text=text,
        input_ids=input_ids,
        needle_positions=[len(lead) + pieces[needle_piece[i]].tok_start for i in range(len(needles))],
        needle_depths=[_depth(cuts[i], s, length) for i in range(len(needles))],
        haystack_tokens=length,
        method="stitched",
    )


def _depth(cut: int, s: int, length: int) -> float:
    return 0.0 if length == 0 else round(100.0 * (cut - s) / length, 3)


def _window_left(haystack: Haystack, piece: _Piece) -> tuple[int, int]:
    """(char, token) in the prompt where a check window ending inside `piece`'s tail may start."""
    if piece.region is None:
        return piece.char_start, piece.tok_start
    a, b = piece.region
    end_char = haystack.char_pos(b)
    g = b
    while g > a:
        g = max(haystack.prev_cut(haystack.word_cuts, g - 1), a)
        if end_char - haystack.char_pos(g) >= WINDOW_CHARS:
            break
    return piece.char_start + haystack.char_pos(g) - haystack.char_pos(a), piece.tok_start + (g - a)


def _window_right(haystack: Haystack, piece: _Piece) -> tuple[int, int]:
    """(char, token) in the prompt where a check window starting before `piece` may end."""
    if piece.region is None:
        return piece.char_start + len(piece.text), piece.tok_start + len(piece.ids)
    a, b = piece.region
    start_char = haystack.char_pos(a)
    g = a
    while g < b:
        g = min(haystack.next_cut(haystack.word_cuts, g + 1), b)
        if haystack.char_pos(g) - start_char >= WINDOW_CHARS:
            break
    return piece.char_start + haystack.char_pos(g) - start_char, piece.tok_start + (g - a)


def _check_junction(
    view: TokenizerView, haystack: Haystack, text: str, content: np.ndarray, left: _Piece, right: _Piece
) -> None:
    """Re-tokenise the text around the junction of two pieces; raise NotSeparable when it differs."""
    lc, lt = _window_left(haystack, left)
    rc, rt = _window_right(haystack, right)
    window = text[lc:rc]
    got = view.raw(window) if lc == 0 else view.in_context(window)
    if got != content[lt:rt].tolist():
        raise NotSeparable(f"tokens change across a junction at char {right.char_start}")


def _retokenised(
    view: TokenizerView,
    haystack: Haystack,
    prefix: str,
    needles: list[Needle],
    question: str,
    total_tokens: int,
    start_choice: int,
) -> AssembledPrompt:
    """Slow exact path for any tokenizer: the haystack region is measured in characters, the whole prompt is
    tokenised, and the region's length is bracketed and bisected until the count is exact."""
    fixed = view.count(prefix + "".join(n.text for n in needles) + question)
    if total_tokens < fixed:
        raise _too_short(total_tokens, fixed)
    chars_per_token = len(haystack.text) / max(haystack.n, 1)
    starts = haystack.sentence_chars
    period = len(haystack.text)

    for attempt in range(8):
        s = int(starts[(start_choice + attempt) % len(starts)])
        built: dict[int, tuple[int, AssembledPrompt]] = {}

        def measure(chars: int) -> int:
            if chars not in built:
                built[chars] = _build_by_chars(view, haystack, prefix, needles, question, s, chars, period)
            return built[chars][0]

        guess = max(round((total_tokens - fixed) * chars_per_token), 0)
        count = measure(guess)
        if count == total_tokens:
            return built[guess][1]
        step = max(1, round(abs(total_tokens - count) * chars_per_token))
        if count < total_tokens:
            lo, hi = guess, guess + step
            while measure(hi) < total_tokens:
                lo, step = hi, step * 2
                hi = lo + step
        else:
            lo, hi = max(guess - step, 0), guess
            while lo > 0 and measure(lo) > total_tokens:
                hi, step = lo, step * 2
                lo = max(hi - step, 0)
            if measure(lo) > total_tokens:
                raise _too_short(total_tokens, measure(0) - 0)
        while hi - lo > 1:  # invariant: count(lo) <= total <= count(hi)
            mid = (lo + hi) // 2
            if measure(mid) == total_tokens:
                return built[mid][1]
            if measure(mid) < total_tokens:
                lo = mid
            else:
                hi = mid
        for chars in (lo, hi):
            if measure(chars) == total_tokens:
                return built[chars][1]
        # The count jumps over the target at this start (one character adds two tokens): try the next sentence.
    raise TokenizerError(f"could not build an exact {total_tokens}-token prompt with tokenizer {view.name!r}")


def _build_by_chars(
    view: TokenizerView,
    haystack: Haystack,
    prefix: str,
    needles: list[Needle],
    question: str,
    s: int,
    chars: int,
    period: int,
) -> tuple[int, AssembledPrompt]:
    """The prompt with `chars` haystack characters from char `s`, needles at the sentence starts nearest their
    depths, tokenised whole. Returns (token count, prompt)."""
    e = s + chars
    cuts = []
    for needle in needles:
        target = s + needle.depth_percent / 100.0 * chars
        cut = haystack.cut_near(haystack.sentence_chars, target, s, e, period=period)
        cuts.append(s if abs(s - target) <= abs(cut - target) else cut)
    order = sorted(range(len(needles)), key=lambda i: (cuts[i], i))
    parts, needle_chars, prev = [prefix], {}, s
    for i in order:
        parts.append(haystack.chars(prev, cuts[i]))
        needle_chars[i] = sum(len(p) for p in parts)
        parts.append(needles[i].text)
        prev = cuts[i]
    parts += [haystack.chars(prev, e), question]
    text = "".join(parts)
    encoding = view.backend.encode(text, add_special_tokens=view.add_special_tokens)
    prompt = AssembledPrompt(
        text=text,
        input_ids=np.asarray(encoding.ids, dtype=np.int64),
        needle_positions=[int(encoding.char_to_token(needle_chars[i] + 1) or 0) for i in range(len(needles))],
        needle_depths=[0.0 if chars == 0 else round(100.0 * (cuts[i] - s) / chars, 3) for i in range(len(needles))],
        haystack_tokens=len(encoding.ids) - view.count(prefix + "".join(n.text for n in needles) + question),
        method="retokenised",
    )
    return len(encoding.ids), prompt
