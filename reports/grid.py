"""Depth × length grids, per-cell confidence intervals and the summary statistics of a grid.

A grid is built from the samples log when it was written (every cell is then the exact mean of its samples and
has a count), and otherwise from the per-depth ``acc_dNNN`` metrics of the results JSON (one column per task,
counts unknown). Tasks are grouped into families by dropping their length suffix: ``passkey_1k`` and
``passkey_4k`` form one ``passkey`` grid.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from .loading import ModelRuns, Sample, TaskResult, parse_length

DEPTH_METRIC_RE = re.compile(r"^(?P<base>.+)_d(?P<depth>\d{3})(?:p(?P<frac>\d+))?$")
LENGTH_SUFFIX_RE = re.compile(r"^(?P<family>.+?)_(?P<length>\d+(?:\.\d+)?[kKmM]|\d{3,})$")
PPL_MARKERS = ("token_perplexity", "word_perplexity", "bits_per_byte", "byte_perplexity")

#: The per-sample scores a grid can pivot (every passkey and NIAH sample carries both; see tasks/README.md).
METRICS = ("acc", "ruler_match")

#: The Infini-attention paper's passkey view (its Table 3: accuracy with the key at the start, middle or end of the
#: input): the depths pooled into thirds. A depth on a boundary (33 1/3 %, 66 2/3 %) counts as middle.
DEPTH_BINS = (("start", 0.0, 100.0 / 3), ("middle", 100.0 / 3, 200.0 / 3), ("end", 200.0 / 3, 100.0))

#: Assessment bands of the mean per-depth accuracy, as the project's earlier analysis scripts printed them.
BANDS = ((0.9, "excellent"), (0.8, "good"), (0.7, "fair"))


def family_of(task: str) -> tuple[str, int | None]:
    """``passkey_4k`` -> (``passkey``, 4096); a task without a length suffix is its own family."""
    m = LENGTH_SUFFIX_RE.match(task)
    if not m:
        return task, None
    try:
        return m.group("family"), parse_length(m.group("length"))
    except ValueError:
        return task, None


def depth_bin(depth: float) -> str:
    """``start`` below 33 1/3 %, ``end`` above 66 2/3 %, else ``middle`` (see `DEPTH_BINS`)."""
    if depth < DEPTH_BINS[0][2]:
        return "start"
    if depth > DEPTH_BINS[2][1]:
        return "end"
    return "middle"


def assessment(mean: float) -> str:
    """excellent > 90 %, good 80–90 %, fair 70–80 %, poor < 70 %."""
    if mean > BANDS[0][0]:
        return BANDS[0][1]
    for low, name in BANDS[1:]:
        if mean >= low:
            return name
    return "poor"


def wilson(successes: float, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval for a proportion: stays inside [0, 1] and is sensible at 0/n and n/n, unlike p ± 2σ."""
    if n <= 0:
        return (math.nan, math.nan)
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def effective_length(per_length: dict[int, float], threshold: float) -> int | None:
    """Longest length such that it and every shorter length reach ``threshold``; None if the shortest fails."""
    best = None
    for length in sorted(per_length):
        value = per_length[length]
        if value is None or not (value >= threshold):
            break
        best = length
    return best


def format_length(n: int | float | None) -> str:
    """4096 -> ``4k``, 1048576 -> ``1m``, 1000 -> ``1000`` (the way the task names write lengths)."""
    if n is None or (isinstance(n, float) and math.isnan(n)):
        return "-"
    n = int(n)
    if n >= 1024 * 1024 and n % (1024 * 1024) == 0:
        return f"{n // (1024 * 1024)}m"
    if n >= 1024 and n % 1024 == 0:
        return f"{n // 1024}k"
    return str(n)


def format_depth(d: float) -> str:
    return f"{d:g}%"


def format_bucket(lo: int, hi: int | None) -> str:
    """Position bucket label: ``0–1k``, ``4k–end``."""
    return f"{format_length(lo) if lo else '0'}–{'end' if hi is None else format_length(hi)}"


