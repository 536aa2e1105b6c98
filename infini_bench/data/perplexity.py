"""Long-context perplexity documents: texts with exact token counts and prefix cuts at position-bucket edges.

Perplexity by position is measured with nested prefixes: for bucket edges 1K, 2K, 4K, ... (tokens, 1K = 1024) a
document gets one prefix per edge below its length plus itself, and the log-likelihood of tokens [lo, hi) is
``LL(prefix_hi) - LL(prefix_lo)``. That needs each prefix, re-tokenised on its own, to be exactly the first tokens
of the document: every cut is checked by tokenising the prefix, and an unstable cut moves to the nearest stable
token (the doc records the edges it used). Documents can also be cut to a fixed number of tokens.

Sources: ``stdlib`` (the eval split of the standard library, see `corpus`), ``files`` (the user's files) and
``pg19`` (a hub copy of PG-19, test split; needs the network or a local copy).
"""
from __future__ import annotations

import hashlib
import re
from typing import Any, Iterator

import numpy as np

from infini_bench.data import cache
from infini_bench.data.corpus import expand_paths, read_text_file, stdlib_files, stdlib_root
from infini_bench.validation import whole_number
from infini_bench.data.tokens import tokenizer_view

BUILDER_VERSION = 1
KILO = 1024
_SEARCH_RADIUS = 16
PG19_DEFAULT_DATASET = "emozilla/pg19"


class PerplexitySourceError(ValueError):
    """A perplexity source cannot be read."""


def default_edges(n_tokens: int) -> list[int]:
    """Bucket edges 1K, 2K, 4K, ... below `n_tokens`."""
    edges, edge = [], KILO
    while edge < n_tokens:
        edges.append(edge)
        edge *= 2
    return edges


def count_words(text: str) -> int:
    """Words as lm-eval counts them for word perplexity (whitespace split)."""
    return len(re.split(r"\s+", text))


def build_ppl_doc(
    tokenizer: Any,
    name: str,
    text: str,
    bucket_edges: list[int] | None = None,
    doc_tokens: int | None = None,
    add_special_tokens: bool = True,
) -> dict[str, Any]:
    """A perplexity document: `text` (cut to `doc_tokens` tokens if longer), its token count in the model's
    tokens, and verified prefix cuts (`prefix_chars`, `prefix_tokens`) at the bucket edges below its length."""
    view = tokenizer_view(tokenizer, add_special_tokens)
    lead, trail = len(view.lead), len(view.trail)
    encoding = view.backend.encode(text, add_special_tokens=view.add_special_tokens)
    ids = encoding.ids
    content = len(ids) - lead - trail
    # char_end[k] = end of the first k content tokens (k = 0..content)
    char_end = np.zeros(content + 1, dtype=np.int64)
    if content:
        char_end[1:] = [o[1] for o in encoding.offsets[lead : lead + content]]
    char_end[-1] = len(text)
    original_tokens = len(ids)

    def stable_prefixes(ks: list[int]) -> list[bool]:
        prefixes = [text[: int(char_end[k])] for k in ks]
        encoded = view.backend.encode_batch(prefixes, add_special_tokens=view.add_special_tokens)
        return [enc.ids == ids[: lead + k] + ids[len(ids) - trail :] for enc, k in zip(encoded, ks)]

    def nearest_stable(k: int, upward: bool) -> int | None:
        offsets = [0]
        for r in range(1, _SEARCH_RADIUS + 1):
            offsets += [-r, r] if upward else [-r]
        candidates = [k + o for o in offsets if 0 < k + o < content]
        for cand, ok in zip(candidates, stable_prefixes(candidates)):
            if ok:
                return cand
        return None

    truncated = False
    if doc_tokens is not None and original_tokens > doc_tokens:
        k = nearest_stable(doc_tokens - lead - trail, upward=False)
        if k is None:
            raise ValueError(f"{name}: no stable cut within {_SEARCH_RADIUS} tokens of {doc_tokens} tokens")
        text = text[: int(char_end[k])]
        ids = ids[: lead + k] + ids[len(ids) - trail :]
        char_end = char_end[: k + 1].copy()
        char_end[-1] = len(text)
        content, truncated = k, True

    n_tokens = content + lead + trail
    nominal = list(bucket_edges) if bucket_edges is not None else default_edges(n_tokens)
    nominal = [e for e in nominal if e < n_tokens]
    wanted = [e - lead - trail for e in nominal]
    ok = stable_prefixes([k for k in wanted if 0 < k < content])
    ok_iter = iter(ok)
    prefix_tokens, prefix_chars, kept_nominal = [], [], []
    for edge, k in zip(nominal, wanted):
        if not 0 < k < content:
            continue
        chosen = k if next(ok_iter) else nearest_stable(k, upward=True)
        if chosen is None or (prefix_tokens and chosen + lead + trail <= prefix_tokens[-1]):
            continue
        prefix_tokens.append(chosen + lead + trail)
        prefix_chars.append(int(char_end[chosen]))
        kept_nominal.append(edge)
    return {
        "name": name,
        "text": text,
        "n_tokens": n_tokens,
        "n_bytes": len(text.encode("utf-8")),
        "n_words": count_words(text),
        "prefix_tokens": prefix_tokens,
        "prefix_chars": prefix_chars,
        "prefix_nominal": kept_nominal,
        "truncated": truncated,
        "original_tokens": original_tokens,
    }


