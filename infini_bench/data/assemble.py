"""Exact-length prompts from fixed text, needles and haystack spans.

A prompt is a list of parts: plain text (an instruction, separators such as ``"\\n"``, a question, the chat
template's text), `Needle` texts (whose token positions are reported) and `Span`\\ s of a haystack (a character
range of its endless text). Exactly one span is *free*: its end is chosen so that the whole prompt, special tokens
included, has exactly the requested number of tokens. The free span ends after a whole word when that count can
be hit, else inside the word that crosses it (as Landmark Attention's character-cut garbage does).

The fast *stitched* path: the inside of every long span takes its tokens from the haystack's pre-computed tokens,
cut at word starts (a token that begins with a space), and everything between two such insides (the text around
each needle and separator, with at least `MARGIN_CHARS` of the neighbouring haystack on each side) is tokenised as
one piece in its real context. So a 1M-token prompt costs array copies, not a million-token tokenisation, and the
fixed parts may contain anything (newlines, chat headers). It is not assumed blindly: the text around every cut
is re-tokenised and compared. When a check fails the *retokenised* path tokenises the whole prompt at every
step, which is slower but holds for any tokenizer.
"""
from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Union

import numpy as np

from infini_bench.data.haystack import Haystack
from infini_bench.data.tokens import WINDOW_CHARS, NotSeparable, TokenizerError, TokenizerView

#: Haystack text kept in the tokenised piece on each side of a junction (at least one whole word).
MARGIN_CHARS = 24
#: How far (chars) the free span's end may move to hit an exact count when the count is not monotonic, and how
#: many of those ends the retokenised path (a whole-prompt tokenisation each) tries.
_SEARCH_CHARS = 300
_SLOW_TRIES = 200


class PromptTooShort(ValueError):
    """The requested length cannot hold the fixed parts of the prompt."""


@dataclass(frozen=True)
class Needle:
    """Text hidden in the haystack; the assembler reports where its first token lands."""

    text: str


@dataclass(frozen=True)
class Span:
    """Haystack text from global char `start` to `end` (exclusive); `end=None` marks the free span."""

    haystack: Haystack
    start: int
    end: int | None = None


Part = Union[str, Needle, Span]


@dataclass
class AssembledPrompt:
    text: str
    input_ids: np.ndarray  # exactly what the model is fed, special tokens included
    needle_positions: list[int]  # index in input_ids of each needle's first token, in needle (part) order
    needle_depths: list[float]  # percent of the prompt's haystack tokens before each needle
    haystack_tokens: int
    method: str  # "stitched" or "retokenised"

    def doc_fields(self, haystack: str, answer_tokens: int) -> dict:
        """The fields every retrieval doc carries about its prompt (passkey and NIAH alike)."""
        return {
            "prompt": self.text,
            "input_ids": self.input_ids.tolist(),
            "prompt_tokens": len(self.input_ids),
            "answer_tokens": answer_tokens,
            "needle_depth_percent": self.needle_depths[0] if self.needle_depths else 0.0,
            "haystack": haystack,
            "haystack_tokens": self.haystack_tokens,
            "build_method": self.method,
        }


@dataclass
class _Layout:
    """The prompt for one choice of the free span's end: text, and where each part and interior lies in it."""

    text: str
    part_chars: list[tuple[int, int]]  # char range of every part in `text`
    glues: list[tuple[int, int]]  # char ranges tokenised as text
    interiors: list[tuple[int, int, Haystack, int, int]]  # (char start, char end, haystack, token a, token b)


def assemble(view: TokenizerView, parts: list[Part], total_tokens: int) -> AssembledPrompt:
    """A prompt of exactly `total_tokens` model tokens (special tokens as `view` adds them); see the module
    docstring. The free span must be the last span."""
    spans = [i for i, p in enumerate(parts) if isinstance(p, Span)]
    free = [i for i in spans if parts[i].end is None]
    if len(free) != 1 or free[0] != spans[-1]:
        raise ValueError("a prompt needs exactly one free span (end=None), and it must be its last span")
    if all(parts[i].haystack.separable for i in spans):
        try:
            return _solve(view, parts, free[0], total_tokens, stitched=True)
        except (NotSeparable, TokenizerError):
            pass
    return _solve(view, parts, free[0], total_tokens, stitched=False)


