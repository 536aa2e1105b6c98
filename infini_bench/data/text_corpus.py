"""Pretraining text: read documents from local files or a hub dataset, tokenise them, pack them into
equal-length sequences.

The trainer packs because an Infini model takes no padding (padding would be folded into its memory): documents
are joined with the tokenizer's end-of-text token and cut into rows of exactly `sequence_length` tokens (the
remainder is dropped). The packed rows are cached as a flat `.bin` file (uint16 when the vocabulary allows) plus a
`.json` shape, keyed by the source and the tokenizer, and read back as a memory map: a resumed or repeated run
reads exactly the same tokens without tokenising again, and a corpus larger than RAM works.
(The standard-library corpus and its train/eval split live in the data builders; this module only reads files.)
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from .cache import StorageError, storage_error

logger = logging.getLogger(__name__)

TEXT_SUFFIXES = (".txt", ".md", ".rst", ".py", ".text")
TABLE_SUFFIXES = (".jsonl", ".json", ".parquet")


def expand_paths(paths: Iterable[str | Path]) -> list[Path]:
    """Files named directly, plus every supported file under a named folder (sorted, so the order is fixed)."""
    files: list[Path] = []
    for raw in paths:
        path = Path(raw).expanduser()
        if not path.exists():
            raise FileNotFoundError(f"data path {str(raw)!r} does not exist")
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in TEXT_SUFFIXES + TABLE_SUFFIXES)
            if not found:
                raise FileNotFoundError(
                    f"data folder {str(raw)!r} holds no {'/'.join(TEXT_SUFFIXES + TABLE_SUFFIXES)} files"
                )
            files.extend(found)
        elif path.suffix in TEXT_SUFFIXES + TABLE_SUFFIXES:
            files.append(path)
        else:
            raise ValueError(
                f"data file {str(raw)!r} has an unsupported type {path.suffix!r}: use one of "
                f"{', '.join(TEXT_SUFFIXES + TABLE_SUFFIXES)}"
            )
    return files


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


def pack_documents(
    documents: Iterable[str],
    tokenizer,
    sequence_length: int,
    path: str | Path,
    max_tokens: int | None = None,
    docs_per_call: int = 256,
) -> np.ndarray:
    """Tokenise, join with EOS, cut into rows of `sequence_length`, written to `path` (.bin + .json): returns a
    read-only memory map [rows, sequence_length], so corpora larger than RAM work too."""
    separator = tokenizer.eos_token_id
    if separator is None:
        raise ValueError("the tokenizer has no eos_token: packing needs one to separate documents")
    path = Path(path)
    dtype = np.uint16 if len(tokenizer) <= np.iinfo(np.uint16).max + 1 else np.uint32
    raw = path.with_suffix(".bin.tmp")
    total = 0
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(raw, "wb") as f:
            for docs in _chunks(documents, docs_per_call):
                for ids in tokenizer(docs, add_special_tokens=False)["input_ids"]:  # batched: tokenised in parallel
                    if not ids:
                        continue
                    piece = np.asarray(ids + [separator], dtype=dtype)
                    if max_tokens is not None:
                        piece = piece[: max_tokens - total]
                    f.write(piece.tobytes())
                    total += len(piece)
                if max_tokens is not None and total >= max_tokens:
                    break
        rows = total // sequence_length
        if rows == 0:
            raise ValueError(
                f"the corpus gives {total} tokens, fewer than one sequence of sequence_length={sequence_length}"
            )
        os.truncate(raw, rows * sequence_length * np.dtype(dtype).itemsize)
        os.replace(raw, path.with_suffix(".bin"))
        meta = {"rows": rows, "sequence_length": sequence_length, "dtype": np.dtype(dtype).name, "tokens_read": total}
        tmp_meta = path.with_suffix(".json.tmp")
        tmp_meta.write_text(json.dumps(meta))
        os.replace(tmp_meta, path.with_suffix(".json"))  # written last: its presence marks a complete cache
    except BaseException as err:  # nothing half-written stays: a later run would otherwise trust it
        for leftover in (raw, path.with_suffix(".bin"), path.with_suffix(".json.tmp")):
            try:
                leftover.unlink(missing_ok=True)
            except OSError:  # the folder itself is unusable: nothing was written there
                pass
        if isinstance(err, OSError) and not isinstance(err, StorageError):
            raise storage_error(
                "the packed training data", path.parent, err, "choose a run.output_dir on a disk with room (the data is "
                "packed into its data/ folder)"
            ) from err
        raise
    return open_packed(path)


def open_packed(path: str | Path) -> np.ndarray:
    path = Path(path)
    meta = json.loads(path.with_suffix(".json").read_text())
    shape = (meta["rows"], meta["sequence_length"])
    return np.memmap(path.with_suffix(".bin"), dtype=meta["dtype"], mode="r", shape=shape)


def _chunks(items: Iterable[str], size: int) -> Iterator[list[str]]:
    chunk: list[str] = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def cache_key(source: dict, tokenizer) -> str:
    """Hash of the data description and the tokenizer's full definition (vocabulary and merges)."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    tok_repr = backend.to_str() if backend is not None else repr(sorted(tokenizer.get_vocab().items()))
    blob = json.dumps(source, sort_keys=True, default=str) + tok_repr
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def cached_pack(
    cache_dir: str | Path, source: dict, tokenizer, documents: Iterable[str], sequence_length: int, max_tokens: int | None
) -> np.ndarray:
    """The packed rows for (`source`, tokenizer): read from `cache_dir`, or built there once."""
    path = Path(cache_dir) / f"packed-{cache_key(source, tokenizer)}"
    if path.with_suffix(".json").is_file():
        return open_packed(path)
    rows = pack_documents(documents, tokenizer, sequence_length, path, max_tokens)
    logger.info("packed %d sequences of %d tokens into %s", rows.shape[0], rows.shape[1], path.with_suffix(".bin"))
    return rows