@dataclass
class Grid:
    """One model × task family: cells (depth, length) with accuracy, count and Wilson interval, plus samples."""

    model: str
    family: str
    metric: str
    tasks: list[str]
    cells: pd.DataFrame  # columns: depth, length, acc, n, successes, ci_low, ci_high, source
    samples: dict[tuple[float, int], list[Sample]] = field(default_factory=dict)
    train_length: int | None = None

    @property
    def depths(self) -> list[float]:
        return sorted(self.cells["depth"].unique().tolist())

    @property
    def lengths(self) -> list[int]:
        return sorted(int(x) for x in self.cells["length"].unique().tolist())

    def pivot(self, column: str = "acc") -> pd.DataFrame:
        """depth (rows, ascending: 0 % first) × length (columns, ascending)."""
        table = self.cells.pivot_table(index="depth", columns="length", values=column, aggfunc="first", dropna=False)
        return table.reindex(index=self.depths, columns=self.lengths)

    @property
    def has_counts(self) -> bool:
        return bool(self.cells["n"].notna().all())

    def per_depth(self) -> pd.DataFrame:
        """Accuracy per depth over all lengths: sample-weighted when counts are known, else the mean of cells."""
        return _marginal(self.cells, "depth")

    def per_length(self) -> pd.DataFrame:
        return _marginal(self.cells, "length")

    def depth_bins(self) -> pd.DataFrame:
        """The paper's view: one row per (bin, length) with the pooled score (sample-weighted when counts are
        known), its count and interval; bins as in `DEPTH_BINS`."""
        rows = []
        cells = self.cells.assign(bin=[depth_bin(d) for d in self.cells["depth"]])
        for (name, length), group in cells.groupby(["bin", "length"], sort=False):
            row = _marginal(group.assign(all=0), "all").iloc[0].to_dict()
            rows.append({"bin": name, "length": int(length), **row})
        frame = pd.DataFrame(rows, columns=["bin", "length", "acc", "n", "ci_low", "ci_high"])
        order = {name: i for i, (name, _, _) in enumerate(DEPTH_BINS)}
        return frame.sort_values(["length", "bin"], key=lambda col: col.map(order) if col.name == "bin" else col)

    def stats(self, threshold: float) -> dict[str, Any]:
        """mean / std / min / max (with their depths) of the per-depth accuracy, the band and the effective length."""
        per_depth = self.per_depth()
        values = per_depth["acc"].to_numpy(dtype=float)
        ok = ~np.isnan(values)
        per_length = self.per_length()
        lengths = {int(k): float(v) for k, v in per_length["acc"].items() if not math.isnan(v)}
        n_total = int(self.cells["n"].sum()) if self.has_counts else None
        if not ok.any():
            return {"mean": None, "std": None, "min": None, "min_depth": None, "max": None, "max_depth": None,
                    "assessment": None, "n_samples": n_total, "effective_length": None, "threshold": threshold}
        depths = per_depth.index.to_numpy(dtype=float)[ok]
        vals = values[ok]
        mean = float(vals.mean())
        return {
            "mean": mean,
            "std": float(vals.std()),
            "min": float(vals.min()),
            "min_depth": float(depths[int(vals.argmin())]),
            "max": float(vals.max()),
            "max_depth": float(depths[int(vals.argmax())]),
            "assessment": assessment(mean),
            "n_samples": n_total,
            "overall_sample_accuracy": (
                float(self.cells["successes"].sum() / n_total) if n_total else None
            ),
            "effective_length": effective_length(lengths, threshold),
            "threshold": threshold,
        }


def _marginal(cells: pd.DataFrame, by: str) -> pd.DataFrame:
    rows = []
    for key, group in cells.groupby(by, sort=True):
        valid = group.dropna(subset=["acc"])
        if valid.empty:
            rows.append({by: key, "acc": math.nan, "n": math.nan, "ci_low": math.nan, "ci_high": math.nan})
            continue
        if valid["n"].notna().all():
            n = int(valid["n"].sum())
            k = float(valid["successes"].sum())
            low, high = wilson(k, n)
            rows.append({by: key, "acc": k / n, "n": n, "ci_low": low, "ci_high": high})
        else:
            rows.append({by: key, "acc": float(valid["acc"].mean()), "n": math.nan, "ci_low": math.nan,
                         "ci_high": math.nan})
    return pd.DataFrame(rows).set_index(by)


def _depth_of(sample: Sample) -> float | None:
    value = sample.doc.get("depth_percent")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    return None


