"""Matplotlib figures: heatmaps (single, side by side, difference), per-depth bars, perplexity by position.

Every figure is saved at a fixed size and dpi without ``bbox_inches="tight"``, so the pixel box of each heatmap
cell computed here is exactly where the cell is in the PNG; the HTML uses these boxes to make cells clickable.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.colors import Colormap, TwoSlopeNorm  # noqa: E402

from .formatting import format_bucket, format_depth, format_length  # noqa: E402
from .grid import Grid, PerplexityResult  # noqa: E402

DPI = 100
#: Fixed accuracy scale: red (0 %) -> yellow (50 %) -> green (100 %), identical in every heatmap.
ACCURACY_CMAP: Colormap = matplotlib.colormaps["RdYlGn"].with_extremes(bad="#d9d9d9")
DIFF_CMAP: Colormap = matplotlib.colormaps["RdBu"].with_extremes(bad="#d9d9d9")


@dataclass
class Figure:
    """A written PNG, its pixel size, and (for heatmaps) each cell's pixel box (x0, y0, x1, y1), top-left origin."""

    path: Path
    width: int
    height: int
    cells: dict[tuple[float, int], tuple[int, int, int, int]] = field(default_factory=dict)


def accuracy_colour(value_percent: float) -> tuple[float, float, float]:
    """The RGB (0–1) a cell with this accuracy (0–100) gets; tests and the HTML legend use the same mapping."""
    r, g, b, _ = ACCURACY_CMAP(np.clip(value_percent / 100.0, 0.0, 1.0))
    return (r, g, b)


def text_colour(rgb: tuple[float, ...]) -> str:
    luminance = 0.2126 * rgb[0] + 0.7152 * rgb[1] + 0.0722 * rgb[2]
    return "black" if luminance > 0.45 else "white"


def _train_line_x(lengths: list[int], train_length: int) -> float:
    """x of the boundary right of the last column that is within the training length (columns are at 0..n-1)."""
    inside = [i for i, length in enumerate(lengths) if length <= train_length]
    return (inside[-1] + 0.5) if inside else -0.5


def _train_marker(fig: plt.Figure, ax: plt.Axes, lengths: list[int], train_length: int) -> None:
    """Dashed line right of the last column within the training length, explained in a legend under the plot."""
    line = ax.axvline(_train_line_x(lengths, train_length), color="black", linestyle="--", linewidth=2,
                      label=f"training length {format_length(train_length)} (columns left of the line)")
    fig.legend(handles=[line], loc="outside lower center", fontsize=8, frameon=False)


def _draw_grid(
    ax: plt.Axes,
    values: np.ndarray,
    depths: list[float],
    lengths: list[int],
    counts: np.ndarray | None,
    cmap: Colormap,
    norm,
    fmt: Callable[[float], str] = "{:.0f}".format,
    show_counts: bool = True,
) -> matplotlib.image.AxesImage:
    image = ax.imshow(
        np.ma.masked_invalid(values), cmap=cmap, norm=norm, aspect="auto", interpolation="nearest", origin="upper"
    )
    ax.set_xticks(range(len(lengths)), [format_length(x) for x in lengths])
    ax.set_yticks(range(len(depths)), [format_depth(d) for d in depths])
    ax.set_xlabel("context length (tokens)")
    ax.set_ylabel("needle depth")
    ax.set_xticks(np.arange(-0.5, len(lengths), 1), minor=True)
    ax.set_yticks(np.arange(-0.5, len(depths), 1), minor=True)
    ax.grid(which="minor", color="white", linewidth=1.5)
    ax.tick_params(which="minor", length=0)
    font = 10 if len(depths) <= 12 and len(lengths) <= 10 else 7
    for i in range(len(depths)):
        for j in range(len(lengths)):
            value = values[i, j]
            if math.isnan(value):
                ax.text(j, i, "–", ha="center", va="center", fontsize=font, color="#555555")
                continue
            colour = text_colour(cmap(norm(value)))
            label = fmt(value)
            if show_counts and counts is not None and not math.isnan(counts[i, j]):
                label += f"\nn={int(counts[i, j])}"
            ax.text(j, i, label, ha="center", va="center", fontsize=font, color=colour, linespacing=1.1)
    return image


def _cell_boxes(fig: plt.Figure, ax: plt.Axes, depths: list[float], lengths: list[int]) -> dict:
    """Pixel box of every cell in the saved PNG (y measured from the top). Called after `savefig`, whose draw at
    the figure's own DPI placed the axes (constrained layout) where they are in the file."""
    height = fig.canvas.get_width_height()[1]
    boxes = {}
    for i, depth in enumerate(depths):
        for j, length in enumerate(lengths):
            (xa, ya), (xb, yb) = ax.transData.transform([(j - 0.5, i - 0.5), (j + 0.5, i + 0.5)])
            top, bottom = sorted((height - ya, height - yb))
            left, right = sorted((xa, xb))
            boxes[(depth, length)] = (round(left), round(top), round(right), round(bottom))
    return boxes


