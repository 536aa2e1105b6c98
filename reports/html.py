"""Render ``report.html`` from the summary with a Jinja2 template; every image is embedded as a data: URI so the
single file opens from disk, offline, anywhere (no scripts, fonts or styles are fetched)."""
from __future__ import annotations

import base64
import math
from pathlib import Path
from typing import Any

import jinja2
import pandas as pd
from matplotlib.colors import to_hex

from .figures import accuracy_colour, text_colour
from .formatting import effective, format_bucket, format_depth, format_length, percent, percent_range
from .ruler_table import per_length_html

TEMPLATES = Path(__file__).with_name("templates")


def _data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}" if abs(value) < 1e5 else f"{value:.4g}"
    return str(value)


def _cell_colour(acc: float | None) -> str:
    return "#d9d9d9" if acc is None else to_hex(accuracy_colour(acc * 100.0))


def _ink(acc: float | None) -> str:
    """Text colour readable on the cell colour (white on the dark ends of the scale)."""
    return "black" if acc is None else text_colour(accuracy_colour(acc * 100.0))


def _table(df: pd.DataFrame, index: bool = False) -> str:
    """pandas renders (and escapes) the plain tables."""
    return df.to_html(index=index, escape=True, border=0, classes="data", na_rep="–")


def _seed_range(low: float | None, high: float | None, std: float | None = None) -> str:
    """``seeds 85–95%, sd 4.1`` for a range over seed replicates; empty for a single run."""
    if low is None or high is None:
        return ""
    return f"seeds {percent_range(low, high)}%" + (f", sd {std * 100:.1f}" if std is not None else "")


def _headline_table(summary: dict[str, Any]) -> str:
    """Per family (primary first) and model: the effective length and the mean, with their range over seeds."""
    rows = []
    for row in summary["headline"]:
        notes = [f"{row['effective_multiple']:g}× training length"] if row["effective_multiple"] else []
        mean = percent(row["mean"], 1)
        if row["seeds"] > 1:
            low, high = row["effective_length_min"], row["effective_length_max"]
            notes.append(f"seeds {effective(low)}–{effective(high)}" if high != low else "every seed")
            mean += f" ({_seed_range(row['mean_min'], row['mean_max'], row['mean_std'])})"
        eff = effective(row["effective_length"]) + (f" ({'; '.join(notes)})" if notes else "")
        rows.append({"family": row["family"], "model": row["model"], "effective length": eff, "mean": mean,
                     "seeds": row["seeds"],
                     "longest length tested": format_length(row["longest_length"])})
    frame = pd.DataFrame(rows)
    if not frame.empty and (frame["seeds"] == 1).all():
        frame = frame.drop(columns="seeds")
    return _table(frame)


def _comparison_table(entry: dict[str, Any]) -> str:
    rows = []
    for row in entry["table"]:
        record: dict[str, Any] = {"model": row["model"]}
        spreads = row.get("per_length_seeds", {})
        for length, acc in sorted(row["per_length"].items(), key=lambda kv: int(kv[0])):
            record[format_length(int(length))] = percent(acc, 1)
            spread = spreads.get(length, {})
            if row.get("seeds", 1) > 1 and spread.get("seed_min") is not None:
                seeds = _seed_range(spread["seed_min"], spread["seed_max"], spread["seed_std"])
                record[format_length(int(length))] += f" ({seeds})"
        record["mean"] = percent(row["mean"], 1)
        record["effective length"] = effective(row["effective_length"])
        rows.append(record)
    return _table(pd.DataFrame(rows).fillna("–"))


def _bins_table(entry: dict[str, Any]) -> str:
    """The paper's view: per model and length, the score with the needle in the start / middle / end third."""
    rows = []
    for row in entry["table"]:
        record: dict[str, Any] = {"model": row["model"]}
        for length, values in sorted(row["start_middle_end"].items(), key=lambda kv: int(kv[0])):
            record[format_length(int(length))] = " / ".join(percent(v) for v in values)
        rows.append(record)
    return _table(pd.DataFrame(rows).fillna("–"))


