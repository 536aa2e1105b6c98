"""`python -m infini_bench.harness <lm_eval flags>`: lm-eval's own CLI with this project's tasks and models.

It takes exactly lm_eval's flags (it *is* lm_eval's parser) and changes four things before running:

* ``--include_path`` gets this project's task folder (added to the user's, if any);
* ``--tasks`` globs that match this project's tasks select only those (``'passkey_*'`` never selects lm-eval's
  built-in ``passkey_with_librusec``, ``'niah_*'`` never RULER's), see `infini_bench.tasks.expand_task_patterns`;
  glob-selected passkey/NIAH tasks longer than the model's ``max_length`` are left out with a note on stderr
  (a task named exactly is kept, and then fails with a clear error);
* when every selected task is this project's, lm-eval indexes only the include path (`skip_builtin_task_index`:
  its own thousands of task YAMLs cost about 9 s per run on 2 cores);
* ``--model infini`` is registered (importing ``infini_bench.model_adapters``, which registers it after lm-eval's
  built-in models, `infini_bench.lm_eval_compat.register_model_once`).

What it needs of lm-eval beyond its public API (its private CLI class, the TaskManager swap) goes through
`infini_bench.lm_eval_compat`.

Before any model is loaded it also checks what lm-eval would notice only late, or never (`preflight`): ``--limit``
is a count or a fraction; ``--output_path`` can be written; a local ``pretrained=`` checkpoint's weight files are
whole; a ``--use_cache`` database opens and belongs to this model (lm-eval keys cached answers by request only, so
the wrapper records the model's identity beside the cache, ``<use_cache>_model.json``, and refuses a cache made by
another model or other model args, naming both).

`list_tasks` prints this project's tasks and groups and the include path (``infini-bench tasks``, or
``python -m infini_bench.harness tasks``).
"""
from __future__ import annotations

import argparse
import glob
import hashlib
import json
import math
import os
import sqlite3
import sys
import tempfile
from pathlib import Path
from typing import Any

from infini_bench.lm_eval_compat import parse_lm_eval_cli, skip_builtin_task_index
from infini_bench.model_args import identifying_args
from infini_bench.tasks import TASKS_DIR, expand_task_patterns, project_tasks


def _drop_tasks_too_long(tasks: list[str], globbed: set[str], metadata: dict[str, Any]) -> list[str]:
    """Leave out glob-selected tasks whose context length exceeds the model's max_length (noted on stderr)."""
    from infini_bench.tasks.options import as_length, model_max_length

    infos = {t.name: t for t in project_tasks()}
    candidates = [t for t in tasks if t in globbed and infos.get(t) and infos[t].context_length]
    if not candidates:
        return tasks
    limit = model_max_length(metadata)
    if limit is None:
        return tasks
    override = metadata.get("context_length")
    length_of = {
        t: as_length(override, "context_length") if override not in (None, "") else int(infos[t].context_length)
        for t in candidates
    }
    too_long = [t for t in candidates if length_of[t] > limit]
    if too_long:
        listed = ", ".join(f"{t} ({length_of[t]} tokens)" for t in too_long)
        print(
            f"infini-bench: leaving out {len(too_long)} task(s) longer than the model's max_length={limit}: {listed}",
            file=sys.stderr,
        )
    kept = [t for t in tasks if t not in too_long]
    if not kept:
        raise SystemExit(f"infini-bench: every selected task is longer than the model's max_length={limit}")
    return kept


def prepare_run_args(args: argparse.Namespace) -> argparse.Namespace:
    """Rewrite a parsed `lm_eval run` namespace: include path, task globs, over-long tasks."""
    user_path = getattr(args, "include_path", None)
    args.include_path = TASKS_DIR if not user_path else [user_path, TASKS_DIR]
    if args.tasks:
        metadata = {**(getattr(args, "model_args", None) or {}), **(getattr(args, "metadata", None) or {})}
        patterns = [p for raw in args.tasks for p in str(raw).split(",") if p.strip()]
        check_builtin_names(patterns)
        expanded = expand_task_patterns(patterns, metadata)
        ours = {t.name for t in project_tasks()}
        globbed = {t for t in expanded if t in ours and t not in patterns}
        args.tasks = _drop_tasks_too_long(expanded, globbed, metadata)
    return args


