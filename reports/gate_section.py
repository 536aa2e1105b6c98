"""The report's "What the gates learnt" section: for every Infini model it reports on, the layer × head heatmap of
g = act(β), read from the checkpoint named by the lm-eval run's ``pretrained`` model arg (files only; see
`gates`). A folder that is gone, or a run with the memory off, gets a sentence instead of a figure."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.colors import TwoSlopeNorm

from .figures import DPI, Figure, _save, text_colour
from .gates import LOCAL_ONLY, MEMORY_ONLY, GateReadError, GateTable, read_gates
from .records import Loaded, ModelRuns

#: blue: local (g → 0), white: an even mix (g = 0.5, where HF's heads got stuck), red: memory (g → 1)
GATE_CMAP = plt.get_cmap("RdBu_r")
#: the `--model` names whose checkpoints carry Infini gates
INFINI_MODEL_TYPES = ("infini",)


def gate_heatmap(table: GateTable, path: Path, title: str) -> Figure:
    """Layers (rows, layer 0 at the top) × query heads (columns), coloured on the activation's own range with
    0.5 (an even mix) white; each cell annotated with g while the table is small enough to read."""
    g = table.g
    layers, heads = g.shape
    low, high = table.g_range
    norm = TwoSlopeNorm(vmin=low, vcenter=0.5, vmax=high)
    fig, ax = plt.subplots(figsize=(max(4.2, 1.9 + 0.5 * heads), max(2.6, 1.5 + 0.34 * layers)), dpi=DPI,
                           layout="constrained")
    image = ax.imshow(g, cmap=GATE_CMAP, norm=norm, aspect="auto", interpolation="nearest")
    ax.set_xticks(range(heads), [str(h) for h in range(heads)], fontsize=8 if heads <= 16 else 6)
    ax.set_yticks(range(layers), [str(i) for i in range(layers)], fontsize=8 if layers <= 24 else 6)
    ax.set_xlabel("query head")
    ax.set_ylabel("layer")
    if heads <= 16 and layers <= 32:
        for i in range(layers):
            for j in range(heads):
                ax.text(j, i, f"{g[i, j]:.2f}", ha="center", va="center", fontsize=7,
                        color=text_colour(GATE_CMAP(norm(g[i, j]))))
    kinds = table.kinds
    ax.set_title(f"{title}\n{kinds.memory_only} memory-only (g > {MEMORY_ONLY:g}) · {kinds.local_only} local-only "
                 f"(|g| < {LOCAL_ONLY:g}) · {kinds.mixers} mixers", fontsize=9)
    bar = fig.colorbar(image, ax=ax, fraction=0.06, pad=0.02)
    bar.set_label(f"g = {table.activation}(β): 0 local, 1 memory", fontsize=8)
    return _save(fig, path)


def _memory_off(model: ModelRuns) -> bool:
    return model.model_args.get("use_memory", "").strip().lower() in ("false", "0", "no")


def gate_entry(model: ModelRuns, draw: Callable[[GateTable, str], dict[str, Any]],
               drawn: dict[Path, dict[str, Any]]) -> dict[str, Any]:
    """One Infini model: its gates and figure, or the sentence saying why there is none. `drawn` maps each
    checkpoint already drawn to its figure, so a checkpoint evaluated twice is read and drawn once."""
    entry: dict[str, Any] = {"model": model.display, "checkpoint": model.model_args.get("pretrained"),
                             "activation": None, "kinds": None, "kinds_text": None, "figure": None, "note": None}
    if not entry["checkpoint"]:
        entry["note"] = f"{model.display}: its lm-eval run names no pretrained checkpoint, so its gates are not shown"
        return entry
    folder = Path(entry["checkpoint"]).expanduser()
    try:
        table = read_gates(folder)
    except GateReadError as err:
        entry["note"] = f"{model.display}: no gate figure: {err}"
        return entry
    g = table.g
    entry.update(activation=table.activation, layers=int(g.shape[0]), heads=int(g.shape[1]),
                 g=np.round(g, 4).tolist(), kinds=table.kinds.as_dict(), kinds_text=table.kinds.sentence())
    if _memory_off(model) or not table.use_memory:
        entry["note"] = (f"{model.display}: evaluated with the memory off (use_memory=False), so its gates took no "
                         "part in its scores and are not drawn for it")
        return entry
    key = folder.resolve()
    if key not in drawn:
        drawn[key] = draw(table, f"{model.display}: gates g = {table.activation}(β)")
    entry["figure"] = drawn[key]
    return entry


def gate_section(loaded: Loaded, summary: dict[str, Any], png: Callable[..., Path], out: Path) -> None:
    """`summary["gates"]`: one entry per Infini model (`gate_entry`); every missing figure is also a note."""
    drawn: dict[Path, dict[str, Any]] = {}

    def draw(table: GateTable, title: str) -> dict[str, Any]:
        fig = gate_heatmap(table, png("gates", title.split(":")[0]), title)
        return {"file": fig.path.relative_to(out).as_posix(), "width": fig.width, "height": fig.height}

    summary["gates"] = [gate_entry(m, draw, drawn) for m in loaded.models if m.model_type in INFINI_MODEL_TYPES]
    summary["notes"].extend(e["note"] for e in summary["gates"] if e["figure"] is None and e["note"])
