"""The one document `infini-bench inspect` runs through a model: a task's own evaluation document (the same
builder, seed and defaults as the lm-eval task, sample 0 at the chosen depth) or the tokens of a text file."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from infini_bench.data import EVAL_SEED_BASE, NIAH_VARIANTS, plan_niah_docs, plan_passkey_docs
from infini_bench.data.grid import Grid
from infini_bench.data.niah import niah_spec
from infini_bench.data.passkey import PasskeySpec, passkey_answer_tokens
from infini_bench.tasks.names import split_task_name

#: the families `--task` takes; `niah` is `niah_single_1`, as in the task names `niah_<len>`
TASK_FAMILIES = ("passkey", "niah", *(f"niah_{v}" for v in NIAH_VARIANTS))


@dataclass
class Document:
    """Token ids and what they are: `source` is "task" or "text"; `needle_position` is the needle's first token
    (task documents only)."""

    input_ids: list[int]
    source: str
    description: str
    fields: dict[str, Any] = field(default_factory=dict)
    needle_position: int | None = None


def check_task(task: str) -> tuple[str, int | None]:
    """(family, the length in the name or None); one sentence naming the value when the family is not ours."""
    family, named = split_task_name(task)
    if family not in TASK_FAMILIES:
        raise ValueError(f"task {task!r} is unknown: choose one of {', '.join(TASK_FAMILIES)} (optionally with a "
                         "length, e.g. passkey_1k), or pass --text FILE")
    return family, named


def resolve_task(task: str, length: int | None) -> tuple[str, int]:
    """(family, length) from `--task` and `--length`: ``passkey`` with a length, or a task name with its length in it
    (``passkey_1k``, ``niah_single_1_2k``). One sentence naming the value when it is neither."""
    family, named = check_task(task)
    if length is not None and named is not None and length != named:
        raise ValueError(f"task {task!r} names {named} tokens but --length is {length}: give one of them")
    chosen = length if length is not None else named
    if chosen is None:
        raise ValueError(f"task {task!r} needs a length: pass --length N (tokens, e.g. 1024 or 1k)")
    return family, chosen


def task_document(tokenizer: Any, task: str, length: int | None, depth: float) -> Document:
    """Sample 0 at `depth` of the `task` family's evaluation documents at `length` tokens: the document lm-eval's
    `<task>_<len>` task builds there (its plan, so its defaults, seed and disk cache), tokenised as the model is
    fed it."""
    family, length = resolve_task(task, length)
    if family == "passkey":
        plan = plan_passkey_docs(tokenizer, PasskeySpec(answer_tokens=passkey_answer_tokens()),
                                 Grid(length, [depth], 1, EVAL_SEED_BASE))
    else:
        variant = "single_1" if family == "niah" else family[len("niah_") :]
        plan = plan_niah_docs(tokenizer, niah_spec(variant), Grid(length, [depth], 1, EVAL_SEED_BASE))
    doc, _ = plan.doc(0)
    ids = tokenizer(doc["prompt"], add_special_tokens=True)["input_ids"]
    if len(ids) != doc["prompt_tokens"]:
        raise ValueError(f"the {family} document at {length} tokens re-tokenises to {len(ids)} tokens, not its "
                         f"{doc['prompt_tokens']}: this tokenizer does not round-trip its text")
    keep = ("context_length", "depth_percent", "seed", "answer", "prompt_tokens", "answer_tokens", "needle_position")
    return Document(ids, "task", f"{family} at {length} tokens, depth {depth:g} %, sample 0",
                    {"task": family, **{k: doc[k] for k in keep if k in doc}}, doc.get("needle_position"))


def text_document(tokenizer: Any, path: str | Path, max_tokens: int | None) -> Document:
    """The tokens of a UTF-8 text file (the first `max_tokens` when given)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise FileNotFoundError(f"--text {str(path)!r} does not exist") from None
    except (OSError, UnicodeDecodeError) as err:
        raise ValueError(f"--text {str(path)!r} cannot be read as UTF-8 text ({err})") from None
    ids = tokenizer(text, add_special_tokens=True)["input_ids"]
    if max_tokens is not None:
        ids = ids[:max_tokens]
    if not ids:
        raise ValueError(f"--text {str(path)!r} is empty: it gives no tokens")
    return Document(ids, "text", f"{path.name}: {len(ids)} tokens", {"file": str(path), "tokens": len(ids)})