#: lm-eval's own tasks named like this project's families: its RULER port's NIAH tasks (no length suffix).
LM_EVAL_RULER_NIAH = ("niah_single_1", "niah_single_2", "niah_single_3", "niah_multikey_1", "niah_multikey_2",
                      "niah_multikey_3", "niah_multiquery", "niah_multivalue")


def check_builtin_names(patterns: list[str]) -> None:
    """`--tasks passkey` names lm-eval's LIBRA passkey task (Russian, from the hub), never this project's: refuse it
    with the names that mean ours. lm-eval's RULER port's NIAH names (`niah_single_1`) are a legitimate choice (its
    `ruler` group runs through `--model infini`), so they only get a note saying whose documents they are."""
    for pattern in (p.strip() for p in patterns):
        if pattern == "passkey":
            raise ValueError(
                "--tasks passkey is lm-eval's own LIBRA passkey task (Russian texts from the hub), not this project's "
                "Landmark passkey: name a length (passkey_4k), a glob ('passkey_*') or a suite "
                "(infinibench_passkey_upto_4k); for LIBRA's, run plain lm_eval"
            )
        if pattern == "ruler" and (os.environ.get("HF_DATASETS_OFFLINE") == "1" or os.environ.get("HF_HUB_OFFLINE") == "1"):
            raise ValueError(
                "--tasks ruler (lm-eval's RULER group) needs the hub offline here: its niah_single_2, niah_single_3, "
                "niah_multikey_1, niah_multivalue and niah_multiquery read Paul Graham's essays "
                "(baber/paul_graham_essays) and ruler_qa_squad / ruler_qa_hotpot read SQuAD and HotpotQA; offline, "
                "run --tasks ruler_vt,ruler_cwe,ruler_fwe,niah_single_1,niah_multikey_2,niah_multikey_3 (docs/ruler.md)"
            )
        if pattern in LM_EVAL_RULER_NIAH:
            print(f"note: {pattern} is lm-eval's RULER port (its own documents, lengths from --metadata "
                  f"max_seq_lengths); this project's is {pattern}_<len> (e.g. {pattern}_4k)", file=sys.stderr)


def only_project_tasks(tasks: list[str] | None) -> bool:
    """Whether every selected task or group is one of this project's (then lm-eval's own tasks need no index)."""
    ours = {t.name for t in project_tasks()}
    return bool(tasks) and all(t in ours for t in tasks)


class PreflightError(ValueError):
    """A flag the wrapper refuses before any model is loaded; the message names the flag, the cause and the fix."""


# --- preflight: what must hold before the first model call -------------------------------------------------------


def preflight(args: argparse.Namespace) -> None:
    """Check `--limit`, `--output_path`, local checkpoints and `--use_cache` before lm-eval builds the model."""
    check_limit(getattr(args, "limit", None))
    check_output_path(getattr(args, "output_path", None))
    model_args = getattr(args, "model_args", None) or {}
    check_local_weights(model_args)
    if getattr(args, "use_cache", None):
        claim_cache(args.use_cache, getattr(args, "model", None) or "hf", model_args)


def check_metadata_keys(args: argparse.Namespace) -> None:
    """Refuse an unknown `--metadata` key before the model loads: this project's tasks refuse it too, but lm-eval
    builds them only after the model (minutes for a large one). Model args count as known (lm-eval copies them into
    the metadata); nothing is checked when no selected task is this project's."""
    metadata = getattr(args, "metadata", None)
    ours = {t.name for t in project_tasks()}
    if not isinstance(metadata, dict) or not metadata or not any(t in ours for t in getattr(args, "tasks", None) or []):
        return
    from infini_bench.tasks.options import check_option_keys

    check_option_keys({**metadata, **(getattr(args, "model_args", None) or {})}, "the selected tasks")


