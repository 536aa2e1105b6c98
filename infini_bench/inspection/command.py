"""`infini-bench inspect CKPT`: what an Infini checkpoint's gates learnt, and how much of each layer's output comes
from memory on one document (docs/nanotron.md, "What the gates learnt")."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from infini_bench.reports.gates import GATE_RANGES, LOCAL_ONLY, MEMORY_ONLY, head_kinds
from infini_bench.tasks.names import parse_length, split_task_name

from .document import TASK_FAMILIES, Document, check_task, task_document, text_document
from .memory_share import measure_memory_share
from .render import render

DEFAULT_SEGMENTS = 8  # without --length, a document of this many segments


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="infini-bench inspect",
        description="Print an Infini checkpoint's gates g = act(β) per layer and query head (memory-only heads "
        f"g > {MEMORY_ONLY:g}, local-only |g| < {LOCAL_ONLY:g}, mixers) and, on one document, the share of each "
        "layer's attention output that comes from memory, per segment.",
    )
    parser.add_argument("checkpoint", help="an Infini checkpoint folder (or a training run folder with `latest`)")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--task", default="passkey",
                        help=f"the document: sample 0 of this task family's evaluation documents ({', '.join(TASK_FAMILIES[:3])}, "
                        "niah_<variant>; or a task name with its length, e.g. passkey_1k); default passkey")
    source.add_argument("--text", metavar="FILE", help="the document: the tokens of this UTF-8 text file instead")
    parser.add_argument("--length", type=parse_length, default=None,
                        help=f"document length in tokens, e.g. 1024 or 1k (default: {DEFAULT_SEGMENTS} segments; with "
                        "--text, the first N tokens)")
    parser.add_argument("--depth", type=float, default=50.0, help="needle depth in percent (task documents; default 50)")
    parser.add_argument("--tokenizer", help="tokenizer folder or name (default: the checkpoint's own)")
    parser.add_argument("--device", default="cpu", help="torch device for the forward pass (default cpu)")
    parser.add_argument("--gates-only", action="store_true", help="print the gates only; run no document")
    parser.add_argument("--json", metavar="OUT", help="also write every number (per head, per segment) to this file")
    return parser


def resolve_checkpoint(path: str | Path) -> Path:
    """The checkpoint folder: `path`, or `path/latest` for a training run folder; a Llama or any other model is
    refused in one sentence (it has no Infini gates)."""
    from infini_bench.modeling.checkpoint import check_checkpoint_dir

    path = Path(path)
    if path.is_dir() and not (path / "config.json").exists():
        if (path / "latest" / "config.json").is_file():
            path = path / "latest"
        elif (path / "log.jsonl").is_file():
            raise FileNotFoundError(f"{str(path)!r} is a training run folder with no checkpoint yet (no latest)")
    if check_checkpoint_dir(path, ("infini", "llama")) == "llama":
        raise ValueError(f"checkpoint {str(path)!r} is a Llama model, which has no Infini gates: convert it first "
                         f"(infini-bench convert --from {path} --to OUT --segment-length N)")
    return path


def gate_report(model: Any) -> dict[str, Any]:
    """g = act(β) of every layer and query head, by the model's own `gate_values`, with the heads counted by kind."""
    from infini_bench.modeling.attention import gate_values

    activation = model.config.gate_activation
    beta = np.stack([layer.self_attn.gate.detach().double().cpu().numpy() for layer in model.model.layers])
    g = np.stack([gate_values(layer.self_attn.gate.detach().double(), activation).cpu().numpy()
                  for layer in model.model.layers])
    kinds = head_kinds(g)
    return {"activation": activation, "range": list(GATE_RANGES[activation]),
            "thresholds": {"memory_only": MEMORY_ONLY, "local_only": LOCAL_ONLY}, "beta": beta.tolist(),
            "g": g.tolist(), "kinds": kinds.as_dict(), "kinds_text": kinds.sentence(),
            "per_layer_kinds": [head_kinds(row).as_dict() for row in g]}


def load_document(args: argparse.Namespace, tokenizer: Any, segment_length: int) -> Document:
    if args.text:
        return text_document(tokenizer, args.text, args.length)
    length = args.length
    if length is None and split_task_name(args.task)[1] is None:  # neither --length nor a length in the name
        length = DEFAULT_SEGMENTS * segment_length
    return task_document(tokenizer, args.task, length, args.depth)


def inspect_checkpoint(args: argparse.Namespace) -> dict[str, Any]:
    """Everything `inspect` prints, as one JSON-ready dict."""
    import torch

    from infini_bench.data.tokens import load_tokenizer
    from infini_bench.modeling import load_infini

    folder = resolve_checkpoint(args.checkpoint)
    if args.text and not args.gates_only and not Path(args.text).is_file():  # before the model loads
        raise FileNotFoundError(f"--text {args.text!r} does not exist (or is not a file)")
    if not args.text and not args.gates_only:
        check_task(args.task)
    model = load_infini(folder, dtype="float32").eval().to(args.device)
    c = model.config
    report: dict[str, Any] = {
        "checkpoint": str(folder) + (f" (→ {folder.resolve().name})" if folder.is_symlink() else ""),
        "model": {"layers": c.num_hidden_layers, "heads": c.num_attention_heads, "kv_heads": c.num_key_value_heads,
                  "segment_length": c.segment_length, "memory_update": c.memory_update, "use_memory": c.use_memory},
        "gates": gate_report(model), "document": None, "memory_share": None,
    }
    if args.gates_only or not c.use_memory:
        return report
    tokenizer = load_tokenizer(args.tokenizer or str(folder))
    doc = load_document(args, tokenizer, c.segment_length)
    share = measure_memory_share(model, torch.tensor([doc.input_ids], device=args.device))
    needle = doc.needle_position
    report["document"] = {"source": doc.source, "description": doc.description, "tokens": len(doc.input_ids),
                          **doc.fields, "needle_segment": None if needle is None else needle // c.segment_length}
    per_head, per_layer = share.per_layer_head(), share.per_layer()
    report["memory_share"] = {
        "definition": "per head and token |g·A_mem| / (|g·A_mem| + |(1 − g)·A_local|) (L2 norms over the head's "
        "width); per layer and segment the mean over heads and the segment's tokens; per head and per layer the "
        "mean over the tokens after segment 0, which reads an empty memory",
        "segments": share.segments,
        "per_layer_segment": share.per_layer_segment().tolist(),
        "per_layer_head": None if per_head is None else per_head.tolist(),
        "per_layer": None if per_layer is None else per_layer.tolist(),
    }
    return report


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    report = inspect_checkpoint(args)
    print(render(report), end="")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1, allow_nan=False), encoding="utf-8")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