def _grid_rows(grid: dict[str, Any]) -> list[dict[str, Any]]:
    """Rows (depths) of the interval table, each cell with its colour and anchor for the sample details."""
    by_key = {(c["depth"], c["length"]): c for c in grid["cells"]}
    rows = []
    for depth in grid["depths"]:
        cells = []
        for length in grid["lengths"]:
            cell = by_key.get((depth, length))
            cells.append(
                {
                    "cell": cell,
                    "colour": _cell_colour(cell["acc"] if cell else None),
                    "ink": _ink(cell["acc"] if cell else None),
                    "text": percent(cell["acc"]) if cell else "–",
                    "seeds": (_seed_range(cell["seed_min"], cell["seed_max"])
                              if cell and (cell.get("seeds") or 1) > 1 else ""),
                    "ci": (
                        f"[{percent(cell['ci_low'])}–{percent(cell['ci_high'])}]"
                        if cell and cell["ci_low"] is not None
                        else ""
                    ),
                    "n": cell["n"] if cell else None,
                }
            )
        rows.append({"depth": format_depth(depth), "cells": cells})
    return rows


def _overlay(grid: dict[str, Any]) -> list[dict[str, Any]]:
    """Clickable boxes over the heatmap, in percent of the image so they follow the image when it is scaled."""
    width, height = grid["heatmap"]["width"], grid["heatmap"]["height"]
    boxes = []
    for cell in grid["cells"]:
        if not cell.get("pixel_box"):
            continue
        x0, y0, x1, y1 = cell["pixel_box"]
        boxes.append(
            {
                "left": 100.0 * x0 / width,
                "top": 100.0 * y0 / height,
                "width": 100.0 * (x1 - x0) / width,
                "height": 100.0 * (y1 - y0) / height,
                "anchor": cell_anchor(grid, cell),
                "title": f"depth {format_depth(cell['depth'])}, {format_length(cell['length'])}: {percent(cell['acc'], 1)}"
                + (f" n={cell['n']}" if cell["n"] is not None else ""),
            }
        )
    return boxes


def cell_anchor(grid: dict[str, Any], cell: dict[str, Any]) -> str:
    raw = f"cell-{grid['model']}-{grid['family']}-{cell['depth']:g}-{cell['length']}"
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in raw)


def _grid_view(grid: dict[str, Any]) -> dict[str, Any]:
    """One grid of the summary with what its section of the page draws: the interval table, the clickable
    overlay, the cells' anchors and the section's id."""
    return {
        **grid,
        "rows": _grid_rows(grid),
        "overlay": _overlay(grid),
        "anchors": {(c["depth"], c["length"]): cell_anchor(grid, c) for c in grid["cells"]},
        "id": cell_anchor(grid, {"depth": 0, "length": 0}).replace("cell-", "grid-"),
    }


def _perplexity_table(summary: dict[str, Any]) -> str:
    """Per model (and run, with seed replicates) and task: token and word perplexity and bits per byte."""
    if not summary["perplexity"]:
        return ""
    with_runs = any(p.get("run") for p in summary["perplexity"])
    return _table(pd.DataFrame([
        {
            "model": p["model"],
            **({"run": p.get("run") or ""} if with_runs else {}),
            "task": p["task"],
            "token perplexity": _fmt(p["token_perplexity"]),
            "word perplexity": _fmt(p["word_perplexity"]),
            "bits per byte": _fmt(p["bits_per_byte"], 4),
        }
        for p in summary["perplexity"]
    ]))


