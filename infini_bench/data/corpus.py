"""Text corpora present on every machine: the Python standard library, split once into train and eval files.

Split rule: a file's path relative to the stdlib folder (POSIX form, e.g. ``http/client.py``) is hashed with
sha256; the file is ``eval`` when the first 8 hex digits, as an integer, are divisible by 10 (about 10 %), else
``train``. The split depends only on the relative path, so it is the same on every machine with the same Python.
Files under ``site-packages``/``dist-packages`` and test folders are excluded, as are the generated character-map
codec tables in ``encodings/``. The trainer's default corpus reads ``stdlib_files("train")``; the ``ppl_stdlib``
task reads ``stdlib_files("eval")``.
"""
from __future__ import annotations

import functools
import hashlib
import inspect
import os
import re
import sysconfig
from pathlib import Path
from typing import Literal

from infini_bench.data import cache

EVAL_MODULUS = 10
EXCLUDED_DIRS = frozenset({"site-packages", "dist-packages", "test", "tests", "idle_test", "__pycache__"})
_CODEC_TABLE_MARK = "Python Character Mapping Codec"

Split = Literal["train", "eval", "all"]


def stdlib_root() -> Path:
    """Folder of the running Python's standard library."""
    return Path(sysconfig.get_paths()["stdlib"])


def stdlib_split_of(relative_path: str) -> Literal["train", "eval"]:
    """Which split a stdlib file (path relative to the stdlib folder, POSIX form) belongs to."""
    digest = hashlib.sha256(relative_path.encode("utf-8")).hexdigest()
    return "eval" if int(digest[:8], 16) % EVAL_MODULUS == 0 else "train"


def _is_codec_table(path: Path) -> bool:
    if path.parent.name != "encodings":
        return False
    with path.open("r", encoding="utf-8", errors="replace") as fh:
        return _CODEC_TABLE_MARK in fh.read(400)


def stdlib_files(split: Split = "train") -> list[Path]:
    """Python source files of the standard library in `split` ("train", "eval" or "all"), sorted by relative path."""
    if split not in ("train", "eval", "all"):
        raise ValueError(f"split must be 'train', 'eval' or 'all', got {split!r}")
    return list(_stdlib_listing(str(stdlib_root()), split))


@functools.lru_cache(maxsize=8)
def _stdlib_listing(root_name: str, split: str) -> tuple[Path, ...]:
    """The split's files (the standard library does not change while a process runs)."""
    root = Path(root_name)
    found = []
    for folder, subdirs, files in os.walk(root):
        subdirs[:] = [d for d in subdirs if d not in EXCLUDED_DIRS]  # never descend into site-packages or tests
        found.extend(Path(folder) / f for f in files if f.endswith(".py"))
    chosen = []
    for path in sorted(found, key=lambda p: p.relative_to(root).as_posix()):
        if not path.is_file() or _is_codec_table(path):
            continue
        if split == "all" or stdlib_split_of(path.relative_to(root).as_posix()) == split:
            chosen.append(path)
    return tuple(chosen)


def _fingerprint_files(paths: list[Path]) -> str:
    """Cheap identity of a file set: names, sizes and modification times."""
    h = hashlib.sha256()
    for path in paths:
        stat = path.stat()
        h.update(f"{path}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return h.hexdigest()


_SENTENCE_END = re.compile(r"[.!?][\"')\]]?$")


def _prose_paragraphs(docstring: str) -> list[str]:
    """Paragraphs of a docstring that read as English prose (no doctests, code blocks or tables)."""
    kept = []
    for para in re.split(r"\n\s*\n", docstring):
        if ">>>" in para or "::" in para:
            continue
        text = " ".join(para.split())
        if len(text) < 40 or not text[0].isupper() or not _SENTENCE_END.search(text):
            continue
        if sum(c.isalpha() or c == " " for c in text) / len(text) < 0.85:
            continue
        kept.append(text)
    return kept


_PROSE_MEMO: dict[str, str] = {}
# A docstring is a triple-quoted string that starts its own line (after indentation); assigned or passed strings
# (`x = """...`) do not. A regex finds them in a fraction of the time `ast.parse` takes over 12 MB of source.
_DOCSTRING = re.compile(r'^[ \t]*[rRuU]?("""|\'\'\')(.*?)\1', re.MULTILINE | re.DOTALL)


def stdlib_prose() -> str:
    """English prose from the docstrings of the standard library (doctests, code and tables removed),
    whitespace collapsed, in file order. About a megabyte; cached on disk."""
    paths = stdlib_files("all")
    key = {"corpus": "stdlib_prose", "version": 2, "files": _fingerprint_files(paths)}
    memo_key = cache.cache_key(key)
    if memo_key in _PROSE_MEMO:
        return _PROSE_MEMO[memo_key]
    text = cache.load_text("corpora", key)
    if text is None:
        paragraphs: list[str] = []
        for path in paths:
            try:
                source = path.read_text(encoding="utf-8")
            except (UnicodeDecodeError, OSError):
                continue
            for match in _DOCSTRING.finditer(source):
                paragraphs.extend(_prose_paragraphs(inspect.cleandoc(match.group(2))))
        text = " ".join(paragraphs)
        cache.save_text("corpora", key, text)
    _PROSE_MEMO[memo_key] = text
    return text


def expand_paths(
    paths: str | Path | list[str] | tuple[str, ...], what: str = "files", suffixes: tuple[str, ...] | None = None
) -> list[Path]:
    """User-named files and folders as files, for every reader of user data (training corpus, essays, ppl_files).

    In the order named; a folder gives its files recursively, sorted, leaving out hidden ones (a file or folder
    below it whose name starts with "."); with `suffixes`, only files of those types. A missing path raises
    FileNotFoundError; a named file of another type, or a named folder with no such file, raises ValueError; each
    message starts with `what` and names the path."""
    if isinstance(paths, (str, Path)):
        paths = [str(paths)]
    if not paths:
        raise ValueError(f"{what}: no paths given")
    kinds = f" {'/'.join(suffixes)}" if suffixes else ""
    found: list[Path] = []
    for raw in paths:
        path = Path(str(raw)).expanduser()
        if path.is_dir():
            inside = sorted(
                p for p in path.rglob("*")
                if p.is_file() and not any(part.startswith(".") for part in p.relative_to(path).parts)
                and (suffixes is None or p.suffix in suffixes)
            )
            if not inside:
                raise ValueError(f"{what}: folder {str(raw)!r} holds no{kinds} files")
            found.extend(inside)
        elif path.is_file():
            if suffixes is not None and path.suffix not in suffixes:
                raise ValueError(f"{what}: file {str(raw)!r} has an unsupported type {path.suffix!r}: use one of"
                                 f"{kinds}")
            found.append(path)
        else:
            raise FileNotFoundError(f"{what}: path {str(raw)!r} does not exist")
    return found


def read_text_file(path: Path, what: str = "files") -> str:
    """A UTF-8 text file's content; a binary or non-UTF-8 file raises naming the file."""
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise ValueError(f"{what}: {str(path)!r} is not UTF-8 text ({err})") from err
