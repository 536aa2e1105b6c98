"""Depth × length grids, per-cell confidence intervals and the summary statistics of a grid.

A grid is built from the samples log when it was written (every cell is then the exact mean of its samples and
has a count), and otherwise from the per-depth ``acc_dNNN`` metrics of the results JSON (one column per task,
counts unknown). Tasks are grouped into families by dropping their length suffix: ``passkey_1k`` and
``passkey_4k`` form one ``passkey`` grid. Every name is read with the tasks' own naming module
(``infini_bench.tasks.names``), never re-implemented here.

Seed replicates (several runs of one model label) pool into one grid: each cell, length and depth shows the mean
over the runs (``acc``) with its spread across them (``seeds``, ``seed_min``, ``seed_max``, ``seed_std``: the
sample standard deviation, n − 1), next to the Wilson interval of all their samples pooled (``n``, ``ci_low``,
``ci_high``, around ``pooled_acc``). A single run is the same with one seed.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import pandas as pd

from infini_bench.tasks.names import (
    PERPLEXITY_METRICS,
    SCORES,
    family_sort_key,
    parse_bucket_metric,
    parse_depth_metric,
    parse_length,
    split_task_name,
)

from .records import ModelRuns, Sample, TaskResult

#: The per-sample scores a grid can pivot (every passkey and NIAH sample carries both; see tasks/README.md).
METRICS = SCORES

#: The Infini-attention paper's passkey view (its Table 3: accuracy with the key at the start, middle or end of the
#: input): the depths pooled into thirds. A depth on a boundary (33 1/3 %, 66 2/3 %) counts as middle.
DEPTH_BINS = (("start", 0.0, 100.0 / 3), ("middle", 100.0 / 3, 200.0 / 3), ("end", 200.0 / 3, 100.0))

#: Assessment bands of the mean per-depth accuracy, as the project's earlier analysis scripts printed them.
BANDS = ((0.9, "excellent"), (0.8, "good"), (0.7, "fair"))

#: Columns of `Grid.cells`.
CELL_COLUMNS = ["depth", "length", "acc", "n", "successes", "ci_low", "ci_high", "source", "pooled_acc", "seeds",
                "seed_min", "seed_max", "seed_std"]


def family_of(task: str) -> tuple[str, int | None]:
    """``passkey_4k`` -> (``passkey``, 4096); a task without a length suffix is its own family."""
    return split_task_name(task)


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


@dataclass
class Grid:
    """One model × task family: cells (depth, length) with accuracy, count and Wilson interval, plus samples.

    A grid of seed replicates holds one grid per run in `replicates` (each with its `run` name); its own cells are
    the runs' cells pooled (see the module docstring)."""

    model: str
    family: str
    metric: str
    tasks: list[str]
    cells: pd.DataFrame  # columns: CELL_COLUMNS
    samples: dict[tuple[float, int], list[Sample]] = field(default_factory=dict)
    train_length: int | None = None
    run: str | None = None  # which run of its model label this grid is (seed replicates only)
    replicates: list["Grid"] = field(default_factory=list)

    @property
    def seeds(self) -> int:
        """How many runs this grid pools (1 for a single run)."""
        return len(self.replicates) or 1

    @property
    def runs(self) -> list[str]:
        return [g.run or "" for g in self.replicates]

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
        """Accuracy per depth over all lengths: sample-weighted when counts are known, else the mean of cells
        (for replicates: that per run, then the mean and spread over runs)."""
        return self._over_seeds(["depth"])

    def per_length(self) -> pd.DataFrame:
        return self._over_seeds(["length"])

    def depth_bins(self) -> pd.DataFrame:
        """The paper's view: one row per (bin, length) with the pooled score (sample-weighted when counts are
        known), its count and interval; bins as in `DEPTH_BINS`."""
        frame = self._over_seeds(["bin", "length"], _with_bins).reset_index()
        order = {name: i for i, (name, _, _) in enumerate(DEPTH_BINS)}
        return frame.sort_values(["length", "bin"], key=lambda col: col.map(order) if col.name == "bin" else col)

    def _over_seeds(self, keys: list[str], prepare: Callable[[pd.DataFrame], pd.DataFrame] = lambda c: c,
                    ) -> pd.DataFrame:
        """Marginal over `keys`: count and Wilson interval of every sample pooled (``pooled_acc``, ``n``,
        ``ci_low``, ``ci_high``), ``acc`` the mean over the runs of each run's own marginal, and its spread."""
        pooled = _marginal(prepare(self.cells), keys)
        pooled["pooled_acc"] = pooled["acc"]
        if not self.replicates:
            return _with_spread(pooled, pooled[["acc"]])
        per_run = pd.concat(
            [_marginal(prepare(g.cells), keys)["acc"].rename(i) for i, g in enumerate(self.replicates)], axis=1
        ).reindex(pooled.index)
        return _with_spread(pooled, per_run)

    def stats(self, threshold: float) -> dict[str, Any]:
        """mean / std / min / max (with their depths) of the per-depth accuracy, the band and the effective length;
        for replicates also each run's mean and effective length and their range (``seed_*``)."""
        per_depth = self.per_depth()
        values = per_depth["acc"].to_numpy(dtype=float)
        ok = ~np.isnan(values)
        per_length = self.per_length()
        lengths = {int(k): float(v) for k, v in per_length["acc"].items() if not math.isnan(v)}
        n_total = int(self.cells["n"].sum()) if self.has_counts else None
        seeds = self._seed_stats(threshold)
        if not ok.any():
            return {"mean": None, "std": None, "min": None, "min_depth": None, "max": None, "max_depth": None,
                    "assessment": None, "n_samples": n_total, "effective_length": None, "threshold": threshold,
                    **seeds}
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
            **seeds,
        }

    def _seed_stats(self, threshold: float) -> dict[str, Any]:
        """Each run's mean and effective length, and their spread (None for a single run)."""
        runs = [{"run": g.run, **{k: g.stats(threshold)[k] for k in ("mean", "effective_length")}}
                for g in self.replicates]
        means = [r["mean"] for r in runs if r["mean"] is not None]
        effective = [r["effective_length"] or 0 for r in runs]  # 0: not even the shortest length holds
        return {
            "seeds": self.seeds,
            "per_seed": runs,
            "seed_mean_min": min(means) if len(means) > 1 else None,
            "seed_mean_max": max(means) if len(means) > 1 else None,
            "seed_mean_std": float(np.std(means, ddof=1)) if len(means) > 1 else None,
            "seed_effective_length_min": (min(effective) or None) if len(runs) > 1 else None,
            "seed_effective_length_max": (max(effective) or None) if len(runs) > 1 else None,
        }


