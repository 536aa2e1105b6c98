"""The terminal view of `infini-bench inspect`: small tables with a shade per cell, so a glance shows which heads
read memory and where in the document the memory is used; the exact numbers are in `--json`."""
from __future__ import annotations

from typing import Any

import numpy as np

#: nine levels, 0 → " " … 1 → "█"
SHADES = " ▁▂▃▄▅▆▇█"
#: at most this many segment columns; longer documents average neighbouring segments into one column
MAX_COLUMNS = 64
#: above this many heads the gate and share tables show shades only
MAX_NUMBERED_HEADS = 16


def shade(value: float, low: float = 0.0, high: float = 1.0) -> str:
    position = (float(value) - low) / (high - low)
    return SHADES[int(round(min(max(position, 0.0), 1.0) * (len(SHADES) - 1)))]


def _head_table(values: np.ndarray, low: float, high: float, kinds: list[str] | None = None) -> list[str]:
    layers, heads = values.shape
    numbered = heads <= MAX_NUMBERED_HEADS
    width = 7 if numbered else 1
    header = "".join(f"{f'h{h}':>{width - 1}} " for h in range(heads)) if numbered else f"heads 0 → {heads - 1}"
    lines = ["          " + header]
    for i in range(layers):
        cells = "".join(f"{values[i, j]:6.2f}{shade(values[i, j], low, high)}" if numbered
                        else shade(values[i, j], low, high) for j in range(heads))
        lines.append(f"layer {i:<3} {cells}" + (f"   {kinds[i]}" if kinds else ""))
    return lines


def _columns(row: np.ndarray) -> tuple[np.ndarray, int]:
    """The per-segment row averaged into at most MAX_COLUMNS columns, and how many segments each column holds."""
    per = max(1, -(-row.size // MAX_COLUMNS))
    return np.array([row[i : i + per].mean() for i in range(0, row.size, per)]), per


def render(report: dict[str, Any]) -> str:
    """The whole terminal view of an inspect report (the dict `--json` writes)."""
    m, gates = report["model"], report["gates"]
    low, high = gates["range"]
    lines = [f"checkpoint  {report['checkpoint']}",
             f"model       {m['layers']} layers × {m['heads']} query heads ({m['kv_heads']} kv heads), segments of "
             f"{m['segment_length']} tokens, memory {m['memory_update']}, gate g = {gates['activation']}(β) in "
             f"[{low:g}, {high:g}]", "",
             f"gates g per layer and query head (shade: blank = {low:g}, local … {SHADES[-1]} = {high:g}, memory)"]
    kinds = [f"{k['memory_only']} memory-only, {k['local_only']} local-only, {k['mixers']} mixers"
             for k in gates["per_layer_kinds"]]
    lines += _head_table(np.array(gates["g"]), low, high, kinds)
    lines += [f"all       {gates['kinds_text']}", ""]
    if not m["use_memory"]:
        lines.append("memory is off in this model (use_memory=False): the gates take no part in its outputs and no "
                     "output comes from memory")
        return "\n".join(lines) + "\n"
    share = report.get("memory_share")
    if share is None:
        lines.append("memory share not measured (--gates-only)")
        return "\n".join(lines) + "\n"
    doc = report["document"]
    where = f"; needle in segment {doc['needle_segment']}" if doc.get("needle_segment") is not None else ""
    lines += [f"memory share on {doc['description']} ({share['segments']} segments{where})",
              "share = |g·A_mem| / (|g·A_mem| + |(1 − g)·A_local|) per head and token (0: all local, 1: all memory)"]
    rows = np.array(share["per_layer_segment"], dtype=float)
    cols, per = _columns(rows[0])
    span = f"one column per {per} segments" if per > 1 else "one column per segment"
    lines.append(f"          mean*  per segment, 0 → {rows.shape[1] - 1} ({span}; shade: blank = 0 … "
                 f"{SHADES[-1]} = 1)")
    for i, row in enumerate(rows):
        mean = share["per_layer"][i] if share["per_layer"] is not None else float("nan")
        lines.append(f"layer {i:<3} {mean:5.2f}  |" + "".join(shade(v) for v in _columns(row)[0]) + "|")
    lines.append("* mean over heads and the tokens after segment 0 (segment 0 reads an empty memory)")
    if share["per_layer_head"] is not None:
        lines += ["", "memory share per layer and query head (tokens after segment 0), to set beside g above"]
        lines += _head_table(np.array(share["per_layer_head"], dtype=float), 0.0, 1.0)
    return "\n".join(lines) + "\n"
