"""`infini-bench quickstart`: the whole product on a laptop, no GPU and no network.

train a tiny Infini model (pretraining, then passkey finetuning) → the same recipe for a full-attention baseline
(one segment, no memory, exported as a transformers Llama) → lm-eval on the passkey / NIAH grid at 1×–16× the
finetuning length and `ppl_stdlib`, for the Infini model, its memory-off control and the Llama (`--model hf`) →
the report. Every stage is an ordinary command a user could type; the commands are printed, saved to
`commands.sh`, and a finished stage is recorded so a second run (or one after Ctrl-C) picks up where it stopped.
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from .recipes import RECIPES_DIR

RECIPE = Path(RECIPES_DIR) / "quickstart-cpu.yaml"
DEFAULT_MINUTES = 10.0
# Shares of the training budget. Both models get the same recipe and the same number of minutes.
# The two models train side by side (one CPU thread each in the quickstart recipe), each for the whole budget.
SHARES = {"pretrain": 0.2, "finetune": 0.8}
LENGTH_MULTIPLES = (1, 2, 4, 8, 16)
DEFAULT_SAMPLES = 3  # per depth and length
PPL_METADATA = {"doc_tokens": 4096, "min_doc_tokens": 4096, "max_docs": 3}


class QuickstartError(ValueError):
    """Bad `--out` / `--minutes`, or a stage that failed; the message says which and how to go on."""


@dataclass
class Stage:
    name: str
    title: str
    command: list[str] = field(default_factory=list)  # a subprocess argv, or empty for `action`
    action: object = None  # an in-process callable for the one step no command covers (Llama export)
    clear: Path | None = None  # output folder emptied before running, so a rerun never mixes two runs
    background: bool = False  # runs beside the foreground stages (its output goes to DIR/logs/<name>.log)


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


def plan(
    out: Path,
    minutes: float,
    recipe: Path = RECIPE,
    samples: int = DEFAULT_SAMPLES,
    multiples: tuple[int, ...] = LENGTH_MULTIPLES,
) -> list[Stage]:
    """The stages, in order, with their exact commands."""
    length = _finetune_length(recipe)
    lengths = [length * m for m in multiples]
    infini, base = out / "infini", out / "baseline"
    pre_min = round(minutes * SHARES["pretrain"], 3)
    fin_min = round(minutes * SHARES["finetune"], 3)
    # The baseline's checkpoint carries these into its finetuning: one segment over the whole sequence, no memory
    # (full attention). Its pretraining sequences are one such segment long.
    baseline_model = ["model.use_memory=false", f"model.segment_length={length}", f"data.sequence_length={length}"]
    stages = [
        Stage("infini_pretrain", "Pretrain the Infini model on the offline corpus",
              _cli("train", "--config", str(recipe), f"run.output_dir={infini / 'pretrain'}", f"run.max_minutes={pre_min}")),
        Stage("infini_finetune", "Passkey-finetune the Infini model",
              _cli("finetune", "--config", str(recipe), "--from", str(infini / "pretrain" / "latest"),
                   f"finetune.run.output_dir={infini / 'finetune'}", f"finetune.run.max_minutes={fin_min}")),
        Stage("baseline_pretrain", "Pretrain the full-attention baseline (same recipe, one segment, no memory)",
              _cli("train", "--config", str(recipe), *baseline_model, f"run.output_dir={base / 'pretrain'}",
                   f"run.max_minutes={pre_min}"), background=True),
        Stage("baseline_finetune", "Passkey-finetune the full-attention baseline",
              _cli("finetune", "--config", str(recipe), "--from", str(base / "pretrain" / "latest"),
                   f"finetune.run.output_dir={base / 'finetune'}", f"finetune.run.max_minutes={fin_min}"),
              background=True),
        Stage("baseline_export", "Export the baseline as a transformers Llama",
              action=lambda: export_llama(base / "finetune" / "latest", base / "llama", max(lengths) * 2),
              background=True),
    ]
    retrieval = ",".join(f"{family}_{_length_name(n)}" for family in ("passkey", "niah") for n in lengths)
    checkpoint = infini / "finetune" / "latest"
    models = [
        ("infini", "infini", f"pretrained={checkpoint}"),
        ("memory_off", "infini", f"pretrained={checkpoint},use_memory=False"),
        ("llama", "hf", f"pretrained={base / 'llama'},dtype=float32"),
    ]
    tasks = f"{retrieval},ppl_stdlib"
    metadata = json.dumps({"samples": samples, "n_depths": 11, **PPL_METADATA})
    for label, model, args in models:
        target = out / "eval" / label
        stages.append(Stage(
            f"eval_{label}", f"lm-eval: {label} on passkey + NIAH at {', '.join(map(_length_name, lengths))} and ppl_stdlib",
            [sys.executable, "-m", "infini_bench.harness", "--model", model, "--model_args", args, "--tasks", tasks,
             "--metadata", metadata, "--device", "cpu", "--batch_size", "4", "--output_path", str(target),
             "--log_samples"],
            clear=target,
        ))
    stages.append(Stage(
        "report", "Write the report",
        _cli("report", *(f"{label}={out / 'eval' / label}" for label, _, _ in models), "-o", str(out / "report"),
             *(arg for label, _, _ in models for arg in ("--train-length", f"{label}={length}"))),
        clear=out / "report",
    ))
    return stages


def export_llama(checkpoint: Path, target: Path, max_positions: int) -> None:
    """The baseline was trained as a one-segment, memory-off Infini model, which is exactly a Llama: save it as one
    so lm-eval's own `hf` model evaluates it."""
    from transformers import AutoTokenizer

    from .modeling import infini_to_llama, load_infini

    llama = infini_to_llama(load_infini(checkpoint), max_position_embeddings=max_positions)
    tmp = target.with_name(target.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    llama.save_pretrained(tmp)
    AutoTokenizer.from_pretrained(checkpoint).save_pretrained(tmp)
    shutil.rmtree(target, ignore_errors=True)
    tmp.rename(target)


def check_out(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise QuickstartError(f"--out {str(out)!r} is a file: give a folder (new or from an earlier quickstart run)")
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".write-test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as err:
        raise QuickstartError(f"--out {str(out)!r} is not writable: {err.strerror or err}") from None


def _state_file(out: Path) -> Path:
    return out / "quickstart_stages.json"


def _finished(out: Path) -> dict:
    try:
        return json.loads(_state_file(out).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def _mark(out: Path, stage: Stage, seconds: float) -> None:
    with _MARK_LOCK:
        done = _finished(out)
        done[stage.name] = {"command": shlex.join(stage.command) if stage.command else stage.title,
                            "seconds": round(seconds, 1)}
        tmp = _state_file(out).with_suffix(".tmp")
        tmp.write_text(json.dumps(done, indent=2))
        os.replace(tmp, _state_file(out))


def run(
    out: Path,
    minutes: float,
    recipe: Path = RECIPE,
    samples: int = DEFAULT_SAMPLES,
    multiples: tuple[int, ...] = LENGTH_MULTIPLES,
) -> int:
    if not minutes > 0:
        raise QuickstartError(f"--minutes={minutes!r} is invalid: the training budget must be > 0 minutes")
    if samples < 1:
        raise QuickstartError(f"--samples={samples!r} is invalid: at least 1 sample per depth and length")
    if not recipe.is_file():
        raise QuickstartError(f"--recipe {str(recipe)!r} does not exist")
    check_out(out)
    stages = plan(out, minutes, recipe, samples, multiples)
    (out / "commands.sh").write_text(
        "#!/usr/bin/env bash\n# The commands `infini-bench quickstart` runs, in order.\nset -e\n"
        + "".join(f"# {s.title}\n{shlex.join(s.command)}\n" for s in stages if s.command)
    )
    started = time.monotonic()
    numbered = list(enumerate(stages, 1))
    background = [(i, s) for i, s in numbered if s.background]
    errors: list[BaseException] = []
    lane = threading.Thread(target=_run_lane, args=(out, background, len(stages), errors), daemon=True)
    lane.start()
    try:
        for i, stage in numbered:
            if stage.background:
                continue
            if stage.name.startswith("eval_"):
                lane.join()  # the evaluations need both models
                if errors:
                    raise errors[0]
            _run_stage(out, stage, i, len(stages), log=None)
    except BaseException:
        _STOP.set()
        for child in list(_CHILDREN):
            child.terminate()
        lane.join()
        raise
    total = (time.monotonic() - started) / 60
    print(f"\nquickstart finished in {total:.1f} min (this run)")
    print(f"report:    {out / 'report' / 'report.html'}")
    print(f"summary:   {out / 'report' / 'summary.json'}")
    print(f"commands:  {out / 'commands.sh'} (every command above, to re-run any step by hand)")
    return 0


_STOP = threading.Event()
_MARK_LOCK = threading.Lock()
_CHILDREN: list[subprocess.Popen] = []  # the background lane's running command, stopped with the foreground


def _run_lane(out: Path, stages: list[tuple[int, Stage]], total: int, errors: list[BaseException]) -> None:
    """The background lane: its stages in order, each logged to a file; the first failure stops the lane."""
    (out / "logs").mkdir(exist_ok=True)
    try:
        for i, stage in stages:
            if _STOP.is_set():
                return
            _run_stage(out, stage, i, total, log=out / "logs" / f"{stage.name}.log")
    except BaseException as err:  # reported by the foreground when it needs this lane's results
        errors.append(err)


def _run_stage(out: Path, stage: Stage, i: int, total: int, log: Path | None) -> None:
    head = f"[{i}/{total}] {stage.title}"
    if stage.name in _finished(out):
        print(f"{head}: already done, skipped", flush=True)
        return
    where = f"\n  (running alongside; output in {log})" if log else ""
    print(f"\n{head}\n  $ {shlex.join(stage.command) if stage.command else '(in process)'}{where}", flush=True)
    t0 = time.monotonic()
    if stage.clear is not None:
        shutil.rmtree(stage.clear, ignore_errors=True)
    if stage.command:
        env = {**os.environ, "TOKENIZERS_PARALLELISM": "false"}
        if log is None:
            code = subprocess.call(stage.command, env=env)
        else:
            with open(log, "w") as handle:
                child = subprocess.Popen(stage.command, env=env, stdout=handle, stderr=subprocess.STDOUT)
                _CHILDREN.append(child)
                code = child.wait()
                _CHILDREN.remove(child)
        if code != 0:
            if code < 0 or code == 130 or _STOP.is_set():
                raise KeyboardInterrupt
            raise QuickstartError(f"stage {stage.name!r} failed (exit code {code}); fix the cause and run again to resume")
    else:
        stage.action()
    _mark(out, stage, time.monotonic() - t0)
    print(f"{head}: done in {time.monotonic() - t0:.0f} s", flush=True)


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
    parser.add_argument("--out", default="quickstart", help="output folder (default ./quickstart); rerun to resume")
    parser.add_argument("--minutes", type=float, default=DEFAULT_MINUTES,
                        help="training budget in minutes; the Infini model and the baseline train side by side, "
                        f"each within it (default {DEFAULT_MINUTES:g})")
    parser.add_argument("--recipe", default=str(RECIPE), help="training recipe (default: recipes/quickstart-cpu.yaml)")
    parser.add_argument("--samples", type=int, default=DEFAULT_SAMPLES,
                        help=f"evaluation samples per depth and length (default {DEFAULT_SAMPLES})")
    parser.add_argument("--multiples", type=_multiples, default=LENGTH_MULTIPLES,
                        help="evaluation lengths as multiples of the finetuning length (default 1,2,4,8,16)")
    args = parser.parse_args(argv)
    try:
        return run(Path(args.out).resolve(), args.minutes, Path(args.recipe).resolve(), args.samples, args.multiples)
    except QuickstartError as err:
        print(f"infini-bench quickstart: error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\ninfini-bench quickstart: interrupted; run the same command again to resume from the last finished "
              "stage", file=sys.stderr)
        return 130
