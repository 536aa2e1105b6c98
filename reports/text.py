"""The compact terminal view of a report summary: the headline first, then one small percent grid and one
statistics line per grid, the per-length comparisons, the start / middle / end view and perplexity."""
from __future__ import annotations

import functools
from typing import Any

import pandas as pd

from .formatting import effective, format_depth, format_length, percent, percent_range
from .ruler_table import per_length_text


#: Percents in the terminal view: no unit (the headers say %), ASCII ``-`` for a missing value.
_pct = functools.partial(percent, unit="", missing="-")


def _headline(summary: dict[str, Any]) -> list[str]:
    rows = summary.get("headline") or []
    if not rows:
        return []
    lines = [f"== headline ({summary['metric']}; effective length: the longest length at which it and every shorter "
             f"length reach {summary['threshold'] * 100:.0f}%)"]
    records = []
    for row in rows:
        eff = effective(row["effective_length"])
        if row["effective_multiple"]:
            eff += f" ({row['effective_multiple']:g}× training)"
        if row["seeds"] > 1 and row["effective_length_min"] != row["effective_length_max"]:
            eff += f" [seeds {effective(row['effective_length_min'])}–{effective(row['effective_length_max'])}]"
        mean = percent(row["mean"], 1, missing="-")
        if row["seeds"] > 1 and row["mean_min"] is not None:
            mean += f" [seeds {percent_range(row['mean_min'], row['mean_max'])}, sd {row['mean_std'] * 100:.1f}]"
        records.append({"family": row["family"], "model": row["model"], "effective length": eff, "mean": mean,
                        "seeds": row["seeds"]})
    frame = pd.DataFrame(records)
    if (frame["seeds"] == 1).all():
        frame = frame.drop(columns="seeds")
    lines.append(frame.to_string(index=False))
    if summary.get("headline_per_length"):
        lines += ["", f"per task and length ({summary['metric']}, 95 % Wilson interval, n documents):",
                  *per_length_text(summary["headline_per_length"])]
    lines.append("")
    return lines


def _control_warnings(summary: dict[str, Any]) -> list[str]:
    """The headline's warnings about controls that fail at their own training length (reports/controls.py)."""
    warnings = summary.get("control_warnings") or []
    return [f"WARNING: {w['text']}" for w in warnings] + ([""] if warnings else [])


def _grid(grid: dict[str, Any], threshold: float) -> list[str]:
    s = grid["stats"]
    n = f", {s['n_samples']} samples" if s.get("n_samples") is not None else ""
    n = f", mean of {grid['seeds']} seeds{n} pooled" if grid.get("seeds", 1) > 1 else n
    train = f", trained at {format_length(grid['train_length'])}" if grid.get("train_length") else ""
    lines = [f"== {grid['model']} · {grid['family']} ({grid['metric']} %{n}{train})"]
    frame = pd.DataFrame(grid["cells"]).pivot_table(
        index="depth", columns="length", values="acc", aggfunc="first", dropna=False
    )
    frame = frame.reindex(index=grid["depths"], columns=grid["lengths"])
    frame.index = [format_depth(d) for d in frame.index]
    frame.columns = [format_length(x) for x in frame.columns]
    frame = frame.map(_pct)
    lines.append(frame.to_string())
    if s["mean"] is None:
        lines.append("no accuracy values")
    else:
        lines.append(
            f"mean {s['mean'] * 100:.1f}%  std {s['std'] * 100:.1f}  "
            f"min {s['min'] * 100:.1f}% @ {format_depth(s['min_depth'])}  "
            f"max {s['max'] * 100:.1f}% @ {format_depth(s['max_depth'])}  -> {s['assessment']}  "
            f"| effective length (>= {threshold * 100:.0f}%): {effective(s['effective_length'])}"
        )
    if grid.get("seeds", 1) > 1:
        per_seed = ", ".join(
            f"{r['run']} {_pct(r['mean'])}% / {effective(r['effective_length'])}" for r in s["per_seed"]
        )
        lines.append(f"seeds (mean / effective length): {per_seed}")
        lines.append("per length, mean [seed min–max, sd] (pooled 95% Wilson): " + "  ".join(
            f"{format_length(r['length'])} {_pct(r['acc'])} [{percent_range(r['seed_min'], r['seed_max'])}"
            + (f", sd {r['seed_std'] * 100:.1f}" if r["seed_std"] is not None else "") + "]"
            + (f" ({percent_range(r['ci_low'], r['ci_high'])})" if r["ci_low"] is not None else "")
            for r in grid["per_length"]
        ))
    lines.append("")
    return lines


def _comparisons(summary: dict[str, Any]) -> list[str]:
    lines = []
    for comp in summary["comparisons"]:
        if len(comp["models"]) < 2:
            continue
        lines.append(f"== comparison · {comp['family']} (accuracy % per length, effective length"
                     + ("; [seed min–max]" if any(r.get("seeds", 1) > 1 for r in comp["table"]) else "") + ")")
        rows = {}
        for row in comp["table"]:
            ordered = sorted(row["per_length"].items(), key=lambda kv: int(kv[0]))
            spreads = row.get("per_length_seeds", {})
            rec = {}
            for k, v in ordered:
                spread = spreads.get(k, {})
                seeds = percent_range(spread.get("seed_min"), spread.get("seed_max")) if row.get("seeds", 1) > 1 else ""
                rec[format_length(int(k))] = _pct(v) + (f" [{seeds}]" if seeds else "")
            rec["eff"] = effective(row["effective_length"])
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
    return lines


def _perplexity(summary: dict[str, Any]) -> list[str]:
    if not summary["perplexity"]:
        return []
    lines = ["== perplexity"]
    columns = ["model", "task", "token_perplexity", "word_perplexity", "bits_per_byte"]
    frame = pd.DataFrame(summary["perplexity"])
    if frame["run"].notna().any():
        columns.insert(1, "run")
        frame["run"] = frame["run"].fillna("")
    lines.append(frame[columns].to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    for entry in summary.get("perplexity_seeds") or []:
        ppl, bpb = entry["token_perplexity"], entry["bits_per_byte"]
        text = f"{entry['model']} · {entry['task']}: mean of {entry['seeds']} seeds"
        if ppl:
            text += f", token perplexity {ppl['mean']:.3f} [{ppl['min']:.3f}–{ppl['max']:.3f}]"
        if bpb:
            text += f", bits per byte {bpb['mean']:.4f} [{bpb['min']:.4f}–{bpb['max']:.4f}]"
        lines.append(text)
    lines.append("")
    return lines


def _gates(summary: dict[str, Any]) -> list[str]:
    """One line per Infini checkpoint whose gates the report drew (reports/gate_section.py): its head counts."""
    drawn = [e for e in summary.get("gates") or [] if e["figure"]]
    if not drawn:
        return []
    return ["== gates g = act(β) per layer and head (heatmaps in report.html; `infini-bench inspect` for more)",
            *(f"{e['model']}: {e['kinds_text']}" for e in drawn), ""]


def render_text(summary: dict[str, Any]) -> str:
    lines: list[str] = _headline(summary) + _control_warnings(summary)
    for grid in summary["grids"]:
        lines.extend(_grid(grid, summary["threshold"]))
    lines.extend(_comparisons(summary))
    lines.extend(_perplexity(summary))
    lines.extend(_gates(summary))
    for label, items in (("problems", summary["problems"]), ("notes", summary["notes"])):
        if items:
            lines.append(f"{label}:")
            lines.extend(f"  - {item}" for item in items)
    return "\n".join(lines).rstrip() + "\n"
