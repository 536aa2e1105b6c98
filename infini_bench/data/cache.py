"""The one cache module: everything this project builds once and reads back (evaluation documents, tokenised
haystacks, a training run's packed corpus and passkey examples) is an entry of a `Store`.

A store is a folder with a message for when it cannot be written:

- the shared document cache (`shared()`): ``$INFINI_BENCH_CACHE`` if set, else ``$XDG_CACHE_HOME/infini_bench``
  (``~/.cache/infini_bench``): documents and haystacks the tasks build, shared by every run;
- a training run's own ``data/`` folder (`Store(out / "data", ...)`): the packed corpus and the passkey examples,
  kept beside the checkpoints so a resumed run reads exactly the tokens it started with.

An entry is named by a key (a JSON-able dict, hashed by `cache_key`; a tokenizer enters it as
`tokenizer_fingerprint`) under a kind folder: ``<root>/<kind>/<key>.<suffix>``. Three entry types:

- documents (`load_docs` / `save_docs`): a gzip JSON-lines file plus a manifest holding the full key, the document
  count and the file's sha256;
- arrays (`load_arrays` / `save_arrays`): one ``.npz`` carrying its key;
- rows (`load_rows` / `save_rows`): a flat binary matrix (``.bin``) read back as a memory map, so a corpus larger
  than RAM works, plus a manifest (``.json``) with its key, shape and dtype.

Every file is written to a temporary name and renamed into place (manifests last), so a reader sees a whole entry
or none; an entry whose manifest, hash, size or key does not match is treated as corrupt and rebuilt. A write that
fails (read-only folder, full disk) leaves nothing behind and raises `StorageError`, one sentence naming the folder,
the cause and the fix.
"""
from __future__ import annotations

import contextlib
import errno
import gzip
import hashlib
import io
import json
import logging
import os
import tempfile
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Callable, Iterator

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
    """The shared cache folder (created on demand)."""
    if os.environ.get(CACHE_ENV):
        root = Path(os.environ[CACHE_ENV]).expanduser()
    else:
        root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "infini_bench"
    return root


