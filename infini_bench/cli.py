"""`infini-bench ...`: one entry point; each subcommand lives in the module that owns the work."""
from __future__ import annotations

import argparse
import logging
import sys


def _convert(argv: list[str]) -> int:
    # The choices are the model's own lists (this command loads torch anyway; `report` and `--help` never get here).
    from .modeling import convert_llama_checkpoint
    from .modeling.configuration_infini import GATE_ACTIVATIONS, GATE_INITS, MEMORY_UPDATES

    parser = argparse.ArgumentParser(
        prog="infini-bench convert",
        description="Convert a transformers Llama checkpoint into an Infini one (same weights, new gates; for "
        "delta_l2 also a new write-strength projection).",
    )
    parser.add_argument("--from", dest="src", required=True, help="Llama checkpoint folder")
    parser.add_argument("--to", dest="dst", required=True, help="output folder (must be new or empty)")
    parser.add_argument("--segment-length", type=int, required=True)
    parser.add_argument("--memory-update", default="linear", choices=MEMORY_UPDATES)
    parser.add_argument("--memory-conv-size", type=int, default=0,
                        help="width of the memory's short convolution on queries and keys (0: none; e.g. 4)")
    parser.add_argument("--gate-activation", default="sigmoid", choices=GATE_ACTIVATIONS)
    parser.add_argument("--gate-init", default="zeros", help=f"{' | '.join(GATE_INITS)} | a number")
    args = parser.parse_args(argv)

    gate_init = args.gate_init if args.gate_init in GATE_INITS else _number(args.gate_init, "--gate-init")
    dst = convert_llama_checkpoint(
        args.src,
        args.dst,
        segment_length=args.segment_length,
        memory_update=args.memory_update,
        memory_conv_size=args.memory_conv_size,
        gate_activation=args.gate_activation,
        gate_init=gate_init,
    )
    print(f"wrote Infini checkpoint to {dst}")
    return 0


def _number(text: str, flag: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise SystemExit(f"{flag}={text!r} is invalid: use zeros, randn or a number") from None


def _train(argv: list[str]) -> int:
    from .training.commands import train_main

    return train_main(argv)


def _finetune(argv: list[str]) -> int:
    from .training.commands import finetune_main

    return finetune_main(argv)


def _eval(argv: list[str]) -> int:
    from .harness import main as harness_main

    return harness_main(argv)


def _tasks(argv: list[str]) -> int:
    from .harness import list_tasks

    return list_tasks(argv)


def _report(argv: list[str]) -> int:
    from .reports.cli import main as report_main

    return report_main(argv)


def _inspect(argv: list[str]) -> int:
    from .inspection.command import main as inspect_main

    return inspect_main(argv)


def _quickstart(argv: list[str]) -> int:
    from .quickstart import main as quickstart_main

    return quickstart_main(argv)


COMMANDS = {
    "quickstart": (_quickstart, "train -> finetune -> lm-eval -> report on a tiny model, against two baselines"),
    "train": (_train, "pretrain an Infini model from a YAML recipe"),
    "finetune": (_finetune, "finetune a checkpoint on passkey (and NIAH) from a YAML recipe"),
    "eval": (_eval, "lm_eval with this project's tasks and --model infini (exactly lm_eval's flags)"),
    "tasks": (_tasks, "list this project's lm-eval tasks and print their include path"),
    "report": (_report, "heatmaps, summary.json and report.html from lm-eval output folders"),
    "convert": (_convert, "convert a Llama checkpoint into an Infini checkpoint"),
    "inspect": (_inspect, "what an Infini checkpoint's gates learnt, and how much of each layer's output is memory"),
}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not argv or argv[0] in ("-h", "--help"):
        print("usage: infini-bench <command> [options]\n\ncommands:")
        for name, (_, help_text) in COMMANDS.items():
            print(f"  {name:<11} {help_text}")
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"infini-bench: unknown command {name!r}; choose one of {', '.join(COMMANDS)}", file=sys.stderr)
        return 2
    from .data.cache import StorageError

    try:
        return COMMANDS[name][0](rest) or 0
    except (FileNotFoundError, FileExistsError, ValueError, StorageError) as err:
        print(f"infini-bench {name}: error: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
