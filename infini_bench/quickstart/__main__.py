"""`python -m infini_bench.quickstart`: the same as `infini-bench quickstart`."""
from .cli import main

if __name__ == "__main__":
    raise SystemExit(main())
