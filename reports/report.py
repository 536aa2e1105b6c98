"""``build_report``: lm-eval output in, PNGs + ``summary.json`` + ``cells.csv`` + ``report.html`` out.

The summary dict returned (and written as ``summary.json``) is the one source for the terminal view and the
HTML, so the three never disagree. `build_report` runs named steps: `load_inputs` → `prepare_output` →
`build_grids` → `summary_head` → `grid_entry` per grid → `comparison_entry` per family →
`perplexity_section` → `gate_section` (reports/gate_section.py) → `ungridded_notes` → `headline` →
`write_outputs`.
"""
from __future__ import annotations

import json
import math
import re
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import pandas as pd

from infini_bench.tasks.names import PRIMARY_FAMILY, family_sort_key

from . import figures
from .controls import control_warnings, unknown_controls
from .gate_section import gate_section
from .grid import DEPTH_BINS, Grid, GridBuild, build_grids, depth_bin, is_perplexity_task, perplexity_results
from .loading import load
from .records import Loaded
from .ruler_table import per_length_rows, protocol_rows


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


def _spread(row: Any) -> dict[str, Any]:
    """The seed fields of a cell / marginal row: the pooled score and the spread of the runs' scores."""
    seeds = _num(row["seeds"])
    return {
        "pooled_acc": _num(row["pooled_acc"]),
        "seeds": None if seeds is None else int(seeds),
        "seed_min": _num(row["seed_min"]),
        "seed_max": _num(row["seed_max"]),
        "seed_std": _num(row["seed_std"]),
    }


def _marginal_rows(frame: pd.DataFrame, key: str) -> list[dict[str, Any]]:
    """per_depth / per_length as JSON rows: the mean over runs, the pooled count and interval, the spread."""
    return [
        {key: int(k) if key == "length" else _num(k), "acc": _num(r["acc"]), "n": _num(r["n"]),
         "ci_low": _num(r["ci_low"]), "ci_high": _num(r["ci_high"]), **_spread(r)}
        for k, r in frame.iterrows()
    ]


def _cells_list(grid: Grid, samples_per_cell: int, fig: figures.Figure) -> list[dict[str, Any]]:
    per_run = [g.pivot("acc") for g in grid.replicates]
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
                **_spread(rec),
                "per_seed": [_num(_lookup(table, key)) for table in per_run],
                "pixel_box": list(box) if box else None,
                "examples": examples,
            }
        )
    return rows


def _lookup(table: pd.DataFrame, key: tuple[float, int]) -> Any:
    depth, length = key
    if depth in table.index and length in table.columns:
        return table.at[depth, length]
    return None


def _pick_examples(samples: list, metric: str, k: int) -> list[dict[str, Any]]:
    """A few samples of one cell, failures first (they are what one wants to read), in doc order."""
    if k <= 0:
        return []
    ordered = sorted(samples, key=lambda s: (s.metrics.get(metric, 0.0) >= 1.0, s.doc_id, s.run or ""))
    out = []
    for s in ordered[:k]:
        answer = s.doc.get("answer", s.target)
        out.append(
            {
                "doc_id": s.doc_id,
                "seed": s.doc.get("seed"),
                "run": s.run,
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
                                            "ci_high": _num(r["ci_high"]), **_spread(r)}
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
                        "run": model.run,
                        "task": task.name,
                        "metric": name,
                        "filter": task.filter,
                        "value": _num(value),
                        "stderr": _num(task.stderrs.get(name)),
                    }
                )
    return rows


# --- the steps of build_report ---------------------------------------------------------------------------------


def load_inputs(inputs: list[str], train_lengths: dict[str, int] | None, threshold: float) -> Loaded:
    """Read the lm-eval output; a ReportError when the options are wrong or there is nothing at all to report."""
    if not 0.0 <= threshold <= 1.0:
        raise ReportError(f"threshold must be a fraction between 0 and 1, got {threshold}")
    loaded = load(inputs, train_lengths)
    if not loaded.models:
        detail = "\n  ".join(loaded.problems) if loaded.problems else "nothing given"
        raise ReportError(f"no lm-eval results to report:\n  {detail}")
    return loaded


