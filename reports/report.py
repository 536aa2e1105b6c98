"""``build_report``: lm-eval output in, PNGs + ``summary.json`` + ``cells.csv`` + ``report.html`` out.

The summary dict returned (and written as ``summary.json``) is the one source for the terminal view and the
HTML, so the three never disagree.
"""
from __future__ import annotations

import json
import math
import re
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable

import pandas as pd

from . import figures
from .grid import DEPTH_BINS, Grid, build_grids, depth_bin, is_perplexity_task, perplexity_results
from .loading import Loaded, load


class ReportError(Exception):
    """Input that leaves nothing to report; the message is meant for the user, not a traceback."""


def _slug(*parts: str) -> str:
    return "_".join(re.sub(r"[^A-Za-z0-9.-]+", "-", p).strip("-") or "x" for p in parts)


class _Names:
    """PNG file names in the output folder, unique even when two labels slug to the same text."""

    def __init__(self, out: Path) -> None:
        self.out = out
        self.used: set[str] = set()

    def __call__(self, kind: str, *parts: str) -> Path:
        stem = f"{kind}_{_slug(*parts)}"
        name, i = f"{stem}.png", 2
        while name in self.used:
            name, i = f"{stem}-{i}.png", i + 1
        self.used.add(name)
        return self.out / name


def _remove_previous_figures(out: Path) -> None:
    """A report written again into the same folder replaces the PNGs the previous one listed (and only those)."""
    try:
        previous = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return
    if not isinstance(previous, dict) or "grids" not in previous:
        return

    def files(node: Any) -> Iterable[str]:
        if isinstance(node, dict):
            name = node.get("file")
            if isinstance(name, str) and name.endswith(".png") and "/" not in name and "\\" not in name:
                yield name
            for value in node.values():
                yield from files(value)
        elif isinstance(node, list):
            for value in node:
                yield from files(value)

    for name in set(files(previous)):
        (out / name).unlink(missing_ok=True)


def _num(value: Any) -> Any:
    """JSON-friendly number: NaN -> None, numpy scalars -> Python."""
    if value is None:
        return None
    if isinstance(value, float) and math.isnan(value):
        return None
    if hasattr(value, "item"):
        value = value.item()
        if isinstance(value, float) and math.isnan(value):
            return None
    return value


def _figure_dict(fig: figures.Figure, out_dir: Path) -> dict[str, Any]:
    return {"file": fig.path.relative_to(out_dir).as_posix(), "width": fig.width, "height": fig.height}


def _cells_list(grid: Grid, samples_per_cell: int, fig: figures.Figure) -> list[dict[str, Any]]:
    rows = []
    for rec in grid.cells.to_dict("records"):
        key = (float(rec["depth"]), int(rec["length"]))
        examples = _pick_examples(grid.samples.get(key, []), grid.metric, samples_per_cell)
        box = fig.cells.get(key)
        rows.append(
            {
                "depth": _num(rec["depth"]),
                "length": int(rec["length"]),
                "acc": _num(rec["acc"]),
                "n": None if _num(rec["n"]) is None else int(rec["n"]),
                "ci_low": _num(rec["ci_low"]),
                "ci_high": _num(rec["ci_high"]),
                "source": rec["source"],
                "pixel_box": list(box) if box else None,
                "examples": examples,
            }
        )
    return rows


def _pick_examples(samples: list, metric: str, k: int) -> list[dict[str, Any]]:
    """A few samples of one cell, failures first (they are what one wants to read), in doc order."""
    if k <= 0:
        return []
    ordered = sorted(samples, key=lambda s: (s.metrics.get(metric, 0.0) >= 1.0, s.doc_id))
    out = []
    for s in ordered[:k]:
        answer = s.doc.get("answer", s.target)
        out.append(
            {
                "doc_id": s.doc_id,
                "seed": s.doc.get("seed"),
                "answer": answer if isinstance(answer, str) else json.dumps(answer),
                "response": s.response,
                "correct": _num(s.metrics.get(metric)),
                "prompt_tail": s.prompt_tail,
                "prompt_chars": s.prompt_chars,
                "needle_context": s.needle_context,
                "needle_char": s.needle_char,
            }
        )
    return out