def check_limit(limit: float | None) -> None:
    if limit is None:
        return
    if not (limit > 0 and math.isfinite(limit)) or (limit > 1 and limit != int(limit)):
        raise PreflightError(
            f"--limit {limit:g} is invalid: give a number of documents per task (e.g. --limit 10) or a fraction of "
            "them between 0 and 1 (e.g. --limit 0.5)"
        )


def check_output_path(output_path: str | None) -> None:
    """lm-eval writes `--output_path` only after the whole evaluation, and reports a failure as a warning: try the
    folder now. Nothing is created: the nearest existing folder is probed with a temporary folder."""
    if not output_path:
        return
    path = Path(output_path).expanduser()
    folder = path.parent if path.suffix == ".json" else path
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise PreflightError(
            f"--output_path {output_path!r} cannot be written: {str(existing)!r} is a file, not a folder; give a "
            "folder path (nothing was evaluated)"
        )
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".infini-bench-write-test-", dir=existing))
    except OSError as err:
        raise PreflightError(
            f"--output_path {output_path!r} is not writable ({err.strerror or err} in {str(existing)!r}): give a "
            "folder you can write to (nothing was evaluated)"
        ) from None


def check_local_weights(model_args: dict[str, Any]) -> None:
    """A local checkpoint whose safetensors files are cut short fails now in one sentence, for any --model."""
    from infini_bench.modeling.checkpoint import check_weight_files

    pretrained = model_args.get("pretrained")
    if isinstance(pretrained, str) and Path(pretrained).expanduser().is_dir():
        try:
            check_weight_files(Path(pretrained).expanduser())
        except ValueError as err:
            raise PreflightError(f"pretrained={pretrained!r} cannot be evaluated: {err}") from None


_PATH_ARGS = ("pretrained", "tokenizer", "peft", "delta")


_WHOLE_FILE = 64 << 20  # files up to this size are hashed whole; larger ones by 16 blocks of 1 MiB spread over them


