"""Training throughput: this trainer (Infini model) against a plain transformers `LlamaForCausalLM` loop of
identical dimensions at the same sequence length, side by side in one run.

    python benchmarks/bench_train.py                      # CPU defaults (small model), prints a Markdown table
    python benchmarks/bench_train.py --hidden 1024 --layers 8 --seq 8192 --batch 1 --steps 20   # on a GPU

Rows: the Llama loop; the trainer at one segment per sequence (segment_length = sequence length: the same
attention work as Llama, plus the memory's bookkeeping); the trainer at 8 segments per sequence (segment_length =
sequence length / 8: backpropagation through 7 memory updates, in the parallel form); the same in the
segment-by-segment form (the reference the parallel form replaced); and the same 8-segment model with the memory
off (identical local attention, no memory), which isolates the cost of the recurrence itself.
Each measurement is repeated `--repeats` times, interleaved (Llama, 1 segment, 8 segments, ...), so load drift on
a shared machine hits every row alike; the table reports the median tokens/s of each row. Tokens/s counts every input token of an optimizer step (forward,
backward, clipping, AdamW step) after `--warmup` untimed steps.
"""
from __future__ import annotations

import argparse
import functools
import json
import logging
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from infini_bench import InfiniConfig, InfiniForCausalLM
from infini_bench.training.batches import PackedText
from infini_bench.training.loop import Setup, train
from infini_bench.training.optim import build_optimizer, build_scheduler
from infini_bench.training.recipe import OptimConfig, RunConfig


def dims(args: argparse.Namespace) -> dict:
    return dict(
        vocab_size=args.vocab,
        hidden_size=args.hidden,
        intermediate_size=getattr(args, "ffn", None) or args.hidden * 4,
        num_hidden_layers=args.layers,
        num_attention_heads=args.heads,
        num_key_value_heads=args.heads,
        head_dim=getattr(args, "head_dim", None),
    )


def random_rows(args: argparse.Namespace) -> np.ndarray:
    rng = np.random.default_rng(0)
    rows = (args.warmup + args.steps) * args.batch
    return rng.integers(0, args.vocab, size=(rows, args.seq), dtype=np.int64)


def optim_config(args: argparse.Namespace) -> OptimConfig:
    return OptimConfig(lr=1e-4, min_lr=1e-5, warmup_steps=2, batch_size=args.batch, micro_batch_size=args.batch)


def bench_trainer(args: argparse.Namespace, segments: int, use_memory: bool = True, parallel: bool = True) -> float:
    """Tokens/s of `infini_bench.training.loop.train` itself, read from its JSONL log (the step's batch assembly,
    forward, backward, clipping, AdamW and schedule; the logging every `--warmup` steps is outside the timing)."""
    rows = random_rows(args)
    config = InfiniConfig(
        **dims(args), segment_length=args.seq // segments, use_memory=use_memory, memory_update=args.memory_update
    )
    torch.manual_seed(0)
    model = InfiniForCausalLM(config)
    if not parallel:  # the segment-by-segment form, the reference the parallel form replaced
        model.forward = functools.partial(model.forward, parallel=False)
    with tempfile.TemporaryDirectory() as out:
        steps = args.warmup + args.steps
        run = RunConfig(output_dir=out, max_steps=steps, save_every=10**9, log_every=args.warmup, precision=args.precision)
        setup = Setup(model=model, tokenizer=_NoTokenizer(), data=PackedText(rows, seed=0))
        train(optim_config(args), run, lambda accelerator: setup, "benchmark: {}\n", resume="never")
        log = [json.loads(line) for line in (Path(out) / "log.jsonl").read_text().splitlines()]
    timed = [r for r in log if r["step"] > args.warmup]
    seconds = timed[-1]["seconds"] - log[0]["seconds"]
    return (timed[-1]["tokens"] - log[0]["tokens"]) / seconds


