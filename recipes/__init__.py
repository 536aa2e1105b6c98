"""The YAML training recipes, installed as `infini_bench.recipes` so `infini-bench quickstart` finds them."""
from pathlib import Path

RECIPES_DIR = str(Path(__file__).resolve().parent)