def _perplexity_seeds_table(summary: dict[str, Any]) -> str:
    """Seed replicates' perplexity: the mean over runs with its min–max."""
    if not summary["perplexity"] or not summary.get("perplexity_seeds"):
        return ""
    return _table(pd.DataFrame([
        {"model": e["model"], "task": e["task"], "seeds": e["seeds"],
         **{label: (f"{e[name]['mean']:.{d}f} [{e[name]['min']:.{d}f}–{e[name]['max']:.{d}f}]" if e[name] else "–")
            for name, label, d in (("token_perplexity", "token perplexity", 3), ("bits_per_byte", "bits per byte", 4))}}
        for e in summary["perplexity_seeds"]
    ]))


def _perplexity_positions_table(summary: dict[str, Any]) -> str:
    """Token perplexity by position bucket: one row per task and model (run), one column per bucket."""
    rows = [
        {"model": p["model"] if not p.get("run") else f"{p['model']} [{p['run']}]", "task": p["task"],
         "bucket": format_bucket(q["lo"], q["hi"]), "token perplexity": q["token_perplexity"]}
        for p in summary["perplexity"]
        for q in p["positions"]
    ]
    if not rows:
        return ""
    frame = pd.DataFrame(rows)
    order = list(dict.fromkeys(frame["bucket"]))
    # dropna=False: a bucket of only invalid documents (NaN, non_finite=invalid) keeps its column
    pivot = frame.pivot_table(index=["task", "model"], columns="bucket", values="token perplexity",
                              aggfunc="first", dropna=False)[order]
    return _table(pivot.map(_fmt), index=True)


def _metrics_table(summary: dict[str, Any]) -> str:
    """Every metric lm-eval reported, with its stderr (the run column only with seed replicates)."""
    if not summary["metrics"]:
        return ""
    frame = pd.DataFrame(summary["metrics"])
    if "run" in frame and frame["run"].isna().all():
        frame = frame.drop(columns="run")
    frame["value"] = frame["value"].map(_fmt)
    frame["stderr"] = frame["stderr"].map(_fmt)
    return _table(frame)


def _models_table(summary: dict[str, Any]) -> str:
    """What each label stands for: name, model type and args, training length, tasks and results files."""
    with_runs = any(x.get("run") for x in summary["models"])
    return _table(pd.DataFrame([
        {
            "model": m["label"],
            **({"run": m.get("run") or ""} if with_runs else {}),
            "name": m["name"],
            "type": m["model_type"],
            "model args": ", ".join(f"{k}={v}" for k, v in m["model_args"].items()),
            "training length": (format_length(m["train_length"]) + f" ({m['train_length_source']})")
            if m["train_length"] else "unknown",
            "tasks": ", ".join(m["tasks"]),
            "results files": ", ".join(Path(f).name for f in m["results_files"]),
        }
        for m in summary["models"]
    ]))


def render_html(summary: dict[str, Any], out_dir: Path) -> str:
    """The report page; images are read from ``out_dir`` (where ``build_report`` wrote them) and inlined."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATES)),
        autoescape=jinja2.select_autoescape(["html", "j2"], default=True),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(pct=percent, fmt=_fmt, toklen=format_length, depth=format_depth)
    images: dict[str, str] = {}

    def embed(fig: dict[str, Any]) -> str:
        if fig["file"] not in images:
            images[fig["file"]] = _data_uri(out_dir / fig["file"])
        return images[fig["file"]]

    template = env.get_template("report.html.j2")
    return template.render(
        summary=summary,
        headline_table=(_headline_table(summary) if summary.get("headline") else "") + per_length_html(summary),
        ppl_seeds=_perplexity_seeds_table(summary),
        grids=[_grid_view(grid) for grid in summary["grids"]],
        comparisons=[{**c, "html_table": _comparison_table(c), "bins_table": _bins_table(c)}
                     for c in summary["comparisons"]],
        ppl_table=_perplexity_table(summary),
        ppl_positions=_perplexity_positions_table(summary),
        metrics_table=_metrics_table(summary),
        models_table=_models_table(summary),
        embed=embed,
        legend=[{"value": v, "colour": _cell_colour(v / 100), "ink": _ink(v / 100)} for v in range(0, 101, 10)],
    )
