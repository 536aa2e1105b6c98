"""`infini-bench quickstart`: the whole product on a laptop, no GPU and no network (and a larger model on a GPU).

The command itself: the options are checked, the plan (plan.py) is made for this machine's profile, written to
commands.sh and run (runner.py), and the report's paths are printed; errors and Ctrl-C become exit codes 1 and 130.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from .plan import (DEFAULT_MINUTES, DEFAULT_SAMPLES, MIN_MINUTES, QuickstartError, check_options, commands_script,
                   finetune_length, plan)
from .profiles import CPU, GPU, Profile, select_profile
from .records import check_out
from .runner import Runner


def run(out: Path, minutes: float, profile: Profile, why: str = "", samples: int = DEFAULT_SAMPLES,
        multiples: tuple[int, ...] | None = None, seed: int | None = None) -> int:
    """Plan with `profile`'s recipe (and its multiples unless given), then run every stage whose recorded inputs no
    longer hold (see the package docstring)."""
    recipe = profile.recipe
    multiples = profile.multiples if multiples is None else multiples
    check_options(minutes, samples, recipe, seed)
    # before check_out: a bad recipe leaves --out alone
    stages = plan(out, minutes, recipe, samples, multiples, profile, seed)
    check_out(out)
    print(f"profile: {profile.name} ({why or 'given'}): recipe {recipe}, lm-eval --device {profile.device}, "
          f"lengths {','.join(f'{m}x' for m in multiples)} of {finetune_length(recipe)} tokens", flush=True)
    (out / "commands.sh").write_text(commands_script(stages))
    started = time.monotonic()
    Runner(out).run(stages)
    total = (time.monotonic() - started) / 60
    print(f"\nquickstart finished in {total:.1f} min (this run)")
    for name, path in (("report", out / "report" / "report.html"), ("summary", out / "report" / "summary.json")):
        if not path.is_file():  # every stage checked its outputs: this would be a bug, so say it rather than print
            raise QuickstartError(f"{path} is missing although every stage finished; run the same command again")
        print(f"{name + ':':<10} {path}")
    print(f"commands:  {out / 'commands.sh'} (every command above, to re-run any step by hand)")
    return 0


def _multiples(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(","))
    except ValueError:
        values = ()
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of positive integers, e.g. 1,2,4")
    return values


def main(argv: list[str] | None = None) -> int:
    """`infini-bench quickstart [options]`: its exit code (0 done, 1 an error, 130 interrupted)."""
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
        return run(Path(args.out).resolve(), args.minutes, profile, why, args.samples, args.multiples, args.seed)
    except QuickstartError as err:
        print(f"infini-bench quickstart: error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\ninfini-bench quickstart: interrupted; run the same command again to resume from the last finished "
              "stage", file=sys.stderr)
        return 130
