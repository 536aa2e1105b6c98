"""lm-eval model adapters. Importing this package registers `--model infini` (after lm-eval's built-ins).

lm-eval 0.4.13 reads no plugin entry points, so something must import this package before lm-eval builds the
model: the wrapper `python -m infini_bench.harness <lm_eval's flags>` does, or in Python
`import infini_bench.model_adapters` before `lm_eval.simple_evaluate(model="infini", ...)`. The package also
declares `lm_eval.models` / `lm_eval.tasks` entry points for lm-eval versions that read them.
"""
from .infini_lm import InfiniLM

__all__ = ["InfiniLM"]