def _content_digest(path: Path, block: int = 1 << 20, blocks: int = 16) -> str:
    """A digest of the file's bytes, not its name or time: a copied checkpoint is the same model. A large weight
    file is read at 16 evenly spaced 1 MiB blocks (first and last included): any further training changes every
    tensor; an edit confined to the bytes between the blocks would go unnoticed (docs/ARCHITECTURE.md §4)."""
    size = path.stat().st_size
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        if size <= _WHOLE_FILE:
            digest.update(handle.read())
        else:
            for i in range(blocks):
                handle.seek((size - block) * i // (blocks - 1))
                digest.update(handle.read(block))
    return digest.hexdigest()[:32]


def _file_fingerprint(path: Path) -> dict[str, list[int | str]]:
    """Each weight/config file of a local model (a folder's top-level files, or one file): size and content digest."""
    files = sorted(p for p in path.iterdir() if p.is_file()) if path.is_dir() else [path]
    return {p.name: [p.stat().st_size, _content_digest(p)] for p in files}


def model_identity(model: str, model_args: dict[str, Any]) -> dict[str, Any]:
    """What makes two evaluations give the same answers: the model class, its args, and the files of every local
    path among them (resolved, so `latest` links count by the checkpoint they point at)."""
    args = identifying_args(model_args)  # the report's rule for "the same model" too (infini_bench/model_args.py)
    files = {}
    for key in _PATH_ARGS:
        value = args.get(key)
        if isinstance(value, str) and value and Path(value).expanduser().exists():
            resolved = Path(value).expanduser().resolve()
            files[key] = {"path": str(resolved), "files": _file_fingerprint(resolved)}
    identity = {"model": model, "model_args": args, "files": files}
    # the digest leaves out where local files are: a copy of a checkpoint (another folder) is the same model
    same = {"model": model, "model_args": {k: v for k, v in args.items() if k not in files},
            "files": {key: entry["files"] for key, entry in files.items()}}
    identity["digest"] = hashlib.sha256(json.dumps(same, sort_keys=True, default=str).encode()).hexdigest()
    return identity


def _describe(identity: dict[str, Any]) -> str:
    args = ",".join(f"{k}={v}" for k, v in identity.get("model_args", {}).items())
    return f"--model {identity.get('model')} --model_args {args}" if args else f"--model {identity.get('model')}"


def _cache_databases(use_cache: str) -> list[Path]:
    """lm-eval's cache files for `--use_cache PATH`: PATH_rank<N>.db, one per data-parallel rank."""
    return sorted(Path(p) for p in glob.glob(glob.escape(use_cache) + "_rank*.db"))


def check_cache_database(db: Path) -> None:
    try:
        connection = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
        try:
            problems = [row[0] for row in connection.execute("PRAGMA quick_check").fetchall()]
        finally:
            connection.close()
    except sqlite3.DatabaseError as err:
        problems = [str(err)]
    if problems != ["ok"]:
        raise PreflightError(
            f"--use_cache database {str(db)!r} is damaged ({'; '.join(problems[:2])}): delete it (its answers are "
            "computed again) or give another --use_cache path"
        )


def claim_cache(use_cache: str, model: str, model_args: dict[str, Any]) -> None:
    """Refuse a `--use_cache` that holds another model's answers; record this model beside a new cache."""
    identity = model_identity(model, model_args)
    record = Path(f"{use_cache}_model.json")
    databases = _cache_databases(use_cache)
    for db in databases:
        check_cache_database(db)
    start_over = (
        f"give this model its own --use_cache path, or delete {use_cache}_rank*.db and {record} to start the "
        "cache over"
    )
    if databases:
        try:
            recorded = json.loads(record.read_text())
        except FileNotFoundError:
            raise PreflightError(
                f"--use_cache {use_cache!r} holds cached answers ({databases[0].name}) but no record of the model that "
                f"gave them (made by plain lm_eval or an older infini-bench), so they may be another model's: "
                f"{start_over}"
            ) from None
        except (OSError, ValueError) as err:
            raise PreflightError(f"--use_cache record {str(record)!r} is unreadable ({err}): {start_over}") from None
        if recorded.get("digest") != identity["digest"]:
            then, now = _describe(recorded), _describe(identity)
            if then == now:
                changed = sorted(
                    f"{name} ({key})"
                    for key, entry in identity["files"].items()
                    for name in set(entry["files"]) | set(recorded.get("files", {}).get(key, {}).get("files", {}))
                    if entry["files"].get(name) != recorded.get("files", {}).get(key, {}).get("files", {}).get(name)
                )
                now += f" whose files changed since ({', '.join(changed[:3]) or 'another folder'})"
            raise PreflightError(
                f"--use_cache {use_cache!r} holds the answers of another model: it was filled by `{then}`, this run "
                f"is `{now}`; a cache serves one model only: {start_over}"
            )
        return
    try:
        record.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=record.parent, prefix=f".{record.name}.", suffix=".tmp")
        with os.fdopen(fd, "w") as handle:
            json.dump(identity, handle, indent=1, default=str)
        os.replace(tmp, record)
    except OSError as err:
        raise PreflightError(
            f"--use_cache {use_cache!r} cannot be written ({err.strerror or err}): give a path in a folder you can "
            "write to (nothing was evaluated)"
        ) from None


# --- help ----------------------------------------------------------------------------------------------------------

HELP = """infini-bench eval (also: python -m infini_bench.harness): lm-eval's own command line with this project's tasks
and models; it takes exactly lm_eval's flags (lm-eval's help follows below).

  --model infini       Infini-attention checkpoints (this project's adapter). Model args: pretrained, tokenizer,
                       dtype, segment_length, use_memory, max_length, max_gen_toks, convert_llama
                       (model_adapters/README.md). lm-eval's own models (--model hf, ...) run the same tasks.
  --tasks              this project's tasks: passkey_<len>, niah_<variant>_<len> (RULER's eight NIAH variants:
                       single_1/2/3, multikey_1/2/3, multivalue, multiquery; niah_<len> = niah_single_1_<len>) for
                       <len> 256, 512, 1k ... 1m tokens; ppl_stdlib, ppl_files, ppl_pg19; suites infinibench_*.
                       Globs ('passkey_*') select only these. List them: infini-bench tasks
  --metadata           task options, e.g. samples=2 depths=[0,50,100] n_digits=5 seed=1 (tasks/README.md)
  --use_cache PATH     answers are cached per model: a cache filled by another model or other model args is
                       refused (PATH_model.json records which model filled it)
  --output_path DIR    checked writable before the model is loaded

  e.g. infini-bench eval --model infini --model_args pretrained=ckpt/ --tasks 'passkey_*' --output_path out/

"""