def _layout(parts: list[Part], free: int, end: int, stitched: bool) -> _Layout:
    chunks: list[str] = []
    part_chars: list[tuple[int, int]] = []
    glues: list[tuple[int, int]] = []
    interiors: list[tuple[int, int, Haystack, int, int]] = []
    pos = glue_start = 0
    for i, part in enumerate(parts):
        if isinstance(part, Span):
            hay, a = part.haystack, part.start
            b = end if i == free else int(part.end)
            if b < a:
                raise ValueError(f"haystack span ends before it starts ({a} > {b})")
            ta, tb = (hay.word_cut_after(a + MARGIN_CHARS), hay.word_cut_before(b - MARGIN_CHARS)) if stitched else (0, 0)
            ca, cb = hay.char_pos(ta), hay.char_pos(tb)
            if stitched and ta < tb and a < ca < cb < b:
                head, tail = hay.chars(a, ca), hay.chars(cb, b)
                chunks.append(head)
                glues.append((glue_start, pos + len(head)))
                interiors.append((pos + len(head), pos + len(head) + cb - ca, hay, ta, tb))
                chunks.append(hay.chars(ca, cb))
                chunks.append(tail)
                glue_start = pos + len(head) + cb - ca
                part_chars.append((pos, pos + b - a))
                pos += b - a
                continue
            text = hay.chars(a, b)
        else:
            text = part.text if isinstance(part, Needle) else part
        chunks.append(text)
        part_chars.append((pos, pos + len(text)))
        pos += len(text)
    glues.append((glue_start, pos))
    return _Layout("".join(chunks), part_chars, glues, interiors)


