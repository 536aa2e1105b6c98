"""lm-eval model adapters. Importing this package registers `--model infini` (after lm-eval's built-ins:
`infini_bench.lm_eval_compat.register_model_once`).

lm-eval 0.4.13 reads no plugin entry points; the installed `infini_bench_lm_eval.pth` registers `infini` lazily
as soon as lm-eval loads its models (`infini_bench/lm_eval_plugin.py`), so plain `lm_eval --model infini` and
`lm_eval.simple_evaluate(model="infini", ...)` work; the wrapper `python -m infini_bench.harness` imports this
package itself. The package also declares `lm_eval.models` / `lm_eval.tasks` entry points for lm-eval versions
that read them.
"""
from .infini_lm import InfiniLM

__all__ = ["InfiniLM"]
