"""The quickstart's plan: which stages run, in which order, and the exact command each one runs (train, finetune,
the baseline and its Llama export, the YaRN extension, the lm-eval runs, the report). Declarative data and small
pure functions: nothing here runs or records anything (that is runner.py). To add or change a stage, edit `plan`."""
from __future__ import annotations

import json
import shlex
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from ..recipes import RECIPES_DIR
from .profiles import CPU, Profile

# What users pick instead of a memory: the baseline extended by YaRN to the longest evaluated length (its RoPE
# factor and length stages set from the profile's multiples, `_yarn_overrides`).
EXTEND_RECIPE = Path(RECIPES_DIR) / "extend-yarn.yaml"
DEFAULT_MINUTES = 10.0
# Shares of the training budget. Both models get the same recipe and the same number of minutes.
# The two models train side by side (one CPU thread each in the quickstart recipe), each for the whole budget.
SHARES = {"pretrain": 0.2, "finetune": 0.8}
# The YaRN extension's budget, as a share of --minutes: it runs after the baseline's finetuning, beside the Infini
# model's evaluation (one core each), so it adds no training time to the critical path, only its evaluation.
EXTEND_SHARE = 0.1
# The full-attention control's own settings, beside the shared recipe (benchmarks/RESULTS_train.md §10): a
# transformers Llama's initialisation (0.02, not the Infini recipe's 0.08, tuned for its memory: at 0.08 the
# induction circuit had not formed after 4,000 copy steps), and in-context copying steps before its retrieval
# finetuning (without them it copies no key it has found: 6-12 % passkey at its own length). The Infini model's
# memory copies through its convolution and needs neither; both spend the same minutes.
BASELINE_PRETRAIN = ("model.initializer_range=0.02",)
BASELINE_FINETUNE = ("finetune.copy_steps=4000",)
MULTIKEY_VARIANT = "multikey_2"  # the multikey NIAH family the quickstart recipes finetune on, and evaluate
DEFAULT_SAMPLES = 3  # per depth and length
PPL_METADATA = {"doc_tokens": 4096, "min_doc_tokens": 4096, "max_docs": 3}
MIN_MINUTES = 0.01  # below this a stage's budget rounds to nothing


class QuickstartError(ValueError):
    """Bad `--out` / `--minutes`, or a stage that failed; the message says which and how to go on."""


@dataclass
class Stage:
    """One step of the quickstart: what it runs, what it writes, and what its record depends on."""

    name: str
    title: str
    command: list[str] = field(default_factory=list)  # a subprocess argv, or empty for `action`
    action: Callable[[], None] | None = None  # in process, for the one step no command covers (Llama export)
    folder: Path | None = None  # the folder this stage writes (marked as the quickstart's own, see `records.claim`)
    outputs: tuple[Path, ...] = ()  # what must exist for the stage to count as done (folders: non-empty)
    depends: tuple[str, ...] = ()  # upstream stages: when one of them runs again, this one does too
    resumable: bool = False  # an interrupted run continues in its folder (training) instead of starting over
    background: bool = False  # runs beside the foreground stages (its output goes to DIR/logs/<name>.log)
    files: tuple[Path, ...] = ()  # input files whose contents are part of the stage's inputs (the recipe)
    params: str = ""  # further inputs of a stage that has no command line (the Llama export)
    threads: int | None = None  # CPU threads of its command (OMP_NUM_THREADS); None: the library's default
    beside_eval: bool = False  # a training the evaluations need not wait for (only its own evaluation does)
    profile: str = CPU.name  # the profile it ran under: part of its inputs (a GPU-trained model is another model)


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "infini_bench.cli", *args]


def finetune_length(recipe_path: Path) -> int:
    """The recipe's longest passkey finetuning length: the 1x of the evaluation lengths."""
    recipe = yaml.safe_load(recipe_path.read_text())
    return max(recipe["finetune"]["passkey"]["lengths"])


def _length_name(tokens: int) -> str:
    """The task-name suffix of a length; the quickstart only evaluates lengths that have tasks."""
    from ..tasks.names import CONTEXT_LENGTH_NAMES, format_length

    name = format_length(tokens)
    if name not in CONTEXT_LENGTH_NAMES:
        raise QuickstartError(
            f"evaluation length {tokens} (a multiple of the recipe's finetuning length) has no passkey/NIAH task; "
            f"finetune at one of {', '.join(CONTEXT_LENGTH_NAMES[:5])} tokens"
        )
    return name


def retrieval_tasks(lengths: list[int]) -> list[str]:
    """passkey and NIAH (single needle) at every length, then RULER's multikey_2 NIAH (the asked key's value among
    distractor needles with other keys) at the lengths it has tasks for: the two NIAH families the recipes train.
    (multikey_1, four needles in essay text, starts at 512 tokens and does not fit the CPU recipe's 256.)"""
    from ..tasks.names import niah_lengths, niah_task

    names = [_length_name(n) for n in lengths]
    multikey = set(niah_lengths(MULTIKEY_VARIANT))
    return ([f"{family}_{name}" for family in ("passkey", "niah") for name in names]
            + [niah_task(MULTIKEY_VARIANT, name) for name in names if name in multikey])