def bench_llama(args: argparse.Namespace) -> float:
    """The plain loop a transformers user writes: same optimizer settings, clipping and schedule."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    rows = torch.from_numpy(random_rows(args))
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(**dims(args), max_position_embeddings=args.seq, attn_implementation="sdpa"))
    model.to(device).train()
    optim = optim_config(args)
    optimizer = build_optimizer(model, optim)
    scheduler = build_scheduler(optimizer, optim, args.warmup + args.steps)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=args.precision == "bf16" and device == "cuda")
    start = None
    for step in range(args.warmup + args.steps):
        if step == args.warmup:
            _sync(device)
            start = time.perf_counter()
        ids = rows[step * args.batch : (step + 1) * args.batch].to(device)
        with autocast:
            loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), optim.max_grad_norm)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
    _sync(device)
    return args.steps * args.batch * args.seq / (time.perf_counter() - start)


class _NoTokenizer:
    """The benchmark never saves a checkpoint mid-run; the final save writes no tokenizer files."""

    def save_pretrained(self, folder) -> None:
        return None


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--vocab", type=int, default=4096)
    parser.add_argument("--seq", type=int, default=1024)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--steps", type=int, default=8, help="timed optimizer steps per measurement")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--precision", default="auto", choices=["auto", "bf16", "fp32"])
    parser.add_argument("--memory-update", default="linear", choices=["linear", "delta", "delta_l2"])
    parser.add_argument("--head-dim", type=int, default=None, help="default: hidden / heads")
    parser.add_argument("--ffn", type=int, default=None, help="SwiGLU width (default: 4 × hidden)")
    args = parser.parse_args(argv)
    if args.precision == "auto":
        args.precision = "bf16" if torch.cuda.is_available() else "fp32"
    if args.seq % 8:
        parser.error("--seq must be a multiple of 8 (the 8-segment row)")
    if args.threads:
        torch.set_num_threads(args.threads)
    logging.disable(logging.WARNING)
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    rows = {"llama": [], "infini_1seg": [], "infini_8seg": [], "infini_8seg_sequential": [], "infini_8seg_off": []}
    for _ in range(args.repeats):
        rows["llama"].append(bench_llama(args))
        rows["infini_1seg"].append(bench_trainer(args, 1))
        rows["infini_8seg"].append(bench_trainer(args, 8))
        rows["infini_8seg_sequential"].append(bench_trainer(args, 8, parallel=False))
        rows["infini_8seg_off"].append(bench_trainer(args, 8, use_memory=False))
    med = {k: statistics.median(v) for k, v in rows.items()}
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else f"CPU ({torch.get_num_threads()} threads)"
    print(f"device: {device}; torch {torch.__version__}; python {platform.python_version()}; precision {args.precision}")
    print(
        f"model: d={args.hidden}, layers={args.layers}, heads={args.heads}, head_dim={args.head_dim or args.hidden // args.heads}, "
        f"ffn={args.ffn or 4 * args.hidden}, vocab={args.vocab}, memory {args.memory_update}; "
        f"sequence {args.seq} tokens, batch {args.batch}; {args.steps} timed steps after {args.warmup}, "
        f"median of {args.repeats} interleaved repeats\n"
    )
    print("| loop | segment length | tokens/s (median) | all repeats | vs Llama |")
    print("|---|---|---|---|---|")
    labels = {"llama": ("plain LlamaForCausalLM loop", "-"), "infini_1seg": ("this trainer, 1 segment", args.seq),
              "infini_8seg": ("this trainer, 8 segments", args.seq // 8),
              "infini_8seg_sequential": ("this trainer, 8 segments, segment-by-segment form", args.seq // 8),
              "infini_8seg_off": ("this trainer, 8 segments, memory off", args.seq // 8)}
    for key, (label, seg) in labels.items():
        runs = ", ".join(f"{v:.0f}" for v in rows[key])
        print(f"| {label} | {seg} | {med[key]:.0f} | {runs} | {med[key] / med['llama']:.2f}x |")
    print(f"\n8 segments vs 1 segment: {med['infini_8seg'] / med['infini_1seg']:.2f}x tokens/s (shorter local attention "
          "and the memory recurrence together)")
    print(f"parallel form vs segment-by-segment form at 8 segments: "
          f"{med['infini_8seg'] / med['infini_8seg_sequential']:.2f}x tokens/s")
    print(f"memory recurrence at 8 segments (memory on vs off, same local attention): "
          f"{med['infini_8seg'] / med['infini_8seg_off']:.2f}x tokens/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
