"""`infini-bench train`, `finetune` and `extend` (also `python -m infini_bench.training train|finetune|extend`)."""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from ..data.cache import StorageError
from .checkpoint import CheckpointError, OutputDirInUse
from .finite import NonFiniteError

# failures whose message says it all (the cause and the fix): one line, no traceback
CLEAR_ERRORS = (CheckpointError, OutputDirInUse, StorageError, NonFiniteError)

OVERRIDES_HELP = """\
overrides (after the flags, or with --set): dotted recipe keys, values parsed as YAML, e.g.
  run.max_steps=200  run.output_dir=runs/x  optim.lr=1e-3  model.memory_update=delta  data.paths=[a.txt,b.jsonl]
finetune overrides name the finetune section: finetune.optim.lr=1e-4  finetune.passkey.lengths=[256,512]
  finetune.niah.variants=[single_1,multikey_1]

resuming: by default a run continues from the newest checkpoint in its output folder (run.output_dir).

many processes: accelerate launch [--multi_gpu | --config_file recipes/accelerate/fsdp.yaml] \\
                  -m infini_bench.cli train --config recipes/<recipe>.yaml
  (the global batch, optim.batch_size, stays the same on any number of processes; on a machine without GPUs,
  `accelerate launch --multi_gpu --num_processes 2` runs 2 CPU processes over gloo: accelerate 1.x's
  `--cpu --num_processes 2` starts a single process unless mpirun is installed)
"""


def _parser(prog: str, description: str, finetune: bool) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog, description=description, epilog=OVERRIDES_HELP, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", help="YAML recipe (recipes/*.yaml); without one, the built-in defaults")
    if finetune:
        parser.add_argument("--from", dest="checkpoint", required=True, help="checkpoint folder to start from (finetune: an Infini checkpoint; "
                            "extend: a Llama folder or a full-attention Infini checkpoint)")
    resume = parser.add_mutually_exclusive_group()
    resume.add_argument("--resume", action="store_true", help="require a checkpoint in the output folder and continue it")
    resume.add_argument("--no-resume", action="store_true", help="start fresh (refused if the output folder has checkpoints)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="recipe override (repeatable)")
    parser.add_argument("--print-recipe", action="store_true", help="print the resolved recipe and exit")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="recipe overrides")
    return parser


def _resume_mode(args: argparse.Namespace) -> str:
    return "always" if args.resume else "never" if args.no_resume else "auto"


def train_main(argv: list[str] | None = None) -> int:
    """Pretrain with the recipe's `model`, `data`, `optim` and `run` sections."""
    args = _parser("infini-bench train", "Pretrain an Infini model (causal LM loss on text).", False).parse_args(argv)
    from .loop import process_state, train
    from .recipe import load_recipe, recipe_to_yaml
    from .stages import pretraining

    recipe = load_recipe(args.config, args.set + args.overrides)
    if args.print_recipe:
        print(recipe_to_yaml(recipe))
        return 0
    _quiet_libraries()
    try:  # the accelerator is made inside, once the model is built (DDP must know whether the gates are used)
        final = train(recipe.optim, recipe.run, pretraining(recipe), recipe_to_yaml(recipe), _resume_mode(args))
    except CLEAR_ERRORS as err:
        print(f"infini-bench train: error: {err}", file=sys.stderr)
        return 1
    process_state().print(f"final checkpoint: {final}")
    return 0


def finetune_main(argv: list[str] | None = None) -> int:
    """Retrieval finetuning (passkey, NIAH) with the recipe's `finetune` section, from the `--from` checkpoint."""
    args = _parser(
        "infini-bench finetune", "Finetune an Infini checkpoint on passkey and NIAH retrieval (training seeds only).",
        True,
    ).parse_args(argv)
    from .loop import process_state, train
    from .recipe import RecipeError, load_recipe, recipe_to_yaml
    from .stages import finetuning

    recipe = load_recipe(args.config, args.set + args.overrides)
    if recipe.finetune is None:
        raise RecipeError(f"recipe {args.config!r} has no finetune section (finetune: {{passkey, niah, optim, run}})")
    if args.print_recipe:
        print(recipe_to_yaml(recipe))
        return 0
    _quiet_libraries()
    stage = recipe.finetune
    build = finetuning(recipe, args.checkpoint)
    try:  # the accelerator is made inside, once the checkpoint is loaded (a memory-off model leaves its gates unused)
        final = train(stage.optim, stage.run, build, recipe_to_yaml(recipe), _resume_mode(args),
                      output_key="finetune.run.output_dir")
    except CLEAR_ERRORS as err:
        print(f"infini-bench finetune: error: {err}", file=sys.stderr)
        return 1
    process_state().print(f"final checkpoint: {final}")
    return 0


def extend_main(argv: list[str] | None = None) -> int:
    """Context extension (position interpolation or YaRN) of a full-attention model: `training/extend.py`."""
    args = _parser(
        "infini-bench extend", "Extend a full-attention model (a Llama folder, or a memory-off one-segment Infini "
        "checkpoint) to a longer context: the recipe's model.rope_parameters (linear = position interpolation, "
        "yarn), language-model finetuning on its data in data.length_stages; writes <run.output_dir>/llama.", True,
    ).parse_args(argv)
    from .extend import check_extend_recipe, export_extended, extension
    from .loop import process_state, train
    from .recipe import load_recipe, recipe_to_yaml

    recipe = load_recipe(args.config, args.set + args.overrides)
    check_extend_recipe(recipe)
    if args.print_recipe:
        print(recipe_to_yaml(recipe))
        return 0
    _quiet_libraries()
    try:
        final = train(recipe.optim, recipe.run, extension(recipe, args.checkpoint), recipe_to_yaml(recipe),
                      _resume_mode(args))
    except CLEAR_ERRORS as err:
        print(f"infini-bench extend: error: {err}", file=sys.stderr)
        return 1
    state = process_state()
    if state.is_main_process:
        state.print(f"final checkpoint: {final}\nas a transformers Llama: {export_extended(final, Path(recipe.run.output_dir))}")
    return 0


def _quiet_libraries() -> None:
    logging.getLogger("accelerate").setLevel(logging.WARNING)
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # "Writing model shards" bars at every checkpoint drown the training bar


def main(argv: list[str] | None = None) -> int:
    """`python -m infini_bench.training train|finetune ...`"""
    argv = list(sys.argv[1:] if argv is None else argv)
    commands = {"train": train_main, "finetune": finetune_main, "extend": extend_main}
    if not argv or argv[0] not in commands:
        print("usage: python -m infini_bench.training {train,finetune,extend} --config RECIPE [options] [key=value ...]")
        return 2
    try:
        return commands[argv[0]](argv[1:])
    except (FileNotFoundError, FileExistsError, ValueError, *CLEAR_ERRORS) as err:
        print(f"infini-bench {argv[0]}: error: {err}", file=sys.stderr)
        return 1