def _with_bins(cells: pd.DataFrame) -> pd.DataFrame:
    return cells.assign(bin=[depth_bin(d) for d in cells["depth"]])


def _with_spread(frame: pd.DataFrame, per_run: pd.DataFrame) -> pd.DataFrame:
    """``acc`` = the mean over the runs (columns of `per_run`), with ``seeds`` (runs with a value), ``seed_min``,
    ``seed_max`` and ``seed_std`` (sample standard deviation; NaN below two runs)."""
    frame = frame.copy()
    frame["acc"] = per_run.mean(axis=1)
    frame["seeds"] = per_run.count(axis=1)
    frame["seed_min"] = per_run.min(axis=1)
    frame["seed_max"] = per_run.max(axis=1)
    frame["seed_std"] = per_run.std(axis=1, ddof=1) if per_run.shape[1] > 1 else math.nan
    return frame


def _marginal(cells: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """Per value of `keys`: acc, n and the Wilson interval of the samples pooled (counts known), else the mean of
    the cells' accuracies without counts."""
    rows = []
    for key, group in cells.groupby(keys, sort=True):
        at = dict(zip(keys, key if isinstance(key, tuple) else (key,)))
        valid = group.dropna(subset=["acc"])
        if valid.empty:
            rows.append({**at, "acc": math.nan, "n": math.nan, "ci_low": math.nan, "ci_high": math.nan})
            continue
        if valid["n"].notna().all():
            n = int(valid["n"].sum())
            k = float(valid["successes"].sum())
            low, high = wilson(k, n)
            rows.append({**at, "acc": k / n, "n": n, "ci_low": low, "ci_high": high})
        else:
            rows.append({**at, "acc": float(valid["acc"].mean()), "n": math.nan, "ci_low": math.nan,
                         "ci_high": math.nan})
    return pd.DataFrame(rows, columns=[*keys, "acc", "n", "ci_low", "ci_high"]).set_index(keys)


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
        if depth is None or length is None or metric not in s.metrics or math.isnan(s.metrics[metric]):
            missing += 1  # a NaN score is a document marked invalid (non_finite=invalid): counted in the notes
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
        parsed = parse_depth_metric(name)
        if parsed and parsed[0] == metric:
            rows.append({"depth": parsed[1], "length": length, "acc": value, "task": task.name})
    return rows


def has_depth_metrics(task: TaskResult, metric: str) -> bool:
    return any((parsed := parse_depth_metric(name)) is not None and parsed[0] == metric for name in task.metrics)


def is_perplexity_task(task: TaskResult) -> bool:
    return any(name.startswith(PERPLEXITY_METRICS) for name in task.metrics)


@dataclass
class GridBuild:
    grids: list[Grid]
    notes: list[str]
    ungridded: list[tuple[ModelRuns, TaskResult]]


def build_grids(models: list[ModelRuns], metric: str = "acc") -> GridBuild:
    """Group every model's depth-grid tasks into families (primary family first) and pivot them; pool the runs of
    seed replicates into one grid per label and family; say why any task has no grid."""
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
        for family in sorted(families, key=family_sort_key):
            grid = _family_grid(model, family, families[family], metric, notes)
            if grid is not None:
                grids.append(grid)
    return GridBuild(grids=pool_replicates(grids), notes=notes, ungridded=ungridded)


def _family_grid(model: ModelRuns, family: str, tasks: list[TaskResult], metric: str,
                 notes: list[str]) -> Grid | None:
    """One model's grid of one family: cells from the samples logs, else from the per-depth metrics."""
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
                f"{model.display} / {task.name}: "
                + (f"samples not usable ({why}); " if why else "no samples log (run lm-eval with "
                   "--log_samples for counts, intervals and example prompts); ")
                + "cells taken from its per-depth metrics, without counts"
            )
        else:
            notes.append(
                f"{model.display} / {task.name}: cannot place it on the depth × length grid "
                f"({why or 'no samples log, and no single context length in its metadata or name'}); "
                "left out of the heatmap"
            )
    cells = _cells(sample_rows, result_rows)
    if cells.empty:
        return None
    return Grid(model=model.label, family=family, metric=metric, tasks=sorted(t.name for t in tasks), cells=cells,
                samples=per_cell, train_length=model.train_length, run=model.run)


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
        return pd.DataFrame(columns=CELL_COLUMNS)
    cells = pd.concat(frames, ignore_index=True)
    cells["depth"] = cells["depth"].astype(float)
    cells["length"] = cells["length"].astype(int)
    cells["n"] = cells["n"].astype(float)
    cells["pooled_acc"] = cells["acc"]
    cells = _with_spread(cells, cells[["acc"]])
    return cells.sort_values(["depth", "length"]).reset_index(drop=True)[CELL_COLUMNS]