class _Counter:
    """Token counts (and final ids) of layouts, with the tokenisation of unchanged glue pieces memoised."""

    def __init__(self, view: TokenizerView, stitched: bool) -> None:
        self.view, self.stitched = view, stitched
        self.memo: dict[tuple[str, bool], tuple[list[int], list[int]]] = {}

    def glue(self, text: str, at_start: bool) -> tuple[list[int], list[int]]:
        key = (text, at_start)
        if key in self.memo:
            return self.memo[key]
        if at_start:
            found = self.view.raw_with_starts(text)
        else:
            if not text.startswith(" "):
                raise NotSeparable("a stitched piece must start at a space")
            found = self.view.in_context_with_starts(text)
        if len(text) > 20_000 or len(self.memo) > 64:  # long texts (the retokenised path) are not worth keeping
            self.memo.clear()
        self.memo[key] = found
        return found

    def count(self, layout: _Layout) -> int:
        if not self.stitched:
            return self.view.n_special + len(self.glue(layout.text, True)[0])
        total = self.view.n_special + sum(tb - ta for _, _, _, ta, tb in layout.interiors)
        for k, (a, b) in enumerate(layout.glues):
            total += len(self.glue(layout.text[a:b], k == 0)[0])
        return total

    def ids(self, layout: _Layout) -> tuple[np.ndarray, np.ndarray]:
        """Content ids (no special tokens) and the char where each token starts."""
        if not self.stitched:
            ids, starts = self.glue(layout.text, True)
            return np.asarray(ids, dtype=np.int64), np.asarray(starts, dtype=np.int64)
        id_parts, start_parts = [], []
        for k, (a, b) in enumerate(layout.glues):
            ids, starts = self.glue(layout.text[a:b], k == 0)
            id_parts.append(np.asarray(ids, dtype=np.int64))
            start_parts.append(np.asarray(starts, dtype=np.int64) + a)
            if k < len(layout.interiors):
                c0, _, hay, ta, tb = layout.interiors[k]
                id_parts.append(hay.slice_ids(ta, tb))
                q, r = divmod(ta, hay.n)
                offsets = hay.bounds[np.arange(r, r + (tb - ta)) % hay.n] + (np.arange(r, r + (tb - ta)) // hay.n) * hay.period
                start_parts.append(offsets - offsets[0] + c0 if len(offsets) else offsets)
        return np.concatenate(id_parts), np.concatenate(start_parts)


def _solve(view: TokenizerView, parts: list[Part], free: int, target: int, stitched: bool) -> AssembledPrompt:
    span: Span = parts[free]
    hay, a = span.haystack, span.start
    counter = _Counter(view, stitched)

    def count(end: int) -> int:
        return counter.count(_layout(parts, free, end, stitched))

    def word_end(k: int) -> int:
        """The k-th word end (a space follows) of the haystack, never before the span's start."""
        return max(hay.space(k), a)

    floor = count(a)
    if floor > target:
        raise PromptTooShort(
            f"{target} prompt tokens cannot hold the instruction, needle(s), question and the haystack before the "
            f"needle, which need {floor} tokens: use a longer context_length or fewer answer tokens"
        )
    k0 = hay.space_index(a)
    lo, hi = k0, hay.space_index(a + int((target - floor) * hay.chars_per_token(view)) + 1)
    while count(word_end(hi)) < target:  # bracket: count(word_end(lo)) <= target <= count(word_end(hi))
        lo, hi = hi, hi + 2 * (hi - k0) + 1
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if count(word_end(mid)) <= target:
            lo = mid
        else:
            hi = mid
    best = word_end(lo)
    if count(best) != target:
        nxt = word_end(hi)
        if count(nxt) == target:
            best = nxt
        else:  # the count steps over the target inside the crossing word: end inside it, or (a last resort for
            # tokenizers that give a space its own token) right after its space, or (tokenizers whose tokens cross
            # spaces, so the count is not monotonic) at another end nearby
            for end in itertools.islice(_ends_to_try(hay, a, best, nxt), None if stitched else _SLOW_TRIES):
                if count(end) == target:
                    best = end
                    break
            else:
                raise TokenizerError(f"could not build an exact {target}-token prompt with tokenizer {view.name!r}")
    layout = _layout(parts, free, best, stitched)
    content, starts = counter.ids(layout)
    if stitched:
        _check_junctions(view, layout, content, starts)
    lead = np.asarray(view.lead, dtype=np.int64)
    input_ids = np.concatenate([lead, content, np.asarray(view.trail, dtype=np.int64)])
    if len(input_ids) != target:  # arithmetic guard; cannot differ unless the code above is wrong
        raise AssertionError(f"assembled prompt has {len(input_ids)} tokens, expected {target}")
    return _result(parts, layout, input_ids, starts, len(lead), "stitched" if stitched else "retokenised")


def _ends_to_try(hay: Haystack, a: int, best: int, nxt: int) -> Iterator[int]:
    """Where to end the free span when no word end gives the exact count, in order: inside the crossing word, right
    after its space, then other spaces nearby, then any char nearby (nearest first), and only as the last resort
    right after a newline: a line haystack cut there leaves a blank line before the text that follows (RULER's lines
    never do), which a tokenizer whose count steps over the target everywhere else may still need. Lazy: the first
    tries nearly always succeed, and listing the nearby spaces costs more than the solve itself."""
    def after_newline(e: int) -> bool:
        return hay.chars(e - 1, e) == "\n"

    ordered = [e for e in (*range(best + 2, nxt), best + 1) if not after_newline(e)]
    yield from ordered
    near = [e for e in range(max(best - _SEARCH_CHARS, a), nxt + _SEARCH_CHARS) if e not in (best, nxt)]
    last = sorted((e for e in near if after_newline(e)), key=lambda e: abs(e - best))
    near = [e for e in near if not after_newline(e)]
    tried = set(ordered)
    spaces = sorted((e for e in near if hay.chars(e, e + 1) == " " and e not in tried), key=lambda e: abs(e - best))
    yield from spaces
    tried.update(spaces)
    yield from sorted(set(near) - tried, key=lambda e: abs(e - best))
    yield from last


def _result(
    parts: list[Part], layout: _Layout, input_ids: np.ndarray, starts: np.ndarray, n_lead: int, method: str
) -> AssembledPrompt:
    def token_at(c: int) -> int:  # tokens that start before char c
        return int(np.searchsorted(starts, c, side="left"))

    span_tokens = [
        (i, token_at(b) - token_at(a)) for i, ((a, b), p) in enumerate(zip(layout.part_chars, parts)) if isinstance(p, Span)
    ]
    haystack_tokens = sum(n for _, n in span_tokens)
    positions, depths = [], []
    for i, ((a, _), part) in enumerate(zip(layout.part_chars, parts)):
        if isinstance(part, Needle):
            positions.append(n_lead + max(int(np.searchsorted(starts, a, side="right")) - 1, 0))
            before = sum(n for j, n in span_tokens if j < i)
            depths.append(0.0 if haystack_tokens == 0 else round(100.0 * before / haystack_tokens, 3))
    return AssembledPrompt(
        text=layout.text,
        input_ids=input_ids,
        needle_positions=positions,
        needle_depths=depths,
        haystack_tokens=haystack_tokens,
        method=method,
    )


def _check_junctions(view: TokenizerView, layout: _Layout, content: np.ndarray, starts: np.ndarray) -> None:
    """Re-tokenise the text around both ends of every interior; raise NotSeparable when it differs."""
    text = layout.text
    space_tokens = np.nonzero(np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)[np.minimum(starts, len(text) - 1)] == ord(" "))[0]
    for c0, c1, *_ in layout.interiors:
        for junction in (c0, c1):
            i = int(np.searchsorted(starts[space_tokens], junction - WINDOW_CHARS, side="right")) - 1
            j = int(np.searchsorted(starts[space_tokens], junction + WINDOW_CHARS, side="left"))
            left = int(space_tokens[i]) if i >= 0 else 0
            right = int(space_tokens[j]) if j < len(space_tokens) else len(content)
            lc = int(starts[left]) if left else 0
            rc = int(starts[right]) if right < len(content) else len(text)
            window = text[lc:rc]
            got = view.raw(window) if lc == 0 else view.in_context(window)
            if got != content[left:right].tolist():
                raise NotSeparable(f"tokens change across a junction at char {junction}")
