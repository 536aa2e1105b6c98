"""RESULTS_gpu.md from one `gpu_check.sh` run: every GPU target of the project beside the previous run's figure and
this run's, then the benchmark's own tables, the CUDA tests' outcome and the GPU quickstart's scores.

    python benchmarks/gpu_targets.py --bench bench_gpu.json --bench-md bench_gpu.md --tests pytest.log \
        --quickstart qs/report/summary.json --out RESULTS_gpu.md

Reads only JSON/text files (no torch), so it is tested on the CPU with the shapes the benchmark writes.
"""
from __future__ import annotations

import argparse
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

PREVIOUS = Path(__file__).resolve().parent / "gpu_previous.json"


@dataclass(frozen=True)
class Target:
    name: str
    goal: str
    measure: Callable[[dict], float | None]  # the figure from a bench_gpu.py --json file (None: not measured)
    met: Callable[[float], bool]
    unit: str = "×"


def _training_ratio(tokens: int, segments: int | None) -> Callable[[dict], float | None]:
    """The trainer's speed over the plain Llama loop at `tokens` (at `segments`, or the best segment count)."""
    def measure(results: dict) -> float | None:
        rows = [r for r in results.get("training") or [] if r["tokens"] == tokens and "Llama" not in r["loop"]
                and (segments is None or r["segments"] == segments)]
        return max((r["vs_llama"] for r in rows), default=None)
    return measure


def _generate_row(results: dict, tokens: int) -> dict | None:
    rows = results.get("generate") or []
    return min(rows, key=lambda r: abs(r["prompt_tokens"] - tokens), default=None) if rows else None


def _infini_seconds(row: dict) -> float:
    """The fastest of the Infini decoding variants the benchmark timed (`infini_s`, `infini_static_s`, ...)."""
    return min(v for k, v in row.items() if re.fullmatch(r"infini\w*_s", k))


def _infini_peak(row: dict) -> float:
    return min(v for k, v in row.items() if re.fullmatch(r"infini\w*_peak_gb", k))


def _generate_speedup(tokens: int) -> Callable[[dict], float | None]:
    def measure(results: dict) -> float | None:
        row = _generate_row(results, tokens)
        return None if row is None else row["hf_s"] / _infini_seconds(row)
    return measure


def _generate_memory(results: dict) -> float | None:
    row = _generate_row(results, 131072)
    return None if row is None else _infini_peak(row) / row["hf_peak_gb"]


def _default_chunk_rolling(results: dict) -> list[dict]:
    rows = results.get("rolling") or []
    return [r for r in rows if r["chunk"] == rows[0]["chunk"]] if rows else []


def _rolling_speed(results: dict) -> float | None:
    rows = [r for r in _default_chunk_rolling(results) if r["tokens"] >= 1_000_000]
    return rows[-1]["tok_s"] if rows else None


def _rolling_flatness(results: dict) -> float | None:
    peaks = [r["peak_gb"] for r in _default_chunk_rolling(results)]
    return max(peaks) / min(peaks) if peaks else None


TARGETS = (
    Target("trainer at 8K, 8 segments", "≥ 1.0× plain Llama", _training_ratio(8192, 8), lambda v: v >= 1.0),
    Target("trainer at 32K", "≥ 2.0× plain Llama", _training_ratio(32768, None), lambda v: v >= 2.0),
    Target("generate_until at 32K", "≥ 2× faster than hf", _generate_speedup(32768), lambda v: v >= 2.0),
    Target("generate_until at 128K", "≥ 5× faster than hf", _generate_speedup(131072), lambda v: v >= 5.0),
    Target("generate_until peak memory at 128K", "≤ 0.2 of hf's", _generate_memory, lambda v: v <= 0.2),
    Target("rolling at 1M tokens, end to end", "≥ 300,000 tokens/s", _rolling_speed, lambda v: v >= 300_000, " tok/s"),
    Target("rolling peak memory 32K → 1M", "flat (max/min ≤ 1.05)", _rolling_flatness, lambda v: v <= 1.05),
)

# The GPU quickstart's targets: (family, model label, multiples of the training length, lowest accuracy).
QUICKSTART_TARGETS = (
    ("passkey", "infini", (1, 2, 4, 8, 16, 32, 64), 0.95),
    ("niah", "infini", (1, 2, 4, 8, 16), 0.90),
    ("niah_multikey_2", "infini", (1, 2, 4), 0.80),
)
CHANCE = 0.05  # the memory-off control "at chance": a 5-digit key guessed, or the needle in its last segment