def pool_replicates(grids: list[Grid]) -> list[Grid]:
    """Replace the grids of seed-replicate runs (same label and family) by one pooled grid, where the first was."""
    order: list[Grid | tuple[str, str]] = []
    runs: dict[tuple[str, str], list[Grid]] = {}
    for grid in grids:
        if grid.run is None:
            order.append(grid)
            continue
        key = (grid.model, grid.family)
        if key not in runs:
            runs[key] = []
            order.append(key)
        runs[key].append(grid)
    return [pooled_grid(runs[item]) if isinstance(item, tuple) else item for item in order]


def pooled_grid(runs: list[Grid]) -> Grid:
    """One grid of several runs: per cell the mean over runs and its spread, the pooled count and Wilson interval."""
    frame = pd.concat([g.cells.assign(_run=i) for i, g in enumerate(runs)], ignore_index=True)
    rows = []
    for (depth, length), group in frame.groupby(["depth", "length"], sort=True):
        counted = bool(group["n"].notna().all())
        n = float(group["n"].sum()) if counted else math.nan
        k = float(group["successes"].sum()) if counted else math.nan
        low, high = wilson(k, int(n)) if counted else (math.nan, math.nan)
        rows.append({"depth": depth, "length": length, "n": n, "successes": k, "ci_low": low, "ci_high": high,
                     "source": "samples" if (group["source"] == "samples").all() else "results",
                     "pooled_acc": k / n if counted and n else float(group["acc"].mean())})
    cells = pd.DataFrame(rows)
    per_run = frame.pivot_table(index=["depth", "length"], columns="_run", values="acc", aggfunc="first",
                                dropna=False).reindex(pd.MultiIndex.from_frame(cells[["depth", "length"]]))
    per_run = per_run.reindex(columns=range(len(runs)))
    cells = _with_spread(cells.set_index(["depth", "length"]), per_run).reset_index()
    samples: dict[tuple[float, int], list[Sample]] = {}
    for g in runs:
        for key, items in g.samples.items():
            samples.setdefault(key, []).extend(items)
    return Grid(model=runs[0].model, family=runs[0].family, metric=runs[0].metric,
                tasks=sorted({t for g in runs for t in g.tasks}), cells=cells[CELL_COLUMNS], samples=samples,
                train_length=runs[0].train_length, replicates=list(runs))


@dataclass
class PerplexityResult:
    model: str
    task: str
    token_perplexity: float | None
    word_perplexity: float | None
    bits_per_byte: float | None
    positions: list[tuple[int, int | None, float]]  # (lo, hi or None for "to the end", token perplexity)
    run: str | None = None  # which run of its model label (seed replicates only)

    @property
    def display(self) -> str:
        return self.model if self.run is None else f"{self.model} [{self.run}]"


def perplexity_results(models: list[ModelRuns]) -> list[PerplexityResult]:
    """Token / word perplexity, bits per byte and position buckets of every perplexity task."""
    out = []
    for model in models:
        for task in model.tasks.values():
            if not is_perplexity_task(task):
                continue
            positions = []
            for name, value in task.metrics.items():
                bucket = parse_bucket_metric(name)
                if bucket is not None:
                    positions.append((*bucket, value))
            positions.sort(key=lambda p: (p[0], math.inf if p[1] is None else p[1]))
            out.append(
                PerplexityResult(
                    model=model.label,
                    task=task.name,
                    token_perplexity=task.metrics.get("token_perplexity"),
                    word_perplexity=task.metrics.get("word_perplexity"),
                    bits_per_byte=task.metrics.get("bits_per_byte"),
                    positions=positions,
                    run=model.run,
                )
            )
    return out
