"""lm-eval output -> depth × length heatmaps, per-depth statistics, perplexity curves and one HTML page.

Reads only the files lm-eval wrote (``results_*.json``, ``samples_<task>_<date>.jsonl``); never imports a model
or the tasks, only their naming module (``infini_bench.tasks.names``, standard library only). ``build_report`` is
the Python API, ``main`` the ``infini-bench report`` command.
"""
from .cli import main
from .report import ReportError, build_report

__all__ = ["ReportError", "build_report", "main"]
