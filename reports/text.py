"""The compact terminal view of a report summary: one small percent grid and one statistics line per grid."""
from __future__ import annotations

from typing import Any

import pandas as pd

from .grid import format_depth, format_length


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.0f}"


def render_text(summary: dict[str, Any]) -> str:
    lines: list[str] = []
    for grid in summary["grids"]:
        s = grid["stats"]
        n = f", {s['n_samples']} samples" if s.get("n_samples") is not None else ""
        train = f", trained at {format_length(grid['train_length'])}" if grid.get("train_length") else ""
        lines.append(f"== {grid['model']} · {grid['family']} ({grid['metric']} %{n}{train})")
        frame = pd.DataFrame(grid["cells"]).pivot_table(
            index="depth", columns="length", values="acc", aggfunc="first", dropna=False
        )
        frame = frame.reindex(index=grid["depths"], columns=grid["lengths"])
        frame.index = [format_depth(d) for d in frame.index]
        frame.columns = [format_length(x) for x in frame.columns]
        frame = frame.map(lambda v: "-" if pd.isna(v) else f"{v * 100:.0f}")
        lines.append(frame.to_string())
        if s["mean"] is None:
            lines.append("no accuracy values")
        else:
            eff = format_length(s["effective_length"]) if s["effective_length"] else "none"
            lines.append(
                f"mean {s['mean'] * 100:.1f}%  std {s['std'] * 100:.1f}  "
                f"min {s['min'] * 100:.1f}% @ {format_depth(s['min_depth'])}  "
                f"max {s['max'] * 100:.1f}% @ {format_depth(s['max_depth'])}  -> {s['assessment']}  "
                f"| effective length (>= {summary['threshold'] * 100:.0f}%): {eff}"
            )
        lines.append("")
    for comp in summary["comparisons"]:
        if len(comp["models"]) < 2:
            continue
        lines.append(f"== comparison · {comp['family']} (accuracy % per length, effective length)")
        rows = {}
        for row in comp["table"]:
            ordered = sorted(row["per_length"].items(), key=lambda kv: int(kv[0]))
            rec = {format_length(int(k)): _pct(v) for k, v in ordered}
            rec["eff"] = format_length(row["effective_length"]) if row["effective_length"] else "none"
            rows[row["model"]] = rec
        lines.append(pd.DataFrame(rows).T.fillna("-").to_string())
        lines.append("")
    for comp in summary["comparisons"]:
        lines.append(f"== start / middle / end · {comp['family']} ({summary['metric']} % with the needle in the first, "
                     "middle, last third of the depths; the Infini-attention paper's passkey view)")
        rows = {}
        for row in comp["table"]:
            ordered = sorted(row["start_middle_end"].items(), key=lambda kv: int(kv[0]))
            rows[row["model"]] = {format_length(int(k)): "/".join(_pct(v) for v in vals) for k, vals in ordered}
        lines.append(pd.DataFrame(rows).T.fillna("-").to_string())
        lines.append("")
    if summary["perplexity"]:
        lines.append("== perplexity")
        columns = ["model", "task", "token_perplexity", "word_perplexity", "bits_per_byte"]
        frame = pd.DataFrame(summary["perplexity"])[columns]
        lines.append(frame.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
        lines.append("")
    for label, items in (("problems", summary["problems"]), ("notes", summary["notes"])):
        if items:
            lines.append(f"{label}:")
            lines.extend(f"  - {item}" for item in items)
    return "\n".join(lines).rstrip() + "\n"
