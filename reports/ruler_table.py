"""The per-length view a RULER table needs: per model, task and length the score, its sample count and 95 %
interval, for this project's retrieval tasks and for lm-eval's own ``ruler`` tasks (which report one metric per
length, named by the length: ``"4096"``), and for every NIAH run whether it followed ``protocol=ruler`` and, when
not, what differs from RULER's documents (haystack, documents per length, depths, seed, budget, length).

Reads only what lm-eval wrote (the results' ``configs`` metadata and per-task sample counts); imports nothing of
the tasks but their naming module.
"""
from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

from .grid import wilson
from .formatting import percent
from .records import Loaded, TaskResult
from infini_bench.tasks.names import NIAH_VARIANTS, RETRIEVAL_FAMILIES, format_length, split_task_name

RULER_SAMPLES, RULER_SEED, RULER_BUDGET, RULER_SHORTEST = 500, 42, 128, 4096
#: RULER's haystack per variant (scripts/synthetic.yaml).
RULER_HAYSTACK = {"single_1": "noise", "multikey_2": "needle", "multikey_3": "needle"}
#: lm-eval's ``ruler`` group: its NIAH port and the four other RULER task types (their task names).
LM_EVAL_RULER_TASKS = (*(f"niah_{v}" for v in NIAH_VARIANTS), "ruler_vt", "ruler_cwe", "ruler_fwe",
                       "ruler_qa_squad", "ruler_qa_hotpot")
_LENGTH_METRIC = re.compile(r"^\d+$")


def _interval(mean: float, n: int | None) -> tuple[float | None, float | None]:
    """95 % Wilson interval of a mean score over `n` documents (exact for 0/1 scores; for partial credit such as
    ruler_match on several values, the interval of a proportion with that mean)."""
    if not n or mean is None or math.isnan(mean):
        return None, None
    return wilson(min(max(mean, 0.0), 1.0) * n, n)


def _scores_of(result: TaskResult, metric: str) -> tuple[float | None, int | None]:
    """Mean and count of `metric` from the logged samples (NaN-free), else from the results file."""
    if result.samples:
        values = [s.metrics.get(metric) for s in result.samples]
        values = [float(v) for v in values if isinstance(v, (int, float)) and not math.isnan(float(v))]
        if values:
            return sum(values) / len(values), len(values)
    value = result.metrics.get(metric)
    if not isinstance(value, (int, float)) or math.isnan(value):  # NaN: every document invalid (non_finite=invalid)
        return None, result.n_samples
    return float(value), result.n_samples


def per_length_rows(loaded: Loaded, metric: str) -> list[dict[str, Any]]:
    """One row per model, task family and length: score, n, 95 % interval, where it came from."""
    rows: list[dict[str, Any]] = []
    for model in loaded.models:
        for task, result in sorted(model.tasks.items()):
            family, length = split_task_name(task)
            if family in RETRIEVAL_FAMILIES and length:
                mean, n = _scores_of(result, metric)
                low, high = _interval(mean, n)
                rows.append({"model": model.display, "task": family, "length": length, "score": mean, "n": n,
                             "ci_low": low, "ci_high": high, "metric": metric, "source": "infini-bench",
                             "protocol": (result.config.get("metadata") or {}).get("protocol", "grid")})
            elif task in LM_EVAL_RULER_TASKS:
                for key, value in result.metrics.items():
                    if _LENGTH_METRIC.match(key) and isinstance(value, (int, float)) and value >= 0:
                        score = float(value) / 100.0 if value > 1 else float(value)
                        low, high = _interval(score, result.n_samples)
                        rows.append({"model": model.display, "task": task, "length": int(key), "score": score,
                                     "n": result.n_samples, "ci_low": low, "ci_high": high,
                                     "metric": "string_match (lm-eval ruler)", "source": "lm-eval ruler",
                                     "protocol": "lm-eval port"})
    return rows


