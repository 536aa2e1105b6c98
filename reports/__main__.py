"""``python -m infini_bench.reports <lm-eval output> -o <out>``: same as ``infini-bench report``."""
import sys

from .cli import main

sys.exit(main())