def prepare_output(out_dir: str | Path) -> Path:
    """Create the output folder and remove the figures an earlier report there listed."""
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ReportError(f"cannot create the output folder {out}: {e}") from e
    _remove_previous_figures(out)
    return out


def invalid_notes(loaded: Loaded) -> list[str]:
    """Documents the model could not score (its logits were NaN or infinite; the adapter's `non_finite=invalid`),
    per model and task: counted from the samples log when there is one, else from the task's `invalid` share."""
    notes = []
    for model in loaded.models:
        for task in model.tasks.values():
            if task.samples:
                marked = [s for s in task.samples if s.metrics.get("invalid") == 1.0]
                count, total = len(marked), len(task.samples)
            else:
                share, total = task.metrics.get("invalid"), task.n_samples
                if share is None or total is None:
                    continue
                count = round(share * total)
            if count:
                notes.append(f"{model.display} / {task.name}: {count} of {total} documents invalid (the model's "
                             "logits were NaN or infinite; non_finite=invalid): left out of its scores")
    return notes


def skipped_notes(loaded: Loaded) -> list[str]:
    """Samples the tasks skipped (longer than the model's max_length), per model and task."""
    notes = []
    for model in loaded.models:
        for task in model.tasks.values():
            skipped = (task.config.get("metadata") or {}).get("skipped_docs")
            if isinstance(skipped, (int, float)) and skipped > 0:
                notes.append(f"{model.display} / {task.name}: {int(skipped)} sample(s) skipped by the task "
                             "(longer than the model's max_length; never truncated)")
    return notes