def _save(fig: plt.Figure, path: Path, grid: tuple[plt.Axes, list[float], list[int]] | None = None) -> Figure:
    """Write the PNG; with `grid` (the heatmap's axes, depths, lengths), also each cell's pixel box in it."""
    width, height = fig.canvas.get_width_height()
    fig.savefig(path, dpi=DPI, format="png")
    cells = _cell_boxes(fig, *grid) if grid else {}
    plt.close(fig)
    return Figure(path=path, width=width, height=height, cells=cells)


def _grid_size(n_depths: int, n_lengths: int) -> tuple[float, float]:
    return (max(5.0, 2.6 + 0.95 * n_lengths), max(3.4, 1.6 + 0.42 * n_depths))


def heatmap(grid: Grid, path: Path, title: str | None = None) -> Figure:
    """Depth (y, 0 % at the top) × length (x) accuracy on the fixed 0–100 % scale, annotated, with the
    training length as a dashed vertical line when it is known."""
    depths, lengths = grid.depths, grid.lengths
    values = grid.pivot("acc").to_numpy(dtype=float) * 100.0
    counts = grid.pivot("n").to_numpy(dtype=float) if grid.cells["n"].notna().any() else None
    uniform_n = None
    if counts is not None:
        known = counts[~np.isnan(counts)]
        if known.size and (known == known[0]).all():
            uniform_n = int(known[0])
    fig, ax = plt.subplots(figsize=_grid_size(len(depths), len(lengths)), dpi=DPI, layout="constrained")
    norm = plt.Normalize(0, 100)
    image = _draw_grid(ax, values, depths, lengths, counts, ACCURACY_CMAP, norm, show_counts=uniform_n is None)
    subtitle = f" (n={uniform_n} per cell)" if uniform_n is not None else ""
    if grid.seeds > 1:
        subtitle = f", mean of {grid.seeds} seeds" + (f" (n={uniform_n} pooled per cell)" if uniform_n else "")
    ax.set_title(title or f"{grid.model} · {grid.family}: {grid.metric} %{subtitle}", fontsize=11)
    if grid.train_length:
        _train_marker(fig, ax, lengths, grid.train_length)
    bar = fig.colorbar(image, ax=ax, fraction=0.05, pad=0.02)
    bar.set_label(f"{grid.metric} %")
    return _save(fig, path, (ax, depths, lengths))


def depth_bars(grid: Grid, path: Path, mean: float | None) -> Figure:
    """Accuracy per depth over all lengths, bars coloured on the heatmap scale, Wilson intervals as error bars;
    for seed replicates the bar is the mean over the runs and each run's value is a dot."""
    per_depth = grid.per_depth()
    depths = per_depth.index.tolist()
    values = per_depth["acc"].to_numpy(dtype=float) * 100.0
    fig, ax = plt.subplots(figsize=(max(5.0, 1.5 + 0.5 * len(depths)), 3.4), dpi=DPI, layout="constrained")
    colours = [accuracy_colour(v) if not math.isnan(v) else (0.85, 0.85, 0.85) for v in values]
    x = np.arange(len(depths))
    ax.bar(x, np.nan_to_num(values), color=colours, edgecolor="#333333", linewidth=0.6)
    if per_depth["ci_low"].notna().any():
        low = values - per_depth["ci_low"].to_numpy(dtype=float) * 100.0
        high = per_depth["ci_high"].to_numpy(dtype=float) * 100.0 - values
        ax.errorbar(x, values, yerr=np.clip(np.nan_to_num(np.vstack([low, high])), 0.0, None), fmt="none",
                    ecolor="#333333", capsize=3, linewidth=1)
    for i, run in enumerate(grid.replicates):
        seed_values = run.per_depth()["acc"].reindex(depths).to_numpy(dtype=float) * 100.0
        ax.scatter(x, seed_values, s=14, color="black", zorder=3, label="each seed" if i == 0 else None)
    if mean is not None:
        ax.axhline(mean * 100.0, color="black", linestyle="--", linewidth=1, label=f"mean {mean * 100:.1f}%")
    if mean is not None or grid.replicates:
        ax.legend(loc="lower right", fontsize=8)
    ax.set_xticks(x, [format_depth(d) for d in depths])
    ax.set_ylim(0, 105)
    ax.set_xlabel("needle depth")
    ax.set_ylabel(f"{grid.metric} % (all lengths)")
    ax.set_title(f"{grid.model} · {grid.family}: {grid.metric} by depth", fontsize=11)
    return _save(fig, path)


