"""On-disk cache for built documents and tokenised haystacks, so each is generated once.

Root: ``$INFINI_BENCH_CACHE`` if set, else ``$XDG_CACHE_HOME/infini_bench`` (``~/.cache/infini_bench``).
An entry is a gzip JSON-lines file plus a manifest holding the full key, the document count and the file's
sha256. Both are written to a temporary name and renamed into place, so a reader sees a whole entry or none;
an entry whose manifest, hash, count or key does not match is treated as corrupt and rebuilt.
"""
from __future__ import annotations

import errno
import gzip
import hashlib
import json
import logging
import os
import tempfile
import zipfile
import zlib
from pathlib import Path
from typing import Any, Callable

import numpy as np

CACHE_ENV = "INFINI_BENCH_CACHE"
FORMAT_VERSION = 1

log = logging.getLogger(__name__)


class StorageError(OSError):
    """A folder this project writes into (the document cache, packed training data) refused a write: read-only,
    full, or not a folder. The message names the folder, the cause and the fix; nothing half-written is left."""


def storage_error(what: str, folder: Path, err: OSError, fix: str) -> StorageError:
    """`StorageError` for `err` (raised while writing `what` into `folder`), with the fix that fits its cause."""
    cause = err.strerror or str(err)
    if err.errno == errno.ENOSPC:
        fix = "free space on that disk, or " + fix
    error = StorageError(f"cannot write {what} in {str(folder)!r} ({cause}): {fix}")
    error.errno = err.errno  # the cause stays inspectable; str() stays the one sentence
    return error


def cache_root() -> Path:
    """The cache folder (created on demand)."""
    if os.environ.get(CACHE_ENV):
        root = Path(os.environ[CACHE_ENV]).expanduser()
    else:
        root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "infini_bench"
    return root


def cache_key(payload: dict[str, Any]) -> str:
    """A stable hex digest of a JSON-able key."""
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException as err:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        if isinstance(err, OSError) and not isinstance(err, StorageError):
            raise storage_error(
                "the document cache", cache_root(), err,
                f"set {CACHE_ENV} to a writable folder (built documents are cached there)",
            ) from err
        raise


def _entry_paths(kind: str, key: str) -> tuple[Path, Path]:
    folder = cache_root() / kind
    return folder / f"{key[:32]}.jsonl.gz", folder / f"{key[:32]}.manifest.json"


def load_docs(kind: str, key_payload: dict[str, Any]) -> list[dict[str, Any]] | None:
    """Cached documents for this key, or None when absent or corrupt (a corrupt entry is logged)."""
    key = cache_key(key_payload)
    data_path, manifest_path = _entry_paths(kind, key)
    if not manifest_path.exists() and not data_path.exists():
        return None
    try:
        manifest = json.loads(manifest_path.read_text())
        blob = data_path.read_bytes()
        if manifest.get("format") != FORMAT_VERSION or manifest.get("key") != key:
            raise ValueError("manifest key or format differs")
        if hashlib.sha256(blob).hexdigest() != manifest.get("sha256"):
            raise ValueError("data file hash differs from manifest")
        lines = gzip.decompress(blob).decode("utf-8").splitlines()
        docs = [json.loads(line) for line in lines]
        if len(docs) != manifest.get("n_docs"):
            raise ValueError(f"{len(docs)} documents, manifest says {manifest.get('n_docs')}")
        return docs
    except (OSError, ValueError, EOFError, zlib.error) as err:
        log.warning("infini-bench cache entry %s is corrupt or partial (%s): rebuilding", data_path, err)
        return None


def save_docs(kind: str, key_payload: dict[str, Any], docs: list[dict[str, Any]]) -> Path:
    """Write documents for this key (data first, manifest last)."""
    key = cache_key(key_payload)
    data_path, manifest_path = _entry_paths(kind, key)
    text = "\n".join(json.dumps(doc, ensure_ascii=False) for doc in docs)
    blob = gzip.compress(text.encode("utf-8"), compresslevel=1)
    _atomic_write(data_path, blob)
    manifest = {
        "format": FORMAT_VERSION,
        "key": key,
        "n_docs": len(docs),
        "sha256": hashlib.sha256(blob).hexdigest(),
        "params": key_payload,
    }
    _atomic_write(manifest_path, json.dumps(manifest, sort_keys=True, default=str, indent=1).encode())
    return data_path


def cached_docs(
    kind: str, key_payload: dict[str, Any], build: Callable[[], list[dict[str, Any]]]
) -> tuple[list[dict[str, Any]], bool]:
    """Documents for this key from the cache, else built by `build()` and cached. Returns (docs, from_cache)."""
    docs = load_docs(kind, key_payload)
    if docs is not None:
        return docs, True
    docs = build()
    save_docs(kind, key_payload, docs)
    return docs, False


def load_arrays(kind: str, key_payload: dict[str, Any]) -> dict[str, np.ndarray] | None:
    """Cached numpy arrays for this key, or None when absent or unreadable."""
    key = cache_key(key_payload)
    path = cache_root() / kind / f"{key[:32]}.npz"
    if not path.exists():
        return None
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {name: data[name] for name in data.files}
        if str(arrays.get("_key", np.array(""))) != key:
            raise ValueError("key differs")
        return arrays
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile, zlib.error) as err:
        log.warning("infini-bench cache entry %s is corrupt (%s): rebuilding", path, err)
        return None


def save_arrays(kind: str, key_payload: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
    """Write numpy arrays for this key atomically."""
    import io

    key = cache_key(key_payload)
    buffer = io.BytesIO()
    np.savez(buffer, _key=np.array(key), **arrays)
    _atomic_write(cache_root() / kind / f"{key[:32]}.npz", buffer.getvalue())


def load_text(kind: str, key_payload: dict[str, Any]) -> str | None:
    """Cached text for this key, or None (a text entry is a one-document doc entry)."""
    docs = load_docs(kind, key_payload)
    return None if docs is None else docs[0]["text"]


def save_text(kind: str, key_payload: dict[str, Any], text: str) -> None:
    save_docs(kind, key_payload, [{"text": text}])
