"""`python -m infini_bench.training train|finetune ...` (what `accelerate launch -m` needs)."""
import sys

from .commands import main

sys.exit(main())