def _depth_bins(grid: Grid) -> list[dict[str, Any]]:
    """The Infini-attention paper's start / middle / end view of a grid (depths pooled into thirds)."""
    frame = grid.depth_bins()
    out = []
    for name, lo, hi in DEPTH_BINS:
        rows = frame[frame["bin"] == name]
        out.append(
            {
                "bin": name,
                "depth_lo": round(lo, 3),
                "depth_hi": round(hi, 3),
                "depths": [_num(d) for d in grid.depths if depth_bin(d) == name],
                "per_length": {
                    str(int(r["length"])): {"acc": _num(r["acc"]), "n": _num(r["n"]), "ci_low": _num(r["ci_low"]),
                                            "ci_high": _num(r["ci_high"])}
                    for r in rows.to_dict("records")
                },
            }
        )
    return out


def _metrics_table(loaded: Loaded) -> list[dict[str, Any]]:
    rows = []
    for model in loaded.models:
        for task in list(model.tasks.values()) + list(model.groups.values()):
            for name, value in sorted(task.metrics.items()):
                rows.append(
                    {
                        "model": model.label,
                        "task": task.name,
                        "metric": name,
                        "filter": task.filter,
                        "value": _num(value),
                        "stderr": _num(task.stderrs.get(name)),
                    }
                )
    return rows