def plan(
    out: Path,
    minutes: float,
    recipe: Path | None = None,
    samples: int = DEFAULT_SAMPLES,
    multiples: tuple[int, ...] | None = None,
    profile: Profile = CPU,
    seed: int | None = None,
) -> list[Stage]:
    """The stages, in order, with their exact commands, folders, outputs and upstream stages. `recipe` and
    `multiples` default to the profile's; `seed` (None: the recipe's) sets every training seed of both models
    (the evaluation documents stay the same: their seeds are the tasks' own)."""
    recipe = profile.recipe if recipe is None else recipe
    multiples = profile.multiples if multiples is None else multiples
    length = finetune_length(recipe)
    lengths = [length * m for m in multiples]
    infini, base, yarn = out / "infini", out / "baseline", out / "yarn"
    pre_min, fin_min = _budgets(minutes)
    # The baseline's checkpoint carries these into its finetuning: one segment over the whole sequence, no memory
    # (full attention). Its pretraining sequences are one such segment long.
    baseline_model = ["model.use_memory=false", f"model.segment_length={length}", f"data.sequence_length={length}"]
    pre_seed = [] if seed is None else [f"run.seed={seed}"]
    fin_seed = [] if seed is None else [f"finetune.{key}.seed={seed}" for key in ("run", "passkey", "niah")]

    def training(name: str, title: str, command: list[str], folder: Path, depends: tuple[str, ...] = (),
                 background: bool = False) -> Stage:
        return Stage(name, title, command, folder=folder, outputs=(folder / "latest",), depends=depends,
                     resumable=True, files=(recipe,), background=background)

    stages = [
        training("infini_pretrain", "Pretrain the Infini model on the offline corpus",
                 _cli("train", "--config", str(recipe), f"run.output_dir={infini / 'pretrain'}",
                      f"run.max_minutes={pre_min}", *pre_seed), infini / "pretrain"),
        training("infini_finetune", "Finetune the Infini model (passkey, NIAH)",
                 _cli("finetune", "--config", str(recipe), "--from", str(infini / "pretrain" / "latest"),
                      f"finetune.run.output_dir={infini / 'finetune'}", f"finetune.run.max_minutes={fin_min}",
                      *fin_seed),
                 infini / "finetune", depends=("infini_pretrain",)),
        training("baseline_pretrain", "Pretrain the full-attention baseline (same recipe, one segment, no memory, a Llama's init)",
                 _cli("train", "--config", str(recipe), *baseline_model, *BASELINE_PRETRAIN,
                      f"run.output_dir={base / 'pretrain'}",
                      f"run.max_minutes={pre_min}", *pre_seed), base / "pretrain", background=True),
        training("baseline_finetune", "Finetune the full-attention baseline (in-context copying, then passkey, NIAH)",
                 _cli("finetune", "--config", str(recipe), "--from", str(base / "pretrain" / "latest"),
                      f"finetune.run.output_dir={base / 'finetune'}", f"finetune.run.max_minutes={fin_min}",
                      *BASELINE_FINETUNE, *fin_seed),
                 base / "finetune", depends=("baseline_pretrain",), background=True),
        Stage("baseline_export", "Export the baseline as a transformers Llama",
              action=lambda: export_llama(base / "finetune" / "latest", base / "llama", max(lengths) * 2),
              folder=base / "llama", outputs=(base / "llama" / "config.json",), depends=("baseline_finetune",),
              params=f"max_position_embeddings={max(lengths) * 2}", background=True),
        Stage("yarn_extend", f"Extend the baseline {max(multiples)}x with YaRN (context extension as users do it)",
              _cli("extend", "--config", str(EXTEND_RECIPE), "--from", str(base / "finetune" / "latest"),
                   f"run.output_dir={yarn}", f"run.max_minutes={_extend_budget(minutes)}",
                   *_yarn_overrides(length, max(multiples)), *pre_seed),
              folder=yarn, outputs=(yarn / "latest", yarn / "llama" / "config.json"), depends=("baseline_finetune",),
              resumable=True, files=(recipe, EXTEND_RECIPE), background=True, beside_eval=True),
    ]
    retrieval = ",".join(retrieval_tasks(lengths))
    checkpoint = infini / "finetune" / "latest"
    infini_dtype = f",dtype={profile.infini_dtype}" if profile.infini_dtype else ""
    models = [
        ("infini", "infini", f"pretrained={checkpoint}{infini_dtype}", "infini_finetune"),
        ("memory_off", "infini", f"pretrained={checkpoint},use_memory=False{infini_dtype}", "infini_finetune"),
        ("llama", "hf", f"pretrained={base / 'llama'},dtype={profile.llama_dtype}", "baseline_export"),
        # max_length: lm-eval's hf keeps max_gen_toks of it for the answer and cuts prompts longer than the rest;
        # the extended Llama's config says its target length (as YaRN's factor implies), the export above twice it
        ("yarn", "hf", f"pretrained={yarn / 'llama'},dtype={profile.llama_dtype},max_length={max(lengths) * 2}",
         "yarn_extend"),
    ]
    tasks = f"{retrieval},ppl_stdlib"
    metadata = json.dumps({"samples": samples, "n_depths": 11, **PPL_METADATA})
    for label, model, args, upstream in models:
        target = out / "eval" / label
        extra = ("--gen_kwargs", profile.llama_gen_kwargs) if model == "hf" and profile.llama_gen_kwargs else ()
        stages.append(Stage(
            f"eval_{label}", f"lm-eval: {label} on passkey + NIAH (single, multikey) at "
            f"{', '.join(map(_length_name, lengths))} and ppl_stdlib",
            [sys.executable, "-m", "infini_bench.harness", "--model", model, "--model_args", args, "--tasks", tasks,
             "--metadata", metadata, "--device", profile.device, "--batch_size", profile.batch_size,
             *extra, "--output_path", str(target), "--log_samples"],
            folder=target, outputs=(target,), depends=(upstream,), background=label == "yarn",
            threads=profile.eval_threads,
        ))
    report = out / "report"
    stages.append(Stage(
        "report", "Write the report",
        _cli("report", *(f"{label}={out / 'eval' / label}" for label, *_ in models), "-o", str(report),
             *(arg for label, *_ in models for arg in ("--train-length", f"{label}={length}")),
             # the two Llamas are the controls: the headline warns when one fails at the length it was finetuned
             # on retrieval (YaRN's extension trains language modelling only, so its retrieval length stays 1x)
             "--control", "llama", "--control", "yarn"),
        folder=report, outputs=(report / "report.html", report / "summary.json"),
        depends=tuple(f"eval_{label}" for label, *_ in models),
    ))
    for stage in stages:
        stage.profile = profile.name
    return stages


def _extend_budget(minutes: float) -> float:
    """The YaRN extension's budget in minutes (recipes take them to 3 decimals; at least the smallest step)."""
    return max(0.001, round(minutes * EXTEND_SHARE, 3))


def _yarn_overrides(length: int, multiple: int) -> list[str]:
    """extend-yarn.yaml set for this profile: YaRN by `multiple` over the finetuning `length`, trained in 2x
    stages from 2x up to the target (the guide's gradual schedule)."""
    stages, n = [], 2
    while n < multiple:
        stages.append(length * n)
        n *= 2
    stages.append(length * multiple)
    rope = f"{{rope_type: yarn, factor: {float(multiple)}, original_max_position_embeddings: {length}}}"
    return [f"model.rope_parameters={rope}", f"data.sequence_length={length * multiple}",
            f"data.length_stages=[{','.join(map(str, stages))}]"]


def _budgets(minutes: float) -> tuple[float, float]:
    """The pretraining and finetuning budgets in minutes (recipes take them to 3 decimals)."""
    return round(minutes * SHARES["pretrain"], 3), round(minutes * SHARES["finetune"], 3)


def export_llama(checkpoint: Path, target: Path, max_positions: int) -> None:
    """The baseline was trained as a one-segment, memory-off Infini model, which is exactly a Llama: save it as one
    so lm-eval's own `hf` model evaluates it. (`target` is the stage's own folder, emptied and marked before.)"""
    from transformers import AutoTokenizer

    from ..modeling import infini_to_llama, load_infini

    llama = infini_to_llama(load_infini(checkpoint), max_position_embeddings=max_positions)
    llama.save_pretrained(target)
    AutoTokenizer.from_pretrained(checkpoint).save_pretrained(target)


def check_options(minutes: float, samples: int, recipe: Path, seed: int | None) -> None:
    """Refuse bad options before anything is written."""
    if not minutes > 0:
        raise QuickstartError(f"--minutes={minutes!r} is invalid: the training budget must be > 0 minutes")
    if minutes < MIN_MINUTES or min(_budgets(minutes)) <= 0:
        raise QuickstartError(
            f"--minutes={minutes!r} is too small: pretraining gets {SHARES['pretrain']:.0%} of it and finetuning "
            f"{SHARES['finetune']:.0%}, in steps of 0.001 minutes; give --minutes {MIN_MINUTES:g} or more"
        )
    if samples < 1:
        raise QuickstartError(f"--samples={samples!r} is invalid: at least 1 sample per depth and length")
    if not recipe.is_file():
        raise QuickstartError(f"--recipe {str(recipe)!r} does not exist")
    if seed is not None and not 0 <= seed < 2**62:
        raise QuickstartError(f"--seed={seed!r} is invalid: training seeds lie in [0, 2**62)")


def commands_script(stages: list[Stage]) -> str:
    """commands.sh: every stage's command, in order, for a user to re-run any step by hand."""
    return ("#!/usr/bin/env bash\n# The commands `infini-bench quickstart` runs, in order.\nset -e\n"
            + "".join(f"# {s.title}\n{shlex.join(s.command)}\n" for s in stages if s.command))