def _length_of(sample: Sample, fallback: int | None) -> int | None:
    value = sample.doc.get("context_length")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return int(value)
    return fallback


def _rows_from_samples(task: TaskResult, metric: str) -> tuple[list[dict], dict, str | None]:
    """One row per sample with its grid coordinates; returns (rows, samples per cell, why unusable)."""
    samples = task.samples or []
    fallback = task_length(task)
    rows: list[dict] = []
    per_cell: dict[tuple[float, int], list[Sample]] = {}
    missing = 0
    for s in samples:
        depth, length = _depth_of(s), _length_of(s, fallback)
        if depth is None or length is None or metric not in s.metrics:
            missing += 1
            continue
        rows.append({"depth": depth, "length": length, "value": s.metrics[metric], "task": task.name})
        per_cell.setdefault((depth, length), []).append(s)
    if not rows:
        if not samples:
            return [], {}, "its samples log has no usable lines"
        return [], {}, (
            f"its samples have no depth_percent/context_length coordinates or no '{metric}' value"
        )
    return rows, per_cell, None


def task_length(task: TaskResult) -> int | None:
    """The one context length of a task: its merged metadata (``--metadata context_length`` overrides the name),
    else the length in its name; None when the task spans several lengths or none is known."""
    meta = task.config.get("metadata") if isinstance(task.config.get("metadata"), dict) else {}
    for key in ("context_length", "task_context_length"):
        value = meta.get(key)
        if value not in (None, ""):
            try:
                return parse_length(value)
            except ValueError:
                return None
    if isinstance(meta.get("context_lengths"), list) and len(meta["context_lengths"]) != 1:
        return None
    return family_of(task.name)[1]


def _rows_from_results(task: TaskResult, metric: str) -> list[dict]:
    """Cells from ``<metric>_dNNN`` results: only possible when the task has exactly one, known, length."""
    length = task_length(task)
    if length is None:
        return []
    rows = []
    for name, value in task.metrics.items():
        m = DEPTH_METRIC_RE.match(name)
        if m and m.group("base") == metric:
            rows.append({"depth": depth_of_metric(m), "length": length, "acc": value, "task": task.name})
    return rows


def depth_of_metric(m: re.Match) -> float:
    """``acc_d050`` -> 50.0, ``acc_d012p5`` -> 12.5 (the tasks' naming, see tasks/names.py)."""
    return float(f"{int(m.group('depth'))}.{m.group('frac') or 0}")


def has_depth_metrics(task: TaskResult, metric: str) -> bool:
    return any(
        (m := DEPTH_METRIC_RE.match(name)) is not None and m.group("base") == metric for name in task.metrics
    )


def is_perplexity_task(task: TaskResult) -> bool:
    return any(name.startswith(PPL_MARKERS) for name in task.metrics)


@dataclass
class GridBuild:
    grids: list[Grid]
    notes: list[str]
    ungridded: list[tuple[ModelRuns, TaskResult]]


def build_grids(models: list[ModelRuns], metric: str = "acc") -> GridBuild:
    """Group every model's depth-grid tasks into families and pivot them; say why any task has no grid."""
    grids: list[Grid] = []
    notes: list[str] = []
    ungridded: list[tuple[ModelRuns, TaskResult]] = []
    for model in models:
        families: dict[str, list[TaskResult]] = {}
        for task in model.tasks.values():
            gridded_samples = task.samples is not None and any(_depth_of(s) is not None for s in task.samples)
            if gridded_samples or has_depth_metrics(task, metric):
                families.setdefault(family_of(task.name)[0], []).append(task)
            else:
                ungridded.append((model, task))
        for family, tasks in sorted(families.items()):
            sample_rows: list[dict] = []
            result_rows: list[dict] = []
            per_cell: dict[tuple[float, int], list[Sample]] = {}
            for task in sorted(tasks, key=lambda t: (family_of(t.name)[1] or 0, t.name)):
                why = None
                if task.samples is not None:
                    rows, cells, why = _rows_from_samples(task, metric)
                    if rows:
                        sample_rows.extend(rows)
                        for key, items in cells.items():
                            per_cell.setdefault(key, []).extend(items)
                        continue
                rows = _rows_from_results(task, metric)
                if rows:
                    result_rows.extend(rows)
                    notes.append(
                        f"{model.label} / {task.name}: "
                        + (f"samples not usable ({why}); " if why else "no samples log (run lm-eval with "
                           "--log_samples for counts, intervals and example prompts); ")
                        + "cells taken from its per-depth metrics, without counts"
                    )
                else:
                    notes.append(
                        f"{model.label} / {task.name}: cannot place it on the depth × length grid "
                        f"({why or 'no samples log, and no single context length in its metadata or name'}); "
                        "left out of the heatmap"
                    )
            cells = _cells(sample_rows, result_rows)
            if cells.empty:
                continue
            grids.append(
                Grid(
                    model=model.label,
                    family=family,
                    metric=metric,
                    tasks=sorted(t.name for t in tasks),
                    cells=cells,
                    samples=per_cell,
                    train_length=model.train_length,
                )
            )
    return GridBuild(grids=grids, notes=notes, ungridded=ungridded)