def ruler_differences(task: str, metadata: dict[str, Any], n_samples: int | None) -> list[str]:
    """What a NIAH run did differently from RULER's documents (empty: it followed RULER's protocol)."""
    family, length = split_task_name(task)
    variant = family[len("niah_"):] if family != "niah" else "single_1"
    out: list[str] = []
    protocol = metadata.get("protocol", "grid")
    if protocol != "ruler":
        out.append("documents: this project's depth x length grid (protocol=grid): each needle at one of "
                   f"{len(metadata.get('depths') or []) or 11} depths including 0 % and 100 %, keys from its own word "
                   "lists (RULER: its own draws, needle lines at a uniform line index, essay needles at 40 depths)")
    docs = metadata.get("samples") if protocol == "ruler" else (metadata.get("samples") or 0) * len(metadata.get("depths") or [])
    if docs and docs != RULER_SAMPLES:
        out.append(f"{docs} documents per length (RULER: {RULER_SAMPLES})")
    if n_samples is not None and docs and n_samples < docs:
        out.append(f"--limit: {n_samples} of the {docs} documents evaluated")
    if protocol == "ruler" and metadata.get("seed") not in (None, RULER_SEED):
        out.append(f"seed {metadata.get('seed')} (RULER: {RULER_SEED})")
    want = RULER_HAYSTACK.get(variant, "essay")
    haystack = str(metadata.get("haystack") or want)
    if haystack not in (want, "filler" if want == "noise" else want):
        out.append(f"haystack {haystack} (RULER: {want})")
    if want == "essay":
        essays = metadata.get("essays")
        if essays in (None, "", "stdlib"):
            out.append("essay haystack: the standard library's docstrings (RULER: Paul Graham's essays)")
        elif isinstance(essays, str) and not essays.startswith("hf:") and Path(essays).name != "PaulGrahamEssays.json":
            out.append(f"essays from {essays} (RULER: PaulGrahamEssays.json)")
    if metadata.get("answer_tokens") not in (None, RULER_BUDGET):
        out.append(f"answer budget {metadata.get('answer_tokens')} tokens (RULER: {RULER_BUDGET})")
    if length and length < RULER_SHORTEST:
        out.append(f"length {format_length(length)} is below RULER's shortest, 4K")
    if metadata.get("n_digits") not in (None, 7):
        out.append(f"{metadata.get('n_digits')}-digit values (RULER: 7)")
    if metadata.get("prompt_frame"):
        out.append("chat template: the answer prefix opens the assistant turn without RULER's leading space")
    return out


def protocol_rows(loaded: Loaded) -> list[dict[str, Any]]:
    """Per model and NIAH task: the protocol it ran under, whether that is RULER's, and what differs."""
    rows = []
    for model in loaded.models:
        for task, result in sorted(model.tasks.items()):
            family, length = split_task_name(task)
            if not (family.startswith("niah") and length and family in RETRIEVAL_FAMILIES):
                continue
            metadata = result.config.get("metadata") or {}
            differs = ruler_differences(task, metadata, result.n_samples)
            rows.append({"model": model.display, "task": task, "protocol": metadata.get("protocol", "grid"),
                         "follows_ruler": not differs, "differs": differs})
    return rows


def per_length_text(rows: list[dict[str, Any]]) -> list[str]:
    """The per-length rows as terminal lines: ``4k: 93.8 % [89.1-96.6] n=500``."""
    lines, seen = [], {}
    for row in rows:
        seen.setdefault((row["model"], row["task"], row["protocol"]), []).append(row)
    for (model, task, protocol), cells in seen.items():
        parts = [f"{format_length(c['length'])}: {percent(c['score'], 1, unit=' %')} {_ci(c)} n={c['n'] if c['n'] is not None else '?'}"
                 for c in sorted(cells, key=lambda c: c["length"])]
        lines.append(f"{model} · {task} ({protocol}): " + "; ".join(parts))
    return lines


def _ci(row: dict[str, Any]) -> str:
    if row["ci_low"] is None:
        return "[no interval]"
    return f"[{row['ci_low'] * 100:.1f}–{row['ci_high'] * 100:.1f}]"


def per_length_html(summary: dict[str, Any]) -> str:
    """The headline's per-length table (score [95 % interval] n per model, task and length) and, per NIAH run,
    whether it followed protocol=ruler, as HTML for the report page."""
    import html

    import pandas as pd

    rows = summary.get("headline_per_length") or []
    if not rows:
        return ""
    table: dict[tuple[str, str, str], dict[str, str]] = {}
    for row in sorted(rows, key=lambda r: r["length"]):
        record = table.setdefault((row["model"], row["task"], row["protocol"]), {})
        n = row["n"] if row["n"] is not None else "?"
        record[format_length(row["length"])] = f"{percent(row['score'], 1, unit=' %')} {_ci(row)} n={n}"
    frame = pd.DataFrame([{"model": m, "task": t, "documents": p, **cells} for (m, t, p), cells in table.items()])
    out = [f"<h3>Per task and length: {html.escape(str(summary.get('metric')))}, 95 % Wilson interval, n documents</h3>",
           frame.fillna("–").to_html(index=False, escape=True, border=0, classes="table")]
    differ = [r for r in summary.get("protocol") or [] if not r["follows_ruler"]]
    follow = [r for r in summary.get("protocol") or [] if r["follows_ruler"]]
    if follow or differ:
        out.append(f"<p>protocol=ruler followed by {len(follow)} of {len(follow) + len(differ)} NIAH runs.</p>")
    if differ:
        items = "".join(f"<li>{html.escape(r['model'])} · {html.escape(r['task'])}: "
                        f"{html.escape('; '.join(r['differs']))}</li>" for r in differ)
        out.append(f"<details><summary>What differs from RULER's documents</summary><ul>{items}</ul></details>")
    return "\n".join(out)


__all__ = ["per_length_html", "per_length_rows", "per_length_text", "protocol_rows", "ruler_differences"]