def ppl_texts(source: str, options: dict[str, Any] | None = None) -> Iterator[tuple[str, str]]:
    """(name, text) pairs of a perplexity source, in a fixed order."""
    options = options or {}
    if source == "stdlib":
        root = stdlib_root()
        for path in stdlib_files("eval"):
            yield path.relative_to(root).as_posix(), read_text_file(path, what="ppl_stdlib")
    elif source == "files":
        paths = options.get("files")
        if not paths:
            raise PerplexitySourceError("ppl_files needs files=[<file or folder>, ...] in --metadata")
        for path in expand_paths(paths, what="ppl_files files"):
            yield str(path), read_text_file(path, what="ppl_files")
    elif source == "pg19":
        yield from _pg19_texts(options)
    else:
        raise PerplexitySourceError(f"unknown perplexity source {source!r}: choose stdlib, files or pg19")


def _pg19_texts(options: dict[str, Any]) -> Iterator[tuple[str, str]]:
    dataset = options.get("pg19_dataset", PG19_DEFAULT_DATASET)
    split = options.get("pg19_split", "test")
    try:
        import datasets

        rows = datasets.load_dataset(dataset, split=split)
    except Exception as err:
        raise PerplexitySourceError(
            f"ppl_pg19 needs the hub dataset {dataset!r} (split {split!r}) and could not load it "
            f"({type(err).__name__}: {err}). Offline (HF_DATASETS_OFFLINE=1 or no network) it is unavailable: "
            "use ppl_stdlib, or ppl_files with files=[...] pointing at local books"
        ) from err
    for i, row in enumerate(rows):
        title = row.get("short_book_title") or row.get("book_id") or f"book-{i}"
        yield str(title), str(row["text"])


def _source_fingerprint(source: str, options: dict[str, Any]) -> str:
    if source == "stdlib":
        parts = [f"{p}:{p.stat().st_size}:{p.stat().st_mtime_ns}" for p in stdlib_files("eval")]
    elif source == "files":
        paths = options.get("files")
        if not paths:
            raise PerplexitySourceError("ppl_files needs files=[<file or folder>, ...] in --metadata")
        parts = [f"{p}:{p.stat().st_size}:{p.stat().st_mtime_ns}" for p in expand_paths(paths, what="ppl_files files")]
    else:
        parts = [str(options.get("pg19_dataset", PG19_DEFAULT_DATASET)), str(options.get("pg19_split", "test"))]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def build_ppl_docs(
    tokenizer: Any,
    source: str,
    options: dict[str, Any] | None = None,
    bucket_edges: list[int] | None = None,
    doc_tokens: int | None = None,
    min_doc_tokens: int = 0,
    max_docs: int | None = None,
    add_special_tokens: bool = True,
) -> tuple[list[dict[str, Any]], bool]:
    """Perplexity documents of a source (see `ppl_texts`), cached on disk. Documents shorter than
    `min_doc_tokens` are left out; at most `max_docs` are kept. Returns (docs, from_cache)."""
    options = options or {}
    view = tokenizer_view(tokenizer, add_special_tokens)
    if doc_tokens is not None:
        doc_tokens = whole_number(doc_tokens, "doc_tokens", minimum=2)
    min_doc_tokens = whole_number(min_doc_tokens, "min_doc_tokens", minimum=0)
    if max_docs is not None:
        max_docs = whole_number(max_docs, "max_docs")
    if bucket_edges is not None:
        bucket_edges = sorted({whole_number(e, "bucket_edges entry") for e in bucket_edges})
    key = {
        "family": "ppl",
        "builder": BUILDER_VERSION,
        "tokenizer": view.fingerprint,
        "source": source,
        "source_fingerprint": _source_fingerprint(source, options),
        "bucket_edges": bucket_edges,
        "doc_tokens": doc_tokens,
        "min_doc_tokens": min_doc_tokens,
        "max_docs": max_docs,
    }

    def build() -> list[dict[str, Any]]:
        docs: list[dict[str, Any]] = []
        for name, text in ppl_texts(source, options):
            if not text.strip():
                continue
            if min_doc_tokens and view.count(text) < min_doc_tokens:
                continue
            doc = build_ppl_doc(view, name, text, bucket_edges, doc_tokens)
            docs.append({**doc, "source": source, "doc_index": len(docs)})
            if max_docs is not None and len(docs) >= max_docs:
                break
        if not docs:
            raise PerplexitySourceError(
                f"perplexity source {source!r} gave no documents with at least {min_doc_tokens} tokens "
                "(lower min_doc_tokens=...)"
                if min_doc_tokens
                else f"perplexity source {source!r} gave no documents: every one is empty or only whitespace (e.g. "
                "empty files); name files with text in them"
            )
        return docs

    return cache.cached_docs(f"ppl_{source}", key, build)
