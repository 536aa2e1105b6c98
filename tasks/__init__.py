"""infini-bench's lm-eval tasks: passkey, the NIAH depth x length grid and long-context perplexity.

`TASKS_DIR` is the folder to give lm-eval as ``--include_path``. `expand_task_patterns` turns ``--tasks`` patterns
into exactly this project's names: a glob that matches any infini-bench task selects only infini-bench tasks (never
lm-eval's built-in ``passkey_with_librusec`` or RULER's ``niah_*``), an exact name is kept, anything else is left
for lm-eval. Importing this package does not import lm-eval.
"""
from __future__ import annotations

import fnmatch
import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from infini_bench.tasks.names import NIAH_VARIANTS, RETRIEVAL_FAMILIES, split_task_name

TASKS_DIR: str = str(Path(__file__).resolve().parent)

_FAMILY_ORDER = (*RETRIEVAL_FAMILIES, "ppl", "suite")


@dataclass(frozen=True)
class TaskInfo:
    """One task or group from this project's YAMLs."""

    name: str
    kind: str  # "task" or "group"
    family: str  # passkey, niah_<RULER variant>, niah (the niah_<len> aliases), ppl, or suite
    context_length: int | None  # tokens, for passkey/NIAH tasks
    members: tuple[str, ...]  # group members
    glob_requires: str | None  # metadata key a glob needs before it selects this task
    explicit_only: bool  # never selected by a glob
    yaml_path: str
    glob_prefix: str | None = None  # a glob selects this task only when the pattern starts with this text


def _family(name: str) -> str:
    if name.startswith("infinibench_"):
        return "suite"
    for prefix in (*(f"niah_{v}" for v in NIAH_VARIANTS), "niah", "passkey_nanotron", "passkey", "ppl"):
        if name.startswith(prefix + "_"):
            return prefix
    return "other"


@functools.lru_cache(maxsize=1)
def project_tasks() -> tuple[TaskInfo, ...]:
    """Every task and group in TASKS_DIR, indexed the way lm-eval indexes an include path."""
    from infini_bench.lm_eval_compat import index_task_folder

    infos = []
    for name, cfg, yaml_path, is_group in index_task_folder(TASKS_DIR):
        meta = cfg.get("metadata") or {}
        members = cfg.get("task", []) if is_group else []
        infos.append(
            TaskInfo(
                name=name,
                kind="group" if is_group else "task",
                family=_family(name),
                context_length=meta.get("task_context_length"),
                members=tuple(m for m in members if isinstance(m, str)),
                glob_requires=meta.get("glob_requires"),
                explicit_only=bool(meta.get("explicit_only", False)),
                yaml_path=yaml_path,
                glob_prefix=meta.get("glob_prefix"),
            )
        )
    return tuple(sorted(infos, key=_sort_key))


def _sort_key(info: TaskInfo) -> tuple[Any, ...]:
    """Tasks before groups, by family, then by length (passkey_2k before passkey_16k)."""
    stem, length = split_task_name(info.name)
    rank = _FAMILY_ORDER.index(info.family) if info.family in _FAMILY_ORDER else len(_FAMILY_ORDER)
    return (info.kind != "task", rank, stem, length or 0, info.name)


def task_names(kind: str | None = None) -> list[str]:
    """This project's task names (kind="task"), group names (kind="group") or both."""
    return [t.name for t in project_tasks() if kind is None or t.kind == kind]


def _is_glob(pattern: str) -> bool:
    return any(ch in pattern for ch in "*?[")


def _glob_allows(info: TaskInfo, metadata: dict[str, Any]) -> bool:
    if info.explicit_only:
        return False
    return info.glob_requires is None or metadata.get(info.glob_requires) not in (None, "", [])


def expand_task_patterns(patterns: Iterable[str], metadata: dict[str, Any] | None = None) -> list[str]:
    """Rewrite ``--tasks`` patterns (comma lists allowed) to exactly this project's names.

    A glob matching any of this project's tasks becomes those tasks (tasks only, never groups, so a group and its
    members are never both selected; tasks needing input, such as ``ppl_files``, only once `metadata` provides it;
    ``ppl_pg19`` only by name). Exact names and anything this project does not know pass through unchanged.
    """
    metadata = metadata or {}
    infos = {t.name: t for t in project_tasks()}
    leaf = [t for t in infos.values() if t.kind == "task"]
    expanded: list[str] = []
    for raw in patterns:
        for pattern in (p.strip() for p in str(raw).split(",")):
            if not pattern:
                continue
            if pattern in infos or not _is_glob(pattern):
                expanded.append(pattern)
                continue
            ours = [t for t in leaf if fnmatch.fnmatch(t.name, pattern)
                    and (not t.glob_prefix or pattern.startswith(t.glob_prefix))]  # passkey_* is not passkey_nanotron_*
            if not ours:
                expanded.append(pattern)
                continue
            allowed = [t.name for t in ours if _glob_allows(t, metadata)]
            if not allowed:
                needs = ", ".join(
                    f"{t.name} (only by exact name)" if t.explicit_only else f"{t.name} (needs --metadata {t.glob_requires}=...)"
                    for t in ours
                )
                raise ValueError(f"--tasks {pattern!r} matches only tasks a glob does not select: {needs}")
            expanded.extend(allowed)
    return list(dict.fromkeys(expanded))


__all__ = ["TASKS_DIR", "TaskInfo", "expand_task_patterns", "project_tasks", "task_names"]