def summary_head(inputs: list[str], loaded: Loaded, metric: str, threshold: float,
                 notes: list[str]) -> dict[str, Any]:
    """The summary before any grid is drawn: what was read, the models, every metric, problems and notes."""
    return {
        "generated": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "inputs": inputs,
        "metric": metric,
        "threshold": threshold,
        "headline": [],
        "models": [
            {
                "label": m.label,
                "run": m.run,
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
        "perplexity_seeds": [],
        "perplexity_figures": [],
        "metrics": _metrics_table(loaded),
        "problems": list(loaded.problems),
        "notes": notes,
    }


def grid_entry(grid: Grid, threshold: float, png: _Names, out: Path, samples_per_cell: int) -> dict[str, Any]:
    """One model × family: its heatmap and depth bars drawn, its statistics, marginals, cells and bins."""
    stats = grid.stats(threshold)
    heat = figures.heatmap(grid, png("heatmap", grid.model, grid.family))
    bars = figures.depth_bars(grid, png("depth", grid.model, grid.family), stats["mean"])
    return {
        "model": grid.model,
        "family": grid.family,
        "metric": grid.metric,
        "tasks": grid.tasks,
        "train_length": grid.train_length,
        "seeds": grid.seeds,
        "runs": grid.runs,
        "depths": [_num(d) for d in grid.depths],
        "lengths": grid.lengths,
        "has_counts": grid.has_counts,
        "stats": stats,
        "per_depth": _marginal_rows(grid.per_depth(), "depth"),
        "per_length": _marginal_rows(grid.per_length(), "length"),
        "cells": _cells_list(grid, samples_per_cell, heat),
        "depth_bins": _depth_bins(grid),
        "heatmap": _figure_dict(heat, out),
        "depth_bars": _figure_dict(bars, out),
    }


def comparison_entry(family: str, grids: list[Grid], threshold: float, png: _Names, out: Path) -> dict[str, Any]:
    """One family across models: per length and effective length per model (with the seed spread), the
    start / middle / end view, and for several models the side-by-side grid and difference maps."""
    table = []
    for grid in grids:
        stats = grid.stats(threshold)
        per_length = grid.per_length()
        bins = _depth_bins(grid)
        table.append(
            {
                "model": grid.model,
                "seeds": grid.seeds,
                "per_length": {str(int(k)): _num(v) for k, v in per_length["acc"].items()},
                "per_length_seeds": {str(int(k)): _spread(r) for k, r in per_length.iterrows()},
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
        entry["side_by_side"] = _figure_dict(figures.side_by_side(grids, png("compare", family)), out)
        base = grids[0]
        for other in grids[1:]:
            fig = figures.difference_map(base, other, png("diff", family, other.model, "vs", base.model))
            entry["differences"].append({"base": base.model, "other": other.model, **_figure_dict(fig, out)})
    return entry


def comparisons(grids: list[Grid], threshold: float, png: _Names, out: Path) -> list[dict[str, Any]]:
    """`comparison_entry` for every family, primary family first."""
    by_family: dict[str, list[Grid]] = {}
    for grid in grids:
        by_family.setdefault(grid.family, []).append(grid)
    return [comparison_entry(family, by_family[family], threshold, png, out)
            for family in sorted(by_family, key=family_sort_key)]


def perplexity_section(loaded: Loaded, summary: dict[str, Any], png: _Names, out: Path) -> None:
    """Perplexity per model (and run) and task, the mean and range over seed replicates, and the curves by
    position; a task without position metrics gets a note instead of a curve."""
    ppl = perplexity_results(loaded.models)
    for r in ppl:
        summary["perplexity"].append(
            {
                "model": r.model,
                "run": r.run,
                "task": r.task,
                "token_perplexity": _num(r.token_perplexity),
                "word_perplexity": _num(r.word_perplexity),
                "bits_per_byte": _num(r.bits_per_byte),
                "positions": [{"lo": lo, "hi": hi, "token_perplexity": _num(v)} for lo, hi, v in r.positions],
            }
        )
    summary["perplexity_seeds"] = _perplexity_over_seeds(summary["perplexity"])
    for task in sorted({r.task for r in ppl}):
        with_positions = [r for r in ppl if r.task == task and r.positions]
        if not with_positions:
            summary["notes"].append(f"{task}: no token_perplexity_pos_* metrics, so no perplexity-by-position curve")
            continue
        fig = figures.perplexity_curves(with_positions, png("ppl", task))
        summary["perplexity_figures"].append({"task": task, **_figure_dict(fig, out)})


def _perplexity_over_seeds(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per replicated model and task: the mean, min and max over its runs of each perplexity metric."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for row in rows:
        if row["run"] is not None:
            groups.setdefault((row["model"], row["task"]), []).append(row)
    out = []
    for (model, task), runs in groups.items():
        entry: dict[str, Any] = {"model": model, "task": task, "seeds": len(runs), "runs": [r["run"] for r in runs]}
        for name in ("token_perplexity", "word_perplexity", "bits_per_byte"):
            values = [r[name] for r in runs if r[name] is not None]
            entry[name] = (
                {"mean": float(np.mean(values)), "min": min(values), "max": max(values),
                 "std": float(np.std(values, ddof=1)) if len(values) > 1 else None}
                if values else None
            )
        out.append(entry)
    return out


def ungridded_notes(built: GridBuild, metric: str) -> list[str]:
    """Why each task without a heatmap has none."""
    notes = []
    for model, task in built.ungridded:
        if is_perplexity_task(task):
            notes.append(f"{model.display} / {task.name}: a perplexity task, so no depth × length heatmap; "
                         "shown in the perplexity section")
            continue
        notes.append(
            f"{model.display} / {task.name}: no depth × length grid (its samples carry no depth_percent and its "
            f"results have no {metric}_dNNN metrics); only its metrics are listed. The report reads depths from the "
            "samples log: run lm-eval with --log_samples (or add --metadata depth_metrics=true for per-depth "
            "metrics in the results)"
        )
    return notes


def headline(grid_entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """What the report leads with: per family (the primary family, passkey, first) and model, the effective
    length (also as a multiple of the training length when known) and the mean, with their range over seeds."""
    rows = []
    for entry in grid_entries:
        s = entry["stats"]
        train, eff = entry["train_length"], s["effective_length"]
        rows.append(
            {
                "family": entry["family"],
                "primary": entry["family"] == PRIMARY_FAMILY,
                "model": entry["model"],
                "metric": entry["metric"],
                "effective_length": eff,
                "train_length": train,
                "effective_multiple": (eff / train) if eff and train else None,
                "longest_length": max(entry["lengths"]) if entry["lengths"] else None,
                "mean": s["mean"],
                "seeds": entry["seeds"],
                "mean_min": s["seed_mean_min"],
                "mean_max": s["seed_mean_max"],
                "mean_std": s["seed_mean_std"],
                "effective_length_min": s["seed_effective_length_min"],
                "effective_length_max": s["seed_effective_length_max"],
            }
        )
    order = {id(row): i for i, row in enumerate(rows)}
    return sorted(rows, key=lambda row: (family_sort_key(row["family"]), order[id(row)]))


def checked_controls(grids: list[Grid], controls: list[str], threshold: float) -> list[dict[str, Any]]:
    """The headline's warnings about controls below the threshold at their training length (`controls.py`); a
    control name that matches no model is refused, naming the models there are."""
    unknown = unknown_controls(grids, controls)
    if unknown:
        models = ", ".join(sorted({grid.model for grid in grids})) or "none with a depth x length grid"
        raise ReportError(f"--control {unknown[0]!r} names no model of this report (models: {models})")
    return control_warnings(grids, controls, threshold)


def write_outputs(summary: dict[str, Any], grids: list[Grid], out: Path, html: bool) -> None:
    """cells.csv (every grid's cells), report.html and summary.json."""
    if grids:
        columns = ["model", "family", "depth", "length", "acc", "n", "ci_low", "ci_high", "source", "pooled_acc",
                   "seeds", "seed_min", "seed_max", "seed_std"]
        pd.concat([g.cells.assign(model=g.model, family=g.family) for g in grids], ignore_index=True)[columns].to_csv(
            out / "cells.csv", index=False
        )
        summary["cells_csv"] = "cells.csv"
    if html:
        from .html import render_html

        (out / "report.html").write_text(render_html(summary, out), encoding="utf-8")
        summary["html"] = "report.html"
    (out / "summary.json").write_text(json.dumps(summary, indent=2, allow_nan=False), encoding="utf-8")


def build_report(
    inputs: Iterable[str | Path],
    out_dir: str | Path,
    *,
    train_lengths: dict[str, int] | None = None,
    threshold: float = 0.8,
    metric: str = "acc",
    samples_per_cell: int = 3,
    html: bool = True,
    controls: Iterable[str] = (),
) -> dict[str, Any]:
    """Build the whole report in ``out_dir`` and return the summary (also written to ``summary.json``).

    Raises ``ReportError`` when nothing at all can be reported (e.g. an empty folder) or a control names no model;
    every smaller problem
    is listed in ``summary["problems"]`` and in the HTML, and the rest is still drawn. ``controls`` names the
    models used as controls: the headline warns when one is below ``threshold`` at its training length.
    """
    inputs = [str(p) for p in inputs]
    loaded = load_inputs(inputs, train_lengths, threshold)
    out = prepare_output(out_dir)
    png = _Names(out)
    built = build_grids(loaded.models, metric)
    warnings = checked_controls(built.grids, list(controls), threshold)  # before drawing: a typo is refused at once
    summary = summary_head(inputs, loaded, metric, threshold,
                           [*built.notes, *skipped_notes(loaded), *invalid_notes(loaded)])
    summary["grids"] = [grid_entry(grid, threshold, png, out, samples_per_cell) for grid in built.grids]
    summary["comparisons"] = comparisons(built.grids, threshold, png, out)
    perplexity_section(loaded, summary, png, out)
    gate_section(loaded, summary, png, out)
    summary["notes"].extend(ungridded_notes(built, metric))
    summary["headline"] = headline(summary["grids"])
    summary["headline_per_length"] = per_length_rows(loaded, metric)  # n and 95 % interval per task and length
    summary["protocol"] = protocol_rows(loaded)  # per NIAH run: protocol=ruler followed, or what differs
    summary["control_warnings"] = warnings
    write_outputs(summary, built.grids, out, html)
    return summary