def _figure(value: float | None, unit: str) -> str:
    if value is None:
        return "not measured"
    return f"{value:,.0f}{unit}" if unit.strip() == "tok/s" else f"{value:.2f}{unit}"


def targets_table(now: dict, previous: dict) -> list[str]:
    lines = [f"| target | goal | previous ({previous['date']}, {previous['commit']}) | this run | met |",
             "|---|---|---:|---:|:-:|"]
    for t in TARGETS:
        before, value = t.measure(previous), t.measure(now)
        met = "–" if value is None else ("yes" if t.met(value) else "**no**")
        lines.append(f"| {t.name} | {t.goal} | {_figure(before, t.unit)} | {_figure(value, t.unit)} | {met} |")
    return lines


def quickstart_scores(summary: dict) -> dict[tuple[str, str], dict[int, float]]:
    """(family, model) -> {multiple of the training length: accuracy} from a report's summary.json."""
    train = {(g["family"], g["model"]): g["train_length"] for g in summary.get("grids", [])}
    scores = {}
    for entry in summary.get("comparisons", []):
        for row in entry["table"]:
            length = train.get((entry["family"], row["model"]))
            if length:
                scores[(entry["family"], row["model"])] = {
                    int(k) // length: v for k, v in row["per_length"].items() if v is not None
                }
    return scores


def quickstart_lines(summary: dict) -> list[str]:
    scores = quickstart_scores(summary)
    multiples = sorted({m for per in scores.values() for m in per})
    lines = ["| family · model | " + " | ".join(f"{m}×" for m in multiples) + " |",
             "|---|" + "---:|" * len(multiples)]
    for (family, model), per in sorted(scores.items()):
        cells = [f"{per[m]:.0%}" if m in per else "–" for m in multiples]
        lines.append(f"| {family} · {model} | " + " | ".join(cells) + " |")
    lines += ["", "| quickstart target | met |", "|---|:-:|"]
    for family, model, wanted, low in QUICKSTART_TARGETS:
        per = scores.get((family, model), {})
        missing = [m for m in wanted if m not in per]
        ok = "–" if missing else ("yes" if all(per[m] >= low for m in wanted) else "**no**")
        lines.append(f"| {family} · {model} ≥ {low:.0%} at {wanted[0]}×–{wanted[-1]}× | {ok} |")
    off = [v for (family, model), per in scores.items() if model == "memory_off" for v in per.values()]
    lines.append(f"| memory off at chance (≤ {CHANCE:.0%} everywhere) | "
                 + ("–" if not off else ("yes" if max(off) <= CHANCE else "**no**")) + " |")
    return lines


def tests_line(log: str) -> str:
    """pytest's closing summary line ("70 passed, 2 skipped in 41.2s")."""
    found = re.findall(r"=+ (.*(?:passed|failed|error).*) =+", log)
    return found[-1] if found else "no pytest summary found in the log"


def render(bench: dict, bench_md: str, tests_log: str, summary: dict | None, header: str) -> str:
    previous = json.loads(PREVIOUS.read_text())
    parts = [header, "", "## Targets", "", *targets_table(bench, previous), "",
             f"CUDA tests: {tests_line(tests_log)}", ""]
    if summary is not None:
        parts += ["## GPU quickstart (shortened training budget: see the header)", "", *quickstart_lines(summary), ""]
    parts += ["## The benchmark's own tables", "", bench_md]
    if bench.get("errors"):
        parts += ["", "Rows that failed: " + "; ".join(f"{k}: {v}" for k, v in bench["errors"].items())]
    return "\n".join(parts) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bench", required=True, help="bench_gpu.py --json output")
    parser.add_argument("--bench-md", required=True, help="bench_gpu.py --out output")
    parser.add_argument("--tests", required=True, help="the CUDA tests' pytest log")
    parser.add_argument("--quickstart", help="the GPU quickstart's report/summary.json (absent: not run)")
    parser.add_argument("--header", default="# GPU check", help="the page's opening lines (machine, command, date)")
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    summary_path = Path(args.quickstart) if args.quickstart else None
    summary = json.loads(summary_path.read_text()) if summary_path and summary_path.is_file() else None
    text = render(json.loads(Path(args.bench).read_text()), Path(args.bench_md).read_text(),
                  Path(args.tests).read_text(errors="replace"), summary, args.header)
    Path(args.out).write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
