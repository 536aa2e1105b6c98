"""`python -m infini_bench.harness <lm_eval flags>`: lm-eval's own CLI with this project's tasks and models.

It takes exactly lm_eval's flags (it *is* lm_eval's parser) and changes three things before running:

* ``--include_path`` gets this project's task folder (added to the user's, if any);
* ``--tasks`` globs that match this project's tasks select only those (``'passkey_*'`` never selects lm-eval's
  built-in ``passkey_with_librusec``, ``'niah_*'`` never RULER's), see `infini_bench.tasks.expand_task_patterns`;
  glob-selected passkey/NIAH tasks longer than the model's ``max_length`` are left out with a note on stderr
  (a task named exactly is kept, and then fails with a clear error);
* ``--model infini`` is registered: lm-eval's built-in models are imported first, then
  ``infini_bench.model_adapters`` (registering before lm-eval has loaded its own models would hide them).

`list_tasks` prints this project's tasks and groups and the include path (``infini-bench tasks``, or
``python -m infini_bench.harness tasks``).
"""
from __future__ import annotations

import argparse
import sys
from typing import Any

from infini_bench.tasks import TASKS_DIR, expand_task_patterns, project_tasks


def _register_models() -> None:
    import lm_eval.models  # noqa: F401  (built-ins first: see LMEVAL.md)

    import infini_bench.model_adapters  # noqa: F401  (registers --model infini)


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
        expanded = expand_task_patterns(patterns, metadata)
        ours = {t.name for t in project_tasks()}
        globbed = {t for t in expanded if t in ours and t not in patterns}
        args.tasks = _drop_tasks_too_long(expanded, globbed, metadata)
    return args


def main(argv: list[str] | None = None) -> int:
    """Run lm-eval's CLI on `argv` (default: sys.argv[1:]) with this project's tasks and models."""
    _register_models()
    from lm_eval._cli import HarnessCLI
    from lm_eval.utils import setup_logging

    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["tasks"]:  # `python -m infini_bench.harness tasks`: the list, not an evaluation
        return list_tasks(argv[1:])
    setup_logging()
    cli = HarnessCLI()
    saved = sys.argv
    sys.argv = ["lm-eval", *argv]  # HarnessCLI reads sys.argv (and inserts the implicit `run` subcommand)
    try:
        args = cli.parse_args()
    finally:
        sys.argv = saved
    command = getattr(args, "command", None)
    if command == "run":
        prepare_run_args(args)
    elif hasattr(args, "include_path") and not getattr(args, "include_path", None):
        args.include_path = TASKS_DIR
    from infini_bench.model_adapters.options import InfiniArgumentError

    try:
        cli.execute(args)
    except InfiniArgumentError as err:  # a bad --model_args value: the message names it; no traceback needed
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


def list_tasks(argv: list[str] | None = None) -> int:
    """Print this project's tasks and groups and the folder to pass as --include_path."""
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