def side_by_side(grids: list[Grid], path: Path) -> Figure:
    """The same family for several models on one shared depth/length axis and one 0–100 % scale."""
    depths = sorted({d for g in grids for d in g.depths})
    lengths = sorted({x for g in grids for x in g.lengths})
    w, h = _grid_size(len(depths), len(lengths))
    fig, axes = plt.subplots(1, len(grids), figsize=(w * len(grids) * 0.85, h), dpi=DPI, layout="constrained",
                             squeeze=False, sharey=True)
    norm = plt.Normalize(0, 100)
    image = None
    for ax, grid in zip(axes[0], grids):
        values = grid.pivot("acc").reindex(index=depths, columns=lengths).to_numpy(dtype=float) * 100.0
        image = _draw_grid(ax, values, depths, lengths, None, ACCURACY_CMAP, norm)
        seeds = f", mean of {grid.seeds} seeds" if grid.seeds > 1 else ""
        ax.set_title(f"{grid.model}{f' ({seeds[2:]})' if seeds else ''}", fontsize=11)
        if grid.train_length:
            ax.axvline(_train_line_x(lengths, grid.train_length), color="black", linestyle="--", linewidth=2)
            ax.set_title(f"{grid.model} (trained at {format_length(grid.train_length)}, dashed{seeds})", fontsize=11)
    for ax in axes[0][1:]:
        ax.set_ylabel("")
    fig.suptitle(f"{grids[0].family}: {grids[0].metric} % side by side", fontsize=12)
    bar = fig.colorbar(image, ax=list(axes[0]), fraction=0.04, pad=0.02)
    bar.set_label(f"{grids[0].metric} %")
    return _save(fig, path)


def _signed(value: float) -> str:
    return "0" if round(value) == 0 else f"{value:+.0f}"


def difference_map(base: Grid, other: Grid, path: Path) -> Figure:
    """``other − base`` in percentage points per cell (blue: other better, red: worse), symmetric scale."""
    depths = sorted(set(base.depths) | set(other.depths))
    lengths = sorted(set(base.lengths) | set(other.lengths))
    a = base.pivot("acc").reindex(index=depths, columns=lengths).to_numpy(dtype=float)
    b = other.pivot("acc").reindex(index=depths, columns=lengths).to_numpy(dtype=float)
    diff = (b - a) * 100.0
    finite = np.abs(diff[~np.isnan(diff)])
    limit = max(10.0, math.ceil((finite.max() if finite.size else 0) / 10.0) * 10.0)
    norm = TwoSlopeNorm(vcenter=0.0, vmin=-limit, vmax=limit)
    fig, ax = plt.subplots(figsize=_grid_size(len(depths), len(lengths)), dpi=DPI, layout="constrained")
    image = _draw_grid(ax, diff, depths, lengths, None, DIFF_CMAP, norm, fmt=_signed)
    ax.set_title(f"{base.family}: {other.model} − {base.model} (points)", fontsize=11)
    bar = fig.colorbar(image, ax=ax, fraction=0.05, pad=0.02)
    bar.set_label("accuracy difference, points")
    return _save(fig, path, (ax, depths, lengths))


def perplexity_curves(results: list[PerplexityResult], path: Path) -> Figure:
    """Token perplexity per position bucket, one line per model (all for the same task)."""
    buckets = sorted({(lo, hi) for r in results for lo, hi, _ in r.positions},
                     key=lambda b: (b[0], math.inf if b[1] is None else b[1]))
    fig, ax = plt.subplots(figsize=(max(5.5, 2.0 + 0.8 * len(buckets)), 3.6), dpi=DPI, layout="constrained")
    x = np.arange(len(buckets))
    spread = []
    for r in results:
        lookup = {(lo, hi): v for lo, hi, v in r.positions}
        ys = np.array([lookup.get(b, math.nan) for b in buckets], dtype=float)
        spread.extend(ys[~np.isnan(ys)].tolist())
        ax.plot(x, ys, marker="o", linewidth=2, label=r.display)
    positive = [v for v in spread if v > 0]
    if positive and max(positive) / min(positive) > 20:
        ax.set_yscale("log")
    ax.set_xticks(x, [format_bucket(lo, hi) for lo, hi in buckets])
    ax.set_xlabel("token position in the document")
    ax.set_ylabel("token perplexity")
    ax.set_title(f"{results[0].task}: perplexity by position", fontsize=11)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)