def _cells(sample_rows: list[dict], result_rows: list[dict]) -> pd.DataFrame:
    """Aggregate sample rows to (depth, length) cells: acc = mean, n = count, Wilson interval on the successes."""
    frames = []
    if sample_rows:
        df = pd.DataFrame(sample_rows)
        agg = df.groupby(["depth", "length"], sort=True).agg(
            acc=("value", "mean"), n=("value", "size"), successes=("value", "sum")
        )
        agg = agg.reset_index()
        bounds = [wilson(k, int(n)) for k, n in zip(agg["successes"], agg["n"])]
        agg["ci_low"] = [b[0] for b in bounds]
        agg["ci_high"] = [b[1] for b in bounds]
        agg["source"] = "samples"
        frames.append(agg)
    if result_rows:
        df = pd.DataFrame(result_rows)
        taken = {(r["depth"], r["length"]) for f in frames for r in f[["depth", "length"]].to_dict("records")}
        df = df[[(d, l) not in taken for d, l in zip(df["depth"], df["length"])]]
        df = df.groupby(["depth", "length"], sort=True).agg(acc=("acc", "mean")).reset_index()
        df["n"] = math.nan
        df["successes"] = math.nan
        df["ci_low"] = math.nan
        df["ci_high"] = math.nan
        df["source"] = "results"
        frames.append(df)
    if not frames:
        return pd.DataFrame(columns=["depth", "length", "acc", "n", "successes", "ci_low", "ci_high", "source"])
    cells = pd.concat(frames, ignore_index=True)
    cells["depth"] = cells["depth"].astype(float)
    cells["length"] = cells["length"].astype(int)
    cells["n"] = cells["n"].astype(float)
    return cells.sort_values(["depth", "length"]).reset_index(drop=True)


@dataclass
class PerplexityResult:
    model: str
    task: str
    token_perplexity: float | None
    word_perplexity: float | None
    bits_per_byte: float | None
    positions: list[tuple[int, int | None, float]]  # (lo, hi or None for "to the end", token perplexity)


POS_RE = re.compile(r"^token_perplexity_pos_(?P<lo>\d+(?:\.\d+)?[kKmM]?)_(?P<hi>\d+(?:\.\d+)?[kKmM]?|end)$")


def perplexity_results(models: list[ModelRuns]) -> list[PerplexityResult]:
    """Token / word perplexity, bits per byte and position buckets of every perplexity task."""
    out = []
    for model in models:
        for task in model.tasks.values():
            if not is_perplexity_task(task):
                continue
            positions = []
            for name, value in task.metrics.items():
                m = POS_RE.match(name)
                if not m:
                    continue
                lo = 0 if m.group("lo") == "0" else parse_length(m.group("lo"))
                hi = None if m.group("hi") == "end" else parse_length(m.group("hi"))
                positions.append((lo, hi, value))
            positions.sort(key=lambda p: (p[0], math.inf if p[1] is None else p[1]))
            out.append(
                PerplexityResult(
                    model=model.label,
                    task=task.name,
                    token_perplexity=task.metrics.get("token_perplexity"),
                    word_perplexity=task.metrics.get("word_perplexity"),
                    bits_per_byte=task.metrics.get("bits_per_byte"),
                    positions=positions,
                )
            )
    return out