def cache_key(payload: dict[str, Any]) -> str:
    """A stable hex digest of a JSON-able key."""
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def tokenizer_fingerprint(tokenizer: Any) -> str:
    """A digest of a tokenizer's full definition (a fast tokenizer's serialised vocabulary, merges, normaliser and
    pre-tokeniser; else its class and vocabulary), for keys of entries built with it."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    definition = backend.to_str() if backend is not None else repr(sorted(tokenizer.get_vocab().items()))
    return hashlib.sha256((type(tokenizer).__name__ + "\0" + definition).encode()).hexdigest()


@dataclass(frozen=True)
class Store:
    """A folder of cache entries (see the module docstring). `what` and `fix` make a failed write's message:
    "cannot write {what} in '{root}' ({cause}): {fix}"."""

    root: Path
    what: str
    fix: str

    def path(self, kind: str, key: str, suffix: str) -> Path:
        return Path(self.root) / kind / f"{key[:32]}{suffix}"

    @contextlib.contextmanager
    def writing(self, path: Path) -> Iterator[IO[bytes]]:
        """A binary file open at a temporary name beside `path`, renamed into place when the block ends without an
        error; on any error it is removed, and an OSError becomes a `StorageError`."""
        tmp = None
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
            with open(fd, "wb") as handle:
                yield handle
            os.replace(tmp, path)
        except BaseException as err:
            if tmp is not None:
                with contextlib.suppress(OSError):  # the folder itself may be what failed
                    Path(tmp).unlink(missing_ok=True)
            if isinstance(err, OSError) and not isinstance(err, StorageError):
                raise storage_error(self.what, Path(self.root), err, self.fix) from err
            raise

    def write_bytes(self, path: Path, data: bytes) -> None:
        with self.writing(path) as handle:
            handle.write(data)

    # -- documents: gzip JSON lines + manifest -----------------------------------------------------------------
    def load_docs(self, kind: str, key_payload: dict[str, Any]) -> list[dict[str, Any]] | None:
        """Cached documents for this key, or None when absent or corrupt (a corrupt entry is logged)."""
        key = cache_key(key_payload)
        data_path, manifest_path = self.path(kind, key, ".jsonl.gz"), self.path(kind, key, ".manifest.json")
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

    def save_docs(self, kind: str, key_payload: dict[str, Any], docs: list[dict[str, Any]]) -> Path:
        """Write documents for this key (data first, manifest last)."""
        key = cache_key(key_payload)
        data_path = self.path(kind, key, ".jsonl.gz")
        text = "\n".join(json.dumps(doc, ensure_ascii=False) for doc in docs)
        blob = gzip.compress(text.encode("utf-8"), compresslevel=1)
        self.write_bytes(data_path, blob)
        manifest = {
            "format": FORMAT_VERSION,
            "key": key,
            "n_docs": len(docs),
            "sha256": hashlib.sha256(blob).hexdigest(),
            "params": key_payload,
        }
        manifest_text = json.dumps(manifest, sort_keys=True, default=str, indent=1)
        self.write_bytes(self.path(kind, key, ".manifest.json"), manifest_text.encode())
        return data_path

    # -- arrays: one .npz carrying its key ---------------------------------------------------------------------
    def load_arrays(self, kind: str, key_payload: dict[str, Any]) -> dict[str, np.ndarray] | None:
        """Cached numpy arrays for this key, or None when absent or unreadable."""
        key = cache_key(key_payload)
        path = self.path(kind, key, ".npz")
        if not path.exists():
            return None
        try:
            with np.load(path, allow_pickle=False) as data:
                arrays = {name: data[name] for name in data.files}
            if str(arrays.pop("_key", np.array(""))) != key:
                raise ValueError("key differs")
            return arrays
        except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile, zlib.error) as err:
            log.warning("infini-bench cache entry %s is corrupt (%s): rebuilding", path, err)
            return None

    def save_arrays(self, kind: str, key_payload: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        """Write numpy arrays for this key atomically."""
        key = cache_key(key_payload)
        buffer = io.BytesIO()
        np.savez(buffer, _key=np.array(key), **arrays)
        self.write_bytes(self.path(kind, key, ".npz"), buffer.getvalue())

    # -- rows: a flat binary matrix read back as a memory map ----------------------------------------------------
    def load_rows(self, kind: str, key_payload: dict[str, Any]) -> np.ndarray | None:
        """A read-only memory map [rows, width] of this key's rows, or None when absent or corrupt."""
        key = cache_key(key_payload)
        data_path, manifest_path = self.path(kind, key, ".bin"), self.path(kind, key, ".json")
        if not manifest_path.exists():
            return None
        try:
            manifest = json.loads(manifest_path.read_text())
            if manifest.get("format") != FORMAT_VERSION or manifest.get("key") != key:
                raise ValueError("manifest key or format differs")
            shape, dtype = (manifest["rows"], manifest["width"]), np.dtype(manifest["dtype"])
            if data_path.stat().st_size != shape[0] * shape[1] * dtype.itemsize:
                raise ValueError(f"data file holds {data_path.stat().st_size} bytes, not {shape} of {dtype.name}")
            return np.memmap(data_path, dtype=dtype, mode="r", shape=shape)
        except (OSError, ValueError, KeyError, TypeError) as err:
            log.warning("infini-bench cache entry %s is corrupt or partial (%s): rebuilding", data_path, err)
            return None

    def save_rows(
        self, kind: str, key_payload: dict[str, Any], fill: Callable[[IO[bytes]], tuple[int, int, np.dtype]],
        **details: Any,
    ) -> np.ndarray:
        """Write this key's rows: `fill(handle)` writes them (row after row, as raw bytes) and returns
        (rows, width, dtype); `details` go into the manifest. Returns the memory map."""
        key = cache_key(key_payload)
        with self.writing(self.path(kind, key, ".bin")) as handle:
            rows, width, dtype = fill(handle)
            handle.truncate(rows * width * np.dtype(dtype).itemsize)  # what `fill` wrote beyond the last row
        manifest = {"format": FORMAT_VERSION, "key": key, "rows": rows, "width": width,
                    "dtype": np.dtype(dtype).name, **details, "params": key_payload}
        self.write_bytes(self.path(kind, key, ".json"), json.dumps(manifest, sort_keys=True, default=str).encode())
        return self.load_rows(kind, key_payload)


def shared() -> Store:
    """The shared document cache (``$INFINI_BENCH_CACHE``; read at every call, so tests and users may change it)."""
    return Store(cache_root(), "the document cache",
                 f"set {CACHE_ENV} to a writable folder (built documents are cached there)")


# --- the shared store, as functions (what the data builders call) --------------------------------------------------


def load_docs(kind: str, key_payload: dict[str, Any]) -> list[dict[str, Any]] | None:
    return shared().load_docs(kind, key_payload)


def save_docs(kind: str, key_payload: dict[str, Any], docs: list[dict[str, Any]]) -> Path:
    return shared().save_docs(kind, key_payload, docs)


def cached_docs(
    kind: str, key_payload: dict[str, Any], build: Callable[[], list[dict[str, Any]]]
) -> tuple[list[dict[str, Any]], bool]:
    """Documents for this key from the cache, else built by `build()` and cached. Returns (docs, from_cache)."""
    store = shared()
    docs = store.load_docs(kind, key_payload)
    if docs is not None:
        return docs, True
    docs = build()
    store.save_docs(kind, key_payload, docs)
    return docs, False


def load_arrays(kind: str, key_payload: dict[str, Any]) -> dict[str, np.ndarray] | None:
    return shared().load_arrays(kind, key_payload)


def save_arrays(kind: str, key_payload: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
    shared().save_arrays(kind, key_payload, arrays)


def load_text(kind: str, key_payload: dict[str, Any]) -> str | None:
    """Cached text for this key, or None (a text entry is a one-document doc entry)."""
    docs = load_docs(kind, key_payload)
    return None if docs is None else docs[0]["text"]


def save_text(kind: str, key_payload: dict[str, Any], text: str) -> None:
    save_docs(kind, key_payload, [{"text": text}])
