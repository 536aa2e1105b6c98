"""RULER's NIAH keys: every adjective-noun pair of wonderwords' lists, in RULER's order, without building them.

RULER (``scripts/data/synthetic/niah.py``) draws a key with ``random.choice(words)`` from::

    nouns = wonderwords.random_word._get_words_from_text_file("nounlist.txt")
    adjs = wonderwords.random_word._get_words_from_text_file("adjectivelist.txt")
    words = sorted(list(set(f"{adj}-{noun}" for adj in adjs for noun in nouns)))

about 6.2 million strings (half a gigabyte of Python objects, seconds to sort). `random.choice` only needs the
list's length and its i-th item, so `SortedPairs` computes both from the two short lists: the pairs of one
adjective are contiguous in sorted order and ordered as the sorted nouns, unless one adjective's ``adj + "-"``
is a prefix of another's (``blue`` and ``blue-eyed``): only such groups are interleaved or can hold duplicates,
and only they are built and sorted as strings. The same draw from the same seed then gives RULER's key.
"""
from __future__ import annotations

import bisect
import functools
from collections.abc import Sequence
from typing import overload

INSTALL_HINT = "pip install 'infini-bench[ruler]' (or pip install wonderwords)"


class RulerDependencyError(ImportError):
    """A package RULER's generator needs (wonderwords, nltk's sentence data) is missing."""


class SortedPairs(Sequence):
    """``sorted(set(f"{a}-{n}" for a in adjectives for n in nouns))`` as a lazy sequence (see the module doc)."""

    def __init__(self, adjectives: Sequence[str], nouns: Sequence[str], sep: str = "-") -> None:
        self.nouns = sorted(set(nouns))
        prefixes = sorted({a + sep for a in adjectives})
        # blocks in sorted order: (first index, prefix, None) for a plain block, (first index, None, strings) for
        # a group whose prefixes extend one another (contiguous in sorted order, rooted at the shortest)
        self._blocks: list[tuple[int, str | None, list[str] | None]] = []
        self._starts: list[int] = []
        total, k = 0, 0
        while k < len(prefixes):
            root, end = prefixes[k], k + 1
            while end < len(prefixes) and prefixes[end].startswith(root):
                end += 1
            if end == k + 1:
                block: tuple[int, str | None, list[str] | None] = (total, root, None)
                size = len(self.nouns)
            else:
                strings = sorted({p + n for p in prefixes[k:end] for n in self.nouns})
                block, size = (total, None, strings), len(strings)
            self._blocks.append(block)
            self._starts.append(total)
            total += size
            k = end
        self._len = total

    def __len__(self) -> int:
        return self._len

    @overload
    def __getitem__(self, index: int) -> str: ...

    @overload
    def __getitem__(self, index: slice) -> list[str]: ...

    def __getitem__(self, index: int | slice) -> str | list[str]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(self._len))]
        if index < 0:
            index += self._len
        if not 0 <= index < self._len:
            raise IndexError(f"pair {index} of {self._len}")
        start, prefix, strings = self._blocks[bisect.bisect_right(self._starts, index) - 1]
        if strings is not None:
            return strings[index - start]
        return f"{prefix}{self.nouns[index - start]}"


def wonderwords_lists() -> tuple[list[str], list[str]]:
    """(adjectives, nouns) exactly as RULER's niah.py reads them from the installed wonderwords."""
    try:
        from wonderwords import random_word
    except ImportError as err:
        raise RulerDependencyError(
            "protocol=ruler draws RULER's keys from the wonderwords package's word lists, which is not installed: "
            f"{INSTALL_HINT}"
        ) from err
    return (random_word._get_words_from_text_file("adjectivelist.txt"),
            random_word._get_words_from_text_file("nounlist.txt"))


@functools.lru_cache(maxsize=1)
def ruler_words() -> SortedPairs:
    """RULER's key list (adjective-noun pairs of wonderwords' lists, sorted, without duplicates)."""
    adjectives, nouns = wonderwords_lists()
    return SortedPairs(adjectives, nouns)


__all__ = ["RulerDependencyError", "SortedPairs", "ruler_words", "wonderwords_lists"]
