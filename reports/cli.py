"""``infini-bench report``: the command-line face of ``build_report`` (the lead wires ``main`` into the CLI)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from infini_bench.tasks.names import parse_length

from .grid import METRICS
from .report import ReportError, build_report
from .text import render_text


def _train_length(text: str) -> tuple[str, int]:
    model, sep, value = text.rpartition("=")
    if not sep or not model:
        raise argparse.ArgumentTypeError(f"expected MODEL=N (e.g. my-model=4k), got {text!r}")
    try:
        return model, parse_length(value)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from e


def _threshold(text: str) -> float:
    try:
        value = float(text.rstrip("%"))
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from e
    if text.endswith("%") or value > 1.0:
        value /= 100.0
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"threshold must be within 0-1 (or 0-100 %), got {text!r}")
    return value


def build_parser(prog: str = "infini-bench report") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Turn lm-eval output (results_*.json + samples_*.jsonl) into heatmap PNGs, summary.json and "
        "one self-contained report.html.",
    )
    parser.add_argument("inputs", nargs="+", metavar="[NAME=]PATH",
                        help="lm-eval --output_path folders and/or results_*.json files; NAME= labels the model(s) "
                        "found there (default: a label from the checkpoint path and model args). One NAME given to "
                        "several paths marks seed replicates (one model per path): the report shows their mean and "
                        "spread (min-max, std) next to the Wilson interval of all their samples pooled")
    parser.add_argument("-o", "--output", default="report", help="folder for the report (default: ./report)")
    parser.add_argument("--train-length", action="append", type=_train_length, default=[], metavar="MODEL=N",
                        help="training length of a model (label, name or folder name), e.g. tiny=2k; repeatable")
    parser.add_argument("--threshold", type=_threshold, default=0.8,
                        help="accuracy an effective length must keep, 0-1 or percent (default 0.8)")
    parser.add_argument("--control", action="append", default=[], metavar="MODEL",
                        help="a model used as a control (label); the headline warns when it is below --threshold at "
                        "its training length, since comparisons beyond it then measure its failure; repeatable")
    parser.add_argument("--metric", default="acc", choices=METRICS,
                        help="per-sample score to draw: acc (strict: the first value in the answer must be the "
                        "key) or ruler_match (RULER's string_match_all: the share of expected values found in the "
                        "answer, case-insensitive); default acc")
    parser.add_argument("--samples-per-cell", type=int, default=3,
                        help="example prompts shown per heatmap cell in the HTML (default 3)")
    parser.add_argument("--no-html", action="store_true", help="write PNGs and summary.json only")
    parser.add_argument("-q", "--quiet", action="store_true", help="do not print the text summary")
    parser.add_argument("--debug", action="store_true", help="show the full traceback of an unexpected error")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the report; returns 0 on success, 1 when nothing could be reported (message on stderr)."""
    args = build_parser().parse_args(argv)
    try:
        summary = build_report(
            args.inputs,
            args.output,
            train_lengths=dict(args.train_length),
            threshold=args.threshold,
            metric=args.metric,
            samples_per_cell=max(0, args.samples_per_cell),
            html=not args.no_html,
            controls=args.control,
        )
    except ReportError as e:
        print(f"infini-bench report: {e}", file=sys.stderr)
        return 1
    except OSError as e:
        print(f"infini-bench report: cannot write the report: {e}", file=sys.stderr)
        return 1
    except Exception as e:  # a bug or an input shape nobody foresaw: one clear line, the traceback on request
        if args.debug:
            raise
        print(f"infini-bench report: unexpected {type(e).__name__}: {e} (rerun with --debug for the traceback)",
              file=sys.stderr)
        return 2
    if not args.quiet:
        print(render_text(summary), end="")
    out = Path(args.output)
    written = "report.html, " if not args.no_html else ""
    print(f"wrote {written}summary.json and {len(list(out.glob('*.png')))} PNG(s) to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