def build_report(
    inputs: Iterable[str | Path],
    out_dir: str | Path,
    *,
    train_lengths: dict[str, int] | None = None,
    threshold: float = 0.8,
    metric: str = "acc",
    samples_per_cell: int = 3,
    html: bool = True,
) -> dict[str, Any]:
    """Build the whole report in ``out_dir`` and return the summary (also written to ``summary.json``).

    Raises ``ReportError`` only when nothing at all can be reported (e.g. an empty folder); every smaller problem
    is listed in ``summary["problems"]`` and in the HTML, and the rest is still drawn.
    """
    inputs = [str(p) for p in inputs]
    if not 0.0 <= threshold <= 1.0:
        raise ReportError(f"threshold must be a fraction between 0 and 1, got {threshold}")
    loaded = load(inputs, train_lengths)
    problems = list(loaded.problems)
    if not loaded.models:
        detail = "\n  ".join(problems) if problems else "nothing given"
        raise ReportError(f"no lm-eval results to report:\n  {detail}")
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ReportError(f"cannot create the output folder {out}: {e}") from e

    _remove_previous_figures(out)
    png = _Names(out)
    built = build_grids(loaded.models, metric)
    notes = list(built.notes)
    for model in loaded.models:
        for task in model.tasks.values():
            skipped = (task.config.get("metadata") or {}).get("skipped_docs")
            if isinstance(skipped, (int, float)) and skipped > 0:
                notes.append(f"{model.label} / {task.name}: {int(skipped)} sample(s) skipped by the task "
                             "(longer than the model's max_length; never truncated)")
    summary: dict[str, Any] = {
        "generated": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "inputs": inputs,
        "metric": metric,
        "threshold": threshold,
        "models": [
            {
                "label": m.label,
                "name": m.name,
                "model_type": m.model_type,
                "model_args": m.model_args,
                "train_length": m.train_length,
                "train_length_source": m.train_length_source,
                "results_files": [str(p) for p in m.results_files],
                "tasks": sorted(m.tasks),
                "groups": sorted(m.groups),
            }
            for m in loaded.models
        ],
        "grids": [],
        "comparisons": [],
        "perplexity": [],
        "perplexity_figures": [],
        "metrics": _metrics_table(loaded),
        "problems": problems,
        "notes": notes,
    }

    for grid in built.grids:
        stats = grid.stats(threshold)
        heat = figures.heatmap(grid, png("heatmap", grid.model, grid.family))
        bars = figures.depth_bars(grid, png("depth", grid.model, grid.family), stats["mean"])
        per_depth = grid.per_depth()
        per_length = grid.per_length()
        summary["grids"].append(
            {
                "model": grid.model,
                "family": grid.family,
                "metric": grid.metric,
                "tasks": grid.tasks,
                "train_length": grid.train_length,
                "depths": [_num(d) for d in grid.depths],
                "lengths": grid.lengths,
                "has_counts": grid.has_counts,
                "stats": stats,
                "per_depth": [
                    {"depth": _num(d), "acc": _num(r["acc"]), "n": _num(r["n"]), "ci_low": _num(r["ci_low"]),
                     "ci_high": _num(r["ci_high"])}
                    for d, r in per_depth.iterrows()
                ],
                "per_length": [
                    {"length": int(x), "acc": _num(r["acc"]), "n": _num(r["n"]), "ci_low": _num(r["ci_low"]),
                     "ci_high": _num(r["ci_high"])}
                    for x, r in per_length.iterrows()
                ],
                "cells": _cells_list(grid, samples_per_cell, heat),
                "depth_bins": _depth_bins(grid),
                "heatmap": _figure_dict(heat, out),
                "depth_bars": _figure_dict(bars, out),
            }
        )

    by_family: dict[str, list[Grid]] = {}
    for grid in built.grids:
        by_family.setdefault(grid.family, []).append(grid)
    for family, grids in by_family.items():
        table = []
        for grid in grids:
            stats = grid.stats(threshold)
            per_length = grid.per_length()["acc"]
            bins = _depth_bins(grid)
            table.append(
                {
                    "model": grid.model,
                    "per_length": {str(int(k)): _num(v) for k, v in per_length.items()},
                    "mean": stats["mean"],
                    "effective_length": stats["effective_length"],
                    "start_middle_end": {
                        str(int(k)): [b["per_length"].get(str(int(k)), {}).get("acc") for b in bins]
                        for k in per_length.index
                    },
                }
            )
        entry: dict[str, Any] = {"family": family, "models": [g.model for g in grids], "table": table,
                                 "side_by_side": None, "differences": []}
        if len(grids) > 1:
            entry["side_by_side"] = _figure_dict(
                figures.side_by_side(grids, png("compare", family)), out
            )
            base = grids[0]
            for other in grids[1:]:
                fig = figures.difference_map(base, other, png("diff", family, other.model, "vs", base.model))
                entry["differences"].append({"base": base.model, "other": other.model, **_figure_dict(fig, out)})
        summary["comparisons"].append(entry)

    ppl = perplexity_results(loaded.models)
    for r in ppl:
        summary["perplexity"].append(
            {
                "model": r.model,
                "task": r.task,
                "token_perplexity": _num(r.token_perplexity),
                "word_perplexity": _num(r.word_perplexity),
                "bits_per_byte": _num(r.bits_per_byte),
                "positions": [{"lo": lo, "hi": hi, "token_perplexity": _num(v)} for lo, hi, v in r.positions],
            }
        )
    for task in sorted({r.task for r in ppl}):
        with_positions = [r for r in ppl if r.task == task and r.positions]
        if not with_positions:
            notes.append(f"{task}: no token_perplexity_pos_* metrics, so no perplexity-by-position curve")
            continue
        fig = figures.perplexity_curves(with_positions, png("ppl", task))
        summary["perplexity_figures"].append({"task": task, **_figure_dict(fig, out)})

    for model, task in built.ungridded:
        if is_perplexity_task(task):
            notes.append(f"{model.label} / {task.name}: a perplexity task, so no depth × length heatmap; "
                         "shown in the perplexity section")
            continue
        notes.append(
            f"{model.label} / {task.name}: no depth × length grid (its samples carry no depth_percent and its "
            f"results have no {metric}_dNNN metrics); only its metrics are listed"
        )

    if built.grids:
        pd.concat(
            [g.cells.assign(model=g.model, family=g.family) for g in built.grids], ignore_index=True
        )[["model", "family", "depth", "length", "acc", "n", "ci_low", "ci_high", "source"]].to_csv(
            out / "cells.csv", index=False
        )
        summary["cells_csv"] = "cells.csv"
    if html:
        from .html import render_html

        (out / "report.html").write_text(render_html(summary, out), encoding="utf-8")
        summary["html"] = "report.html"
    (out / "summary.json").write_text(json.dumps(summary, indent=2, allow_nan=False), encoding="utf-8")
    return summary
