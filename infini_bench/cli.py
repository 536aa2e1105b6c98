"""`infini-bench ...`: one entry point; each subcommand lives in the module that owns the work."""
from __future__ import annotations

import argparse
import logging
import sys


def _convert(argv: list[str]) -> int:
    # The choices are the model's own lists, from a module that imports nothing: `--help` and a bad flag answer
    # without loading torch (about 4 s); the model is imported once the arguments parse.
    from .model_choices import GATE_ACTIVATIONS, GATE_INITS, MEMORY_UPDATES

    parser = argparse.ArgumentParser(
        prog="infini-bench convert",
        description="Convert a transformers Llama checkpoint into an Infini one (same weights, new gates; for "
        "delta_l2 also a new write-strength projection), or a nanotron Infini-attention checkpoint into an "
        "ordinary Infini folder that computes what nanotron's forward computes (tensor-parallel shards merged).",
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--from", dest="src", help="Llama checkpoint folder")
    source.add_argument("--from-nanotron", dest="nanotron",
                        help="nanotron checkpoint folder (config.yaml and model/; every setting comes from it)")
    parser.add_argument("--to", dest="dst", required=True, help="output folder (must be new or empty)")
    parser.add_argument("--tokenizer", help="with --from-nanotron: tokenizer folder to save with the model (default: "
                        "the one config.yaml names, when it is on disk)")
    parser.add_argument("--segment-length", type=int, help="tokens per segment (required with --from)")
    parser.add_argument("--memory-update", choices=MEMORY_UPDATES, help="default: linear")
    parser.add_argument("--memory-conv-size", type=int,
                        help="width of the memory's short convolution on queries and keys (0: none, the default; e.g. 4)")
    parser.add_argument("--gate-activation", choices=GATE_ACTIVATIONS, help="default: sigmoid")
    parser.add_argument("--gate-init", help=f"{' | '.join(GATE_INITS)} | a number (default: zeros)")
    args = parser.parse_args(argv)
    llama_only = {"--segment-length": args.segment_length, "--memory-update": args.memory_update,
                  "--memory-conv-size": args.memory_conv_size, "--gate-activation": args.gate_activation,
                  "--gate-init": args.gate_init}
    if args.nanotron:
        given = [flag for flag, value in llama_only.items() if value is not None]
        if given:
            parser.error(f"{', '.join(given)} cannot be used with --from-nanotron: the checkpoint's config.yaml sets the model")
        return _convert_nanotron(args.nanotron, args.dst, args.tokenizer)
    if args.tokenizer is not None:
        parser.error("--tokenizer is for --from-nanotron (a Llama folder's own tokenizer is copied)")
    if args.segment_length is None:
        parser.error("--segment-length is required with --from")
    gate_init = args.gate_init or "zeros"
    gate_init = gate_init if gate_init in GATE_INITS else _number(gate_init, "--gate-init")
    from .modeling import convert_llama_checkpoint

    dst = convert_llama_checkpoint(
        args.src,
        args.dst,
        segment_length=args.segment_length,
        memory_update=args.memory_update or "linear",
        memory_conv_size=args.memory_conv_size or 0,
        gate_activation=args.gate_activation or "sigmoid",
        gate_init=gate_init,
    )
    print(f"wrote Infini checkpoint to {dst}")
    return 0


def _convert_nanotron(src: str, dst: str, tokenizer: str | None) -> int:
    from .modeling.nanotron import convert_nanotron_checkpoint

    out, note = convert_nanotron_checkpoint(src, dst, tokenizer=tokenizer)
    print(f"wrote Infini checkpoint to {out} (converted from nanotron checkpoint {src})")
    if note:
        print(f"note: {note}", file=sys.stderr)
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


def _extend(argv: list[str]) -> int:
    from .training.commands import extend_main

    return extend_main(argv)


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
    "extend": (_extend, "extend a full-attention model's context (position interpolation or YaRN) from a YAML recipe"),
    "eval": (_eval, "lm_eval with this project's tasks and --model infini (exactly lm_eval's flags)"),
    "tasks": (_tasks, "list this project's lm-eval tasks and print their include path"),
    "report": (_report, "heatmaps, summary.json and report.html from lm-eval output folders"),
    "convert": (_convert, "convert a Llama or nanotron Infini-attention checkpoint into an Infini checkpoint"),
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
