"""Pretraining text: read documents from local files or a hub dataset, tokenise them, pack them into
equal-length sequences.

The trainer packs because an Infini model takes no padding (padding would be folded into its memory): documents
are joined with the tokenizer's end-of-text token and cut into rows of exactly `sequence_length` tokens (the
remainder is dropped). The packed rows are a "rows" entry of a cache `Store` (`infini_bench.data.cache`: uint16
when the vocabulary allows, keyed by the source and the tokenizer) read back as a memory map: a resumed or repeated
run reads exactly the same tokens without tokenising again, and a corpus larger than RAM works.
(The standard-library corpus and its train/eval split live in `corpus`, as does `expand_paths`; this module only
reads files.)
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import IO, Iterable, Iterator

import numpy as np

from .cache import Store, tokenizer_fingerprint

logger = logging.getLogger(__name__)

TEXT_SUFFIXES = (".txt", ".md", ".rst", ".py", ".text")
TABLE_SUFFIXES = (".jsonl", ".json", ".parquet")
FILE_SUFFIXES = TEXT_SUFFIXES + TABLE_SUFFIXES  # what `iter_file_documents` reads (for `corpus.expand_paths`)


def iter_file_documents(files: Iterable[Path], text_field: str = "text") -> Iterator[str]:
    """One document per text file, per JSONL line / JSON record, per parquet row (its `text_field`)."""
    for path in files:
        if path.suffix in TEXT_SUFFIXES:
            yield path.read_text(encoding="utf-8", errors="replace")
        elif path.suffix in (".jsonl", ".json"):
            yield from _json_documents(path, text_field)
        else:
            yield from _parquet_documents(path, text_field)


def _json_documents(path: Path, text_field: str) -> Iterator[str]:
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".json" and text.lstrip().startswith("["):
        records = json.loads(text)
    else:
        records = (json.loads(line) for line in text.splitlines() if line.strip())
    for i, record in enumerate(records):
        if not isinstance(record, dict) or text_field not in record:
            keys = sorted(record) if isinstance(record, dict) else type(record).__name__
            raise ValueError(f"{str(path)!r} record {i} has no field {text_field!r} (has {keys}); set data.text_field")
        yield str(record[text_field])


def _parquet_documents(path: Path, text_field: str) -> Iterator[str]:
    import pyarrow.parquet as pq

    table = pq.ParquetFile(path)
    if text_field not in table.schema_arrow.names:
        raise ValueError(f"{str(path)!r} has no column {text_field!r} (has {table.schema_arrow.names}); set data.text_field")
    for batch in table.iter_batches(columns=[text_field]):
        yield from (str(t) for t in batch.column(0).to_pylist() if t is not None)


def iter_hub_documents(
    name: str, config: str | None, split: str, text_field: str, streaming: bool = False
) -> Iterator[str]:
    """Documents of a hub dataset the user named (read from the local cache when offline)."""
    import datasets

    try:
        dataset = datasets.load_dataset(name, config, split=split, streaming=streaming)
    except Exception as err:  # datasets raises many types; the user needs the name and the cause
        raise ValueError(f"could not load hub dataset {name!r} (config={config!r}, split={split!r}): {err}") from err
    columns = getattr(dataset, "column_names", None)
    if columns is not None and text_field not in columns:
        raise ValueError(f"hub dataset {name!r} has no column {text_field!r} (has {columns}); set data.text_field")
    for row in dataset:
        yield str(row[text_field])


def limit(documents: Iterable[str], max_documents: int | None) -> Iterator[str]:
    for i, doc in enumerate(documents):
        if max_documents is not None and i >= max_documents:
            return
        yield doc


def packed_rows(
    store: Store, source: dict, tokenizer, documents: Iterable[str], sequence_length: int, max_tokens: int | None
) -> np.ndarray:
    """The packed rows [rows, sequence_length] for (`source`, tokenizer): read from `store`, or built there once
    from `documents` (tokenised, joined with EOS, cut into rows; at most `max_tokens` tokens read)."""
    key = {"source": source, "tokenizer": tokenizer_fingerprint(tokenizer), "sequence_length": sequence_length,
           "max_tokens": max_tokens}
    rows = store.load_rows("packed", key)
    if rows is None:
        rows = store.save_rows("packed", key, lambda handle: _pack(documents, tokenizer, sequence_length, max_tokens, handle))
        logger.info("packed %d sequences of %d tokens into %s", rows.shape[0], rows.shape[1], store.root)
    return rows


def _pack(
    documents: Iterable[str], tokenizer, sequence_length: int, max_tokens: int | None, handle: IO[bytes],
    docs_per_call: int = 256,
) -> tuple[int, int, np.dtype]:
    """Write the token stream to `handle`; returns (rows, sequence_length, dtype) (the store drops the tail)."""
    separator = tokenizer.eos_token_id
    if separator is None:
        raise ValueError("the tokenizer has no eos_token: packing needs one to separate documents")
    dtype = np.dtype(np.uint16 if len(tokenizer) <= np.iinfo(np.uint16).max + 1 else np.uint32)
    total = 0
    for docs in _chunks(documents, docs_per_call):
        for ids in tokenizer(docs, add_special_tokens=False)["input_ids"]:  # batched: tokenised in parallel
            if not ids:
                continue
            piece = np.asarray(ids + [separator], dtype=dtype)
            if max_tokens is not None:
                piece = piece[: max_tokens - total]
            handle.write(piece.tobytes())
            total += len(piece)
        if max_tokens is not None and total >= max_tokens:
            break
    rows = total // sequence_length
    if rows == 0:
        raise ValueError(f"the corpus gives {total} tokens, fewer than one sequence of sequence_length={sequence_length}")
    return rows, sequence_length, dtype


def _chunks(items: Iterable[str], size: int) -> Iterator[list[str]]:
    chunk: list[str] = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk
