"""`infini-bench quickstart`: the whole product on a laptop, no GPU and no network (and a larger model on a GPU).

train a tiny Infini model (pretraining, then passkey and NIAH finetuning) → the same recipe for a full-attention baseline
(one segment, no memory, exported as a transformers Llama) → that baseline extended by YaRN to the longest evaluated
length (`infini-bench extend`, what users pick instead of a memory) → lm-eval on the passkey / NIAH (single and
multikey) grid at 1×–16× the finetuning length and `ppl_stdlib`, for the Infini model, its memory-off control, the
Llama and the YaRN Llama (both `--model hf`) → the report, which warns when either Llama control fails at its own
finetuning length. With CUDA the GPU profile trains a larger model in the same budget and evaluates to
64× (`Profile`, `select_profile`). Every stage is an ordinary command a user could type; the commands are printed,
saved to `commands.sh`, and a finished stage is recorded with its inputs (options, recipe contents, upstream
outputs, profile), so a second run (or one after Ctrl-C) picks up where it stopped and reruns exactly the stages
whose inputs changed. The quickstart empties only folders it marked as its own; a non-empty `--out` it did not make is refused.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import shlex
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import yaml

from .recipes import RECIPES_DIR

RECIPE = Path(RECIPES_DIR) / "quickstart-cpu.yaml"
GPU_RECIPE = Path(RECIPES_DIR) / "quickstart-gpu.yaml"
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
MULTIKEY_VARIANT = "multikey_2"  # the multikey NIAH family the quickstart recipes finetune on, and evaluate
LENGTH_MULTIPLES = (1, 2, 4, 8, 16)
GPU_LENGTH_MULTIPLES = (1, 2, 4, 8, 16, 32, 64)
DEFAULT_SAMPLES = 3  # per depth and length
PPL_METADATA = {"doc_tokens": 4096, "min_doc_tokens": 4096, "max_docs": 3}
MIN_MINUTES = 0.01  # below this a stage's budget rounds to nothing
MARKER = ".infini-bench-quickstart"  # in every folder the quickstart made (and so may empty)
# `--out` ignores itself in git (as a venv or pytest's cache does), so the README's first command, run inside a
# checkout with the default `--out ./quickstart`, leaves the checkout clean
GITIGNORE = "# written by infini-bench quickstart: everything here is generated (delete this file to commit it)\n*\n"


class QuickstartError(ValueError):
    """Bad `--out` / `--minutes`, or a stage that failed; the message says which and how to go on."""


@dataclass(frozen=True)
class Profile:
    """What the machine decides: the recipe and how far and how the three models are evaluated.

    One object, so that everything that differs between a laptop and a GPU box is in one place and goes into every
    stage's recorded inputs (`Stage.profile`): switching machines reruns the stages instead of mixing results."""

    name: str
    recipe: Path
    multiples: tuple[int, ...]  # evaluation lengths, as multiples of the recipe's finetuning length
    device: str  # lm-eval --device for all three models
    batch_size: str  # lm-eval --batch_size
    infini_dtype: str | None  # the Infini adapter's dtype (None: its default, float32)
    llama_dtype: str  # the exported Llama's dtype under lm-eval's `hf`
    eval_threads: int | None = None  # CPU threads per evaluation (two run side by side); None: torch's default
    llama_gen_kwargs: str | None = None  # lm-eval --gen_kwargs for the Llama's run


# The CPU profile's device, dtypes and batch size are what the README's measured runs used. One thread per
# evaluation, two at a time: the Infini model, memory off and the Llama in turn on one core, the YaRN extension and
# then its evaluation on the other. The Llama decodes with transformers' static
# KV cache: the same answers (33 of 33 NIAH 4k answers identical) without the dynamic cache's copy of the whole
# cache at every new token (its NIAH 4k evaluation 53 -> 32 s on one core). Not on the GPU: there a static cache
# needs an explicit attention mask over its full length, which at 128K tokens rules out the flash SDPA kernel.
CPU = Profile("cpu", RECIPE, LENGTH_MULTIPLES, device="cpu", batch_size="4", infini_dtype=None, llama_dtype="float32",
              eval_threads=1, llama_gen_kwargs="cache_implementation=static")
# bf16 on the GPU: the models trained under bf16 autocast, fla-core's delta_l2 kernel refuses float32, and the
# Llama's float32 attention at 128K tokens would take the slow (non-flash) SDPA path. Batch 8: a 30M model's
# 128K-token batch (prefill in 16K chunks for Infini; a 128K KV cache of 8 layers × 512 per row for the Llama) is a
# few GB per row. Unmeasured, like recipes/quickstart-gpu.yaml.
GPU = Profile("gpu", GPU_RECIPE, GPU_LENGTH_MULTIPLES, device="cuda", batch_size="8", infini_dtype="bfloat16",
              llama_dtype="bfloat16")


def select_profile(recipe: str | Path | None = None) -> tuple[Profile, str]:
    """The profile for this machine and why: GPU exactly when torch sees CUDA. A `--recipe` replaces the profile's
    recipe only; device, dtype, batch size and evaluation multiples still follow the machine (evaluating a
    user's recipe on the CPU while a GPU idles would only be slow). torch is imported here, not at module level,
    so `import infini_bench` and `--help` stay light."""
    import torch

    if torch.cuda.is_available():
        profile, why = GPU, "torch.cuda.is_available() is True"
    else:
        profile, why = CPU, "no CUDA device (torch.cuda.is_available() is False)"
    if recipe is not None:
        recipe = Path(recipe)
        if recipe.resolve() != profile.recipe.resolve():
            why += f"; --recipe {recipe} replaces {profile.recipe.name}"
        profile = replace(profile, recipe=recipe)
    return profile, why


@dataclass
class Stage:
    name: str
    title: str
    command: list[str] = field(default_factory=list)  # a subprocess argv, or empty for `action`
    action: object = None  # an in-process callable for the one step no command covers (Llama export)
    folder: Path | None = None  # the folder this stage writes (marked as the quickstart's own, see `_claim`)
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


def _finetune_length(recipe_path: Path) -> int:
    recipe = yaml.safe_load(recipe_path.read_text())
    return max(recipe["finetune"]["passkey"]["lengths"])


def _length_name(tokens: int) -> str:
    """The task-name suffix of a length; the quickstart only evaluates lengths that have tasks."""
    from .tasks.names import CONTEXT_LENGTH_NAMES, format_length

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
    from .tasks.names import niah_lengths, niah_task

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
    length = _finetune_length(recipe)
    lengths = [length * m for m in multiples]
    infini, base, yarn = out / "infini", out / "baseline", out / "yarn"
    pre_min, fin_min = _budgets(minutes)
    # The baseline's checkpoint carries these into its finetuning: one segment over the whole sequence, no memory
    # (full attention). Its pretraining sequences are one such segment long.
    baseline_model = ["model.use_memory=false", f"model.segment_length={length}", f"data.sequence_length={length}"]
    pre_seed = [] if seed is None else [f"run.seed={seed}"]
    fin_seed = [] if seed is None else [f"finetune.{key}.seed={seed}" for key in ("run", "passkey", "niah")]

    def training(name: str, title: str, command: list[str], folder: Path, depends=(), background=False) -> Stage:
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
        training("baseline_pretrain", "Pretrain the full-attention baseline (same recipe, one segment, no memory)",
                 _cli("train", "--config", str(recipe), *baseline_model, f"run.output_dir={base / 'pretrain'}",
                      f"run.max_minutes={pre_min}", *pre_seed), base / "pretrain", background=True),
        training("baseline_finetune", "Finetune the full-attention baseline (passkey, NIAH)",
                 _cli("finetune", "--config", str(recipe), "--from", str(base / "pretrain" / "latest"),
                      f"finetune.run.output_dir={base / 'finetune'}", f"finetune.run.max_minutes={fin_min}",
                      *fin_seed),
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

    from .modeling import infini_to_llama, load_infini

    llama = infini_to_llama(load_infini(checkpoint), max_position_embeddings=max_positions)
    llama.save_pretrained(target)
    AutoTokenizer.from_pretrained(checkpoint).save_pretrained(target)


# --- what belongs to the quickstart -----------------------------------------------------------------------------
# The quickstart deletes only folders that carry its marker file: `--out` itself (marked when the quickstart creates
# it, or finds it empty) and each stage's folder (marked with the inputs that the folder's contents were made from).


def _read_marker(folder: Path) -> dict | None:
    try:
        return json.loads((folder / MARKER).read_text())
    except (FileNotFoundError, NotADirectoryError):
        return None
    except (OSError, json.JSONDecodeError):
        return {}


def _write_marker(folder: Path, **fields) -> None:
    tmp = folder / (MARKER + ".tmp")
    tmp.write_text(json.dumps({"written_by": "infini-bench quickstart", **fields}, indent=1))
    os.replace(tmp, folder / MARKER)


def _some_entries(folder: Path, n: int = 3) -> str:
    names = sorted(p.name + ("/" if p.is_dir() else "") for p in folder.iterdir())
    return ", ".join(names[:n]) + (f" and {len(names) - n} more" if len(names) > n else "")


def check_out(out: Path) -> None:
    """`--out` must be new, empty, or an earlier quickstart's folder: anything else is refused untouched."""
    if out.exists() and not out.is_dir():
        raise QuickstartError(f"--out {str(out)!r} is a file: give a folder (new or from an earlier quickstart run)")
    if out.is_dir() and _read_marker(out) is None and any(out.iterdir()):
        older = " (it looks like an older quickstart run, which did not mark its folders)" if _state_file(out).exists() else ""
        raise QuickstartError(
            f"--out {str(out)!r} already holds files the quickstart did not write ({_some_entries(out)}){older}: "
            f"give a new or empty folder, e.g. --out {str(out / 'quickstart')!r}; nothing was changed"
        )
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".write-test"
        probe.write_text("ok")
        probe.unlink()
        if _read_marker(out) is None:
            _write_marker(out, kind="quickstart output folder")
        if not (out / ".gitignore").exists():
            (out / ".gitignore").write_text(GITIGNORE)
    except OSError as err:
        raise QuickstartError(f"--out {str(out)!r} is not writable: {err.strerror or err}") from None


def _claim(stage: Stage, inputs: dict) -> bool:
    """Make `stage.folder` the stage's, for these inputs. Returns True when an interrupted run of the same inputs
    is continued there. A folder the quickstart did not mark is never deleted: that is an error."""
    folder = stage.folder
    resumed = False
    if folder.is_symlink() or folder.exists():
        marker = _read_marker(folder) if folder.is_dir() and not folder.is_symlink() else None
        if marker is None or marker.get("stage") != stage.name:
            if folder.is_dir() and not folder.is_symlink() and not any(folder.iterdir()):
                pass  # an empty folder holds nothing to lose
            else:
                raise QuickstartError(
                    f"{str(folder)!r} holds files the quickstart did not write (no {MARKER} marker of stage "
                    f"{stage.name!r} in it): move it elsewhere, or choose another --out; nothing was deleted"
                )
        elif stage.resumable and marker.get("inputs") == inputs:
            resumed = True
        else:
            shutil.rmtree(folder)
    folder.mkdir(parents=True, exist_ok=True)
    _write_marker(folder, stage=stage.name, inputs=inputs)
    return resumed


# --- what a finished stage was made from --------------------------------------------------------------------------


def _digest(data: bytes | str) -> str:
    return hashlib.sha256(data.encode() if isinstance(data, str) else data).hexdigest()[:16]


def _inputs(stage: Stage, done: dict) -> dict:
    """The stage's inputs as named parts: its command (every option; the interpreter's path left out), the contents
    of its input files, and the recorded output of each upstream stage."""
    command = shlex.join(stage.command[1:]) if stage.command else f"{stage.title} {stage.params}"
    parts = {"command": _digest(command), "profile": stage.profile}
    for path in stage.files:
        parts[f"file {path.name}"] = _digest(path.read_bytes())
    for name in stage.depends:
        parts[f"upstream {name}"] = (done.get(name) or {}).get("output")
    return parts


def _files(path: Path) -> list[Path]:
    """The files an output path stands for (a folder's, markers left out; a link followed); [] when absent."""
    path = path.resolve() if path.is_symlink() else path
    if path.is_file():
        return [path]
    if path.is_dir():
        return sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith(MARKER))
    return []


def _missing(stage: Stage) -> str | None:
    """The first of the stage's outputs that is absent (or an empty folder), else None."""
    return next((str(p) for p in stage.outputs if not _files(p)), None)


def _output_identity(stage: Stage) -> str | None:
    """A fingerprint of the stage's outputs (every file's path, size and modification time); None when one is
    missing or empty. `latest` links are followed, so a checkpoint that changes changes it."""
    h = hashlib.sha256()
    for path in stage.outputs:
        files = _files(path)
        if not files:
            return None
        for file in files:
            stat = file.stat()
            h.update(f"{file}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return h.hexdigest()[:16]


def _stale_reason(stage: Stage, record: dict, inputs: dict) -> str | None:
    """Why a stage recorded as done must run again, or None when its record still holds."""
    recorded = record.get("inputs")
    if not isinstance(recorded, dict):
        return "its record has no inputs to compare"
    recorded = {"profile": CPU.name, **recorded}  # records from before profiles were all made on the CPU
    if recorded["profile"] != inputs["profile"]:
        return f"it was made under the {recorded['profile']} profile and this run uses the {inputs['profile']} one"
    if recorded.get("command") != inputs["command"]:
        return "its options differ from the recorded run's"
    for key in inputs:
        if key.startswith("file ") and recorded.get(key) != inputs[key]:
            return f"the contents of {key[5:]} changed"
    for key in inputs:
        if key.startswith("upstream ") and recorded.get(key) != inputs[key]:
            return f"{key[9:]}, whose output it uses, was made again"
    if recorded != inputs:
        return "its inputs differ from the recorded run's"
    missing = _missing(stage)
    if missing:
        return f"its output {missing} is missing"
    if _output_identity(stage) != record.get("output"):
        return "its output changed since it was recorded"
    return None


def _state_file(out: Path) -> Path:
    return out / "quickstart_stages.json"


def _finished(out: Path) -> dict:
    try:
        return json.loads(_state_file(out).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def _write_state(out: Path, done: dict) -> None:
    tmp = _state_file(out).with_suffix(".tmp")
    tmp.write_text(json.dumps(done, indent=2))
    os.replace(tmp, _state_file(out))


def _mark(out: Path, stage: Stage, inputs: dict, seconds: float) -> None:
    with _MARK_LOCK:
        done = _finished(out)
        done[stage.name] = {"command": shlex.join(stage.command) if stage.command else stage.title,
                            "seconds": round(seconds, 1), "inputs": inputs, "output": _output_identity(stage)}
        _write_state(out, done)


def _unmark(out: Path, stage: Stage) -> None:
    with _MARK_LOCK:
        done = _finished(out)
        if done.pop(stage.name, None) is not None:
            _write_state(out, done)


def check_options(minutes: float, samples: int, recipe: Path) -> None:
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


def run(
    out: Path,
    minutes: float,
    recipe: Path | None = None,
    samples: int = DEFAULT_SAMPLES,
    multiples: tuple[int, ...] | None = None,
    profile: Profile = CPU,
    why: str = "",
    seed: int | None = None,
) -> int:
    """Plan, then run every stage whose recorded inputs no longer hold (see the module docstring)."""
    recipe = profile.recipe if recipe is None else recipe
    multiples = profile.multiples if multiples is None else multiples
    check_options(minutes, samples, recipe)
    if seed is not None and not 0 <= seed < 2**62:
        raise QuickstartError(f"--seed={seed!r} is invalid: training seeds lie in [0, 2**62)")
    # before check_out: a bad recipe leaves --out alone
    stages = plan(out, minutes, recipe, samples, multiples, profile, seed)
    check_out(out)
    print(f"profile: {profile.name} ({why or 'given'}): recipe {recipe}, lm-eval --device {profile.device}, "
          f"lengths {','.join(f'{m}x' for m in multiples)} of {_finetune_length(recipe)} tokens", flush=True)
    (out / "commands.sh").write_text(
        "#!/usr/bin/env bash\n# The commands `infini-bench quickstart` runs, in order.\nset -e\n"
        + "".join(f"# {s.title}\n{shlex.join(s.command)}\n" for s in stages if s.command)
    )
    _STOP.clear()
    started = time.monotonic()
    numbered = list(enumerate(stages, 1))
    background = [(i, s) for i, s in numbered if s.background]
    progress = _Progress()
    trainings = {s.name for s in stages if s.resumable and not s.beside_eval}
    lane = threading.Thread(target=_run_lane, args=(out, background, len(stages), progress, trainings), daemon=True)
    lane.start()
    try:
        for i, stage in numbered:
            if stage.background:
                continue
            progress.wait_for(_needs(stage, trainings))
            _run_stage(out, stage, i, len(stages), log=None)
            progress.finish(stage.name)
        progress.wait_for({s.name for _, s in background})
    except BaseException:
        _STOP.set()
        progress.stop()
        for child in list(_CHILDREN):
            child.terminate()
        lane.join()
        raise
    total = (time.monotonic() - started) / 60
    print(f"\nquickstart finished in {total:.1f} min (this run)")
    for name, path in (("report", out / "report" / "report.html"), ("summary", out / "report" / "summary.json")):
        if not path.is_file():  # every stage checked its outputs: this would be a bug, so say it rather than print
            raise QuickstartError(f"{path} is missing although every stage finished; run the same command again")
        print(f"{name + ':':<10} {path}")
    print(f"commands:  {out / 'commands.sh'} (every command above, to re-run any step by hand)")
    return 0


_STOP = threading.Event()
_MARK_LOCK = threading.Lock()
_CHILDREN: list[subprocess.Popen] = []  # the background lane's running command, stopped with the foreground


class _Progress:
    """The stages finished so far, shared by the foreground and the background lane: each stage first waits for
    what it needs (`_needs`). A failure or an interruption on either side stops the other at its next wait."""

    def __init__(self) -> None:
        self.finished: set[str] = set()
        self.error: BaseException | None = None
        self.stopped = False
        self._changed = threading.Condition()

    def finish(self, name: str) -> None:
        with self._changed:
            self.finished.add(name)
            self._changed.notify_all()

    def stop(self, error: BaseException | None = None) -> None:
        with self._changed:
            self.stopped = True
            self.error = self.error or error
            self._changed.notify_all()

    def wait_for(self, names: set[str]) -> None:
        with self._changed:
            self._changed.wait_for(lambda: names <= self.finished or self.stopped)
        if self.error is not None:
            raise self.error
        if not names <= self.finished:
            raise KeyboardInterrupt  # the other side was interrupted


def _needs(stage: Stage, trainings: set[str]) -> set[str]:
    """What `stage` waits for: its upstream stages, and for an evaluation every training too (their budgets are
    in minutes, and an evaluation beside a training would slow it)."""
    return {*stage.depends, *(trainings if stage.name.startswith("eval_") else ())}


def _run_lane(out: Path, stages: list[tuple[int, Stage]], total: int, progress: _Progress,
              trainings: set[str]) -> None:
    """The background lane: its stages in order, each logged to a file; the first failure stops the lane."""
    (out / "logs").mkdir(exist_ok=True)
    try:
        for i, stage in stages:
            progress.wait_for(_needs(stage, trainings))
            _run_stage(out, stage, i, total, log=out / "logs" / f"{stage.name}.log")
            progress.finish(stage.name)
    except KeyboardInterrupt:
        progress.stop()
    except BaseException as err:  # raised in the foreground at its next wait
        progress.stop(err)


def _run_stage(out: Path, stage: Stage, i: int, total: int, log: Path | None) -> None:
    head = f"[{i}/{total}] {stage.title}"
    with _MARK_LOCK:
        record = _finished(out).get(stage.name)
        inputs = _inputs(stage, _finished(out))
    why = None
    if record is not None:
        why = _stale_reason(stage, record, inputs)
        if why is None:
            print(f"{head}: already done, skipped", flush=True)
            return
        _unmark(out, stage)  # until it has run again, it is not done
    resumed = _claim(stage, inputs)
    note = f"\n  recorded as done, but {why}: running it again" if why else ""
    note += f"\n  continuing the interrupted run in {stage.folder}" if resumed else ""
    where = f"\n  (running alongside; output in {log})" if log else ""
    print(f"\n{head}{note}\n  $ {shlex.join(stage.command) if stage.command else '(in process)'}{where}", flush=True)
    t0 = time.monotonic()
    code = _execute(stage, log)
    if code != 0:
        if code < 0 or code == 130 or _STOP.is_set():
            raise KeyboardInterrupt
        raise QuickstartError(f"stage {stage.name!r} failed (exit code {code}); fix the cause and run again to resume")
    missing = _missing(stage)
    if missing:
        raise QuickstartError(f"stage {stage.name!r} ended without writing {missing}; see its output above")
    _mark(out, stage, inputs, time.monotonic() - t0)
    print(f"{head}: done in {time.monotonic() - t0:.0f} s", flush=True)


def _execute(stage: Stage, log: Path | None) -> int:
    """Run the stage's command (its exit code) or in-process action (0)."""
    if not stage.command:
        stage.action()
        return 0
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false"}
    if stage.threads is not None:
        env.update(OMP_NUM_THREADS=str(stage.threads), MKL_NUM_THREADS=str(stage.threads))
    if log is None:
        return subprocess.call(stage.command, env=env)
    with open(log, "w") as handle:
        child = subprocess.Popen(stage.command, env=env, stdout=handle, stderr=subprocess.STDOUT)
        _CHILDREN.append(child)
        try:
            return child.wait()
        finally:
            _CHILDREN.remove(child)


def _multiples(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(","))
    except ValueError:
        values = ()
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of positive integers, e.g. 1,2,4")
    return values


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="infini-bench quickstart", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="quickstart",
                        help="output folder (default ./quickstart): new, empty, or an earlier quickstart's; rerun to "
                        "resume. It carries a .gitignore of '*', so a run inside a git checkout leaves it clean")
    parser.add_argument("--minutes", type=float, default=DEFAULT_MINUTES,
                        help="training budget in minutes; the Infini model and the baseline train side by side, "
                        f"each within it (default {DEFAULT_MINUTES:g}, at least {MIN_MINUTES:g})")
    parser.add_argument("--recipe", default=None,
                        help="training recipe (default: the profile's, recipes/quickstart-gpu.yaml when torch sees "
                        "CUDA, else recipes/quickstart-cpu.yaml); replaces the recipe only: the device, dtype and "
                        "evaluation lengths still follow the machine")
    parser.add_argument("--samples", type=int, default=DEFAULT_SAMPLES,
                        help=f"evaluation samples per depth and length (default {DEFAULT_SAMPLES})")
    parser.add_argument("--multiples", type=_multiples, default=None,
                        help="evaluation lengths as multiples of the finetuning length (default: the profile's, "
                        f"{','.join(map(str, CPU.multiples))} on the CPU, "
                        f"{','.join(map(str, GPU.multiples))} with CUDA)")
    parser.add_argument("--seed", type=int, default=None,
                        help="training seed of both models: pretraining order, finetuning order and examples "
                        "(default: the recipe's); the evaluation documents are the same for every seed")
    args = parser.parse_args(argv)
    try:
        profile, why = select_profile(None if args.recipe is None else Path(args.recipe).resolve())
        return run(Path(args.out).resolve(), args.minutes, profile.recipe, args.samples, args.multiples, profile, why,
                   args.seed)
    except QuickstartError as err:
        print(f"infini-bench quickstart: error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\ninfini-bench quickstart: interrupted; run the same command again to resume from the last finished "
              "stage", file=sys.stderr)
        return 130
