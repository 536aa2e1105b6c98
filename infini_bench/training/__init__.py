"""The minimal trainer (docs/ARCHITECTURE.md §5): YAML recipes, one readable loop, atomic checkpoints, exact resume, accelerate.

Modules: `recipe` (dataclasses + YAML), `batches` (what each step trains on), `optim` (parameter groups, schedule),
`checkpoint` (atomic save, latest), `loop` (the loop), `stages` (pretraining / finetuning setup), `commands` (CLI).
"""
from .commands import finetune_main, train_main
from .recipe import Recipe, RecipeError, load_recipe

__all__ = ["Recipe", "RecipeError", "finetune_main", "load_recipe", "train_main"]
