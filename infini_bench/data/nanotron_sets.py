"""nanotron's published passkey evaluation sets, read and filtered as their ``run_passkey_eval.py`` does.

The sets: ``nanotron/llama3-1024-passkey-retrieval-eval`` (12,600 rows: 21 depths 0-100 % x 0-3 shots x 2-4 digits x
50 prompts, made by ``generate_data.py`` at nanotron commit 8aa0ee59 with ``--is_eval no`` and then cut back to
"... The pass key is " by ``remove_end_number`` in ``data/exp34/debug_eval_dataset.ipynb``) and
``nanotron/llama3-16k-passkey-retrieval-eval`` (an earlier ``generate_data.py``: no shots, no ``num_shots`` /
``num_digits`` columns). Rows carry ``prompt``, ``answer`` (an int), ``depth_percent`` and usually
``context_length``, ``num_shots``, ``num_digits``, ``token_count`` (their Llama-3 tokens) and ``id``.

Selection, per depth, is ``load_and_filter_dataset`` of ``scripts/run_passkey_eval.py`` (upstream 8aa0ee59; the
RRaAy-H/nanotron-infini fork adds local files and skips filters whose column is missing, as here): keep the depth's
rows, those with ``num_shots`` equal to the asked one, and, when ``num_digits > 0``, those with that many digits;
``shuffle(seed=seed)``; the first ``num_samples``. The same datasets calls give the same rows as their script.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

#: The published set for each context length (tokens), as their scripts name them.
PUBLISHED_SETS: dict[int, str] = {
    1024: "nanotron/llama3-1024-passkey-retrieval-eval",
    16384: "nanotron/llama3-16k-passkey-retrieval-eval",
}
#: ``--metadata dataset=nanotron``: the published set of the task's length.
PUBLISHED = "nanotron"
REQUIRED_FIELDS: tuple[str, ...] = ("prompt", "answer", "depth_percent")
#: scripts/run_1024_passkey_evals.sh's ``--seed``.
NANOTRON_EVAL_SEED = 69


class NanotronSetError(ValueError):
    """A nanotron evaluation set that cannot be read or does not have their fields."""


def resolve_set_name(dataset: str, context_length: int) -> str:
    """`dataset` itself, or for ``nanotron`` the published set of `context_length` (an error for other lengths)."""
    if str(dataset).strip().lower() != PUBLISHED:
        return str(dataset)
    if context_length not in PUBLISHED_SETS:
        known = ", ".join(f"{n} tokens ({name})" for n, name in PUBLISHED_SETS.items())
        raise NanotronSetError(
            f"dataset=nanotron: nanotron published passkey sets only for {known}, not for {context_length} tokens; "
            "use passkey_nanotron_1k or passkey_nanotron_16k, or name a set with dataset=<hub id or path>"
        )
    return PUBLISHED_SETS[context_length]


def load_set(source: str) -> Any:
    """The set's rows as a `datasets.Dataset`: a local parquet / jsonl / json file, a folder of them, a
    ``save_to_disk`` folder (a Dataset, or a DatasetDict's ``train`` split), else the hub id's ``train`` split."""
    import datasets

    path = Path(source).expanduser()
    if path.exists():
        try:
            return _load_local(datasets, path)
        except NanotronSetError:
            raise
        except Exception as err:
            raise NanotronSetError(f"cannot read the nanotron passkey set at {str(path)!r}: {err}") from err
    try:
        return datasets.load_dataset(source, split="train")
    except Exception as err:
        raise NanotronSetError(
            f"cannot load nanotron's passkey set {source!r} from the hub ({type(err).__name__}: {err}); offline, "
            f"download it where the network is reachable (`hf download --repo-type dataset {source} --local-dir DIR`, "
            "or datasets' save_to_disk) and pass --metadata dataset=DIR (a parquet, jsonl or save_to_disk folder)"
        ) from err


_FORMATS = {".parquet": "parquet", ".jsonl": "json", ".json": "json"}


def _load_local(datasets: Any, path: Path) -> Any:
    if path.is_dir() and ((path / "dataset_info.json").exists() or (path / "dataset_dict.json").exists()):
        loaded = datasets.load_from_disk(str(path))
        if isinstance(loaded, datasets.DatasetDict):
            if "train" not in loaded:
                raise NanotronSetError(f"the saved DatasetDict at {str(path)!r} has no 'train' split ({list(loaded)})")
            loaded = loaded["train"]
        return loaded
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.suffix in _FORMATS)
    kinds = {_FORMATS.get(p.suffix) for p in files}
    if not files or None in kinds or len(kinds) != 1:
        raise NanotronSetError(
            f"{str(path)!r} is not a nanotron passkey set: give a .parquet, .jsonl or .json file, a folder of one "
            "kind of them, or a datasets save_to_disk folder"
        )
    return datasets.load_dataset(kinds.pop(), data_files=[str(p) for p in files], split="train")


def check_fields(rows: Any, name: str) -> None:
    """One sentence when the set lacks a field every nanotron passkey set has."""
    missing = [f for f in REQUIRED_FIELDS if f not in rows.column_names]
    if missing:
        raise NanotronSetError(
            f"the passkey set {name!r} lacks the field(s) {', '.join(missing)} (it has: "
            f"{', '.join(rows.column_names) or 'none'}); a nanotron passkey evaluation set has prompt, answer and "
            "depth_percent, and usually context_length, num_shots and num_digits"
        )


def select_rows(
    rows: Any,
    depths: list[int | float],
    num_shots: int,
    num_digits: int,
    seed: int,
    num_samples: int,
    context_length: int | None = None,
    name: str = "the set",
) -> dict[int | float, list[dict[str, Any]]]:
    """Per depth, the rows ``run_passkey_eval.py``'s ``load_and_filter_dataset`` picks (module docstring); with a
    ``context_length`` column, only rows of `context_length` (an error naming the set's lengths when none)."""
    check_fields(rows, name)
    columns = {c: rows[c] for c in ("depth_percent", "num_shots", "num_digits", "context_length") if c in rows.column_names}
    keep = range(len(rows))
    if context_length is not None and "context_length" in columns:
        lengths = sorted(set(columns["context_length"]))
        if context_length not in lengths:
            raise NanotronSetError(
                f"the passkey set {name!r} has context_length {', '.join(map(str, lengths))}, not {context_length}: "
                "run the passkey_nanotron task of that length"
            )
        keep = [i for i in keep if columns["context_length"][i] == context_length]
    if "num_shots" in columns:
        keep = [i for i in keep if columns["num_shots"][i] == num_shots]
    if "num_digits" in columns and num_digits > 0:
        keep = [i for i in keep if columns["num_digits"][i] == num_digits]
    chosen: dict[int | float, list[dict[str, Any]]] = {}
    for depth in depths:
        # their filter then shuffle(seed): the permutation depends only on the count and the seed, so selecting the
        # same rows in the same order and shuffling gives their rows (without a progress bar per filter)
        picked = rows.select([i for i in keep if float(columns["depth_percent"][i]) == float(depth)]).shuffle(seed=seed)
        chosen[depth] = [dict(r) for r in picked.select(range(min(num_samples, len(picked))))]
    if not any(chosen.values()):
        raise NanotronSetError(
            f"no row of the passkey set {name!r} matches depths {depths}, num_shots={num_shots}"
            + (f", num_digits={num_digits}" if num_digits > 0 else "")
            + _present(rows)
        )
    return chosen


def _present(rows: Any) -> str:
    """What the set holds, for an error message."""
    parts = [f"{c} {sorted(set(rows[c]))}" for c in ("depth_percent", "num_shots", "num_digits") if c in rows.column_names]
    return f" (the set has {'; '.join(parts)})" if parts else ""