def _wants_help(argv: list[str]) -> bool:
    return not argv or argv == ["run"] or any(a in ("-h", "--help") for a in argv)


def main(argv: list[str] | None = None) -> int:
    """Run lm-eval's CLI on `argv` (default: sys.argv[1:]) with this project's tasks and models."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["tasks"]:  # `python -m infini_bench.harness tasks`: the list, not an evaluation
        return list_tasks(argv[1:])
    if _wants_help(argv) and argv[:1] not in (["ls"], ["validate"]):
        print(HELP, flush=True)
        argv = ["run", "--help"] if argv[:1] != ["run"] else argv  # lm-eval's `run` help lists every flag
        argv = argv if "-h" in argv or "--help" in argv else [*argv, "--help"]
    import infini_bench.model_adapters  # noqa: F401  (registers --model infini)
    from infini_bench.data.cache import StorageError

    args, execute = parse_lm_eval_cli(argv)
    command = getattr(args, "command", None)
    try:
        ours_only = False
        if command == "run":
            prepare_run_args(args)
            preflight(args)
            check_metadata_keys(args)
            ours_only = only_project_tasks(args.tasks)
        elif hasattr(args, "include_path") and not getattr(args, "include_path", None):
            args.include_path = TASKS_DIR
        with skip_builtin_task_index(ours_only):
            execute(args)
        _leave_process_group()
    except (ValueError, FileNotFoundError, StorageError) as err:
        # a bad flag, model arg or task option, or a folder that cannot be written: the message names it and the
        # fix (InfiniArgumentError, PreflightError, the task builders' errors are ValueErrors)
        print(f"error: {err}", file=sys.stderr)
        return 1
    except sqlite3.DatabaseError as err:  # the --use_cache database broke during the run
        print(f"error: the --use_cache database failed ({err}): delete it or give another --use_cache path",
              file=sys.stderr)
        return 1
    return 0


def _leave_process_group() -> None:
    """Under torchrun / accelerate launch, every rank leaves the process group together once the run is done: a
    gloo group still alive at interpreter exit can abort a rank after the results are written (SIGABRT,
    "terminate called without an active exception"), failing the launch. Not on an error path, where the other
    ranks may never reach the barrier."""
    torch = sys.modules.get("torch")
    if torch is not None and torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()


def list_tasks(argv: list[str] | None = None) -> int:
    """Print this project's tasks and groups and the folder to pass as --include_path (`--path`: that alone, for
    `lm_eval ... --include_path "$(infini-bench tasks --path)"`)."""
    import argparse

    parser = argparse.ArgumentParser(prog="infini-bench tasks", description=list_tasks.__doc__)
    parser.add_argument("--path", action="store_true", help="print only the include path")
    if parser.parse_args([] if argv is None else argv).path:
        print(TASKS_DIR)
        return 0
    infos = project_tasks()
    from infini_bench.tasks.names import format_length

    rows = [("name", "kind", "family", "context", "members")]
    for info in infos:
        context = format_length(info.context_length) if info.context_length else "-"
        members = ", ".join(info.members) if info.kind == "group" else ""
        rows.append((info.name, info.kind, info.family, context, members))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    print(f"include path: {TASKS_DIR}")
    print(f"{sum(i.kind == 'task' for i in infos)} tasks, {sum(i.kind == 'group' for i in infos)} groups\n")
    for row in rows:
        line = "  ".join(cell.ljust(width) for cell, width in zip(row[:4], widths)) + "  " + row[4]
        print(line.rstrip())
    return 0


if __name__ == "__main__":
    sys.exit(main())
