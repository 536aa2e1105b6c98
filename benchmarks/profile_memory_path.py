"""Where a training step's time goes: forward + backward of the Infini model at 8K tokens in 8 segments (bf16
autocast on CUDA, the delta_l2 memory through fla-core when installed) under torch.profiler, with the memory's ops
labelled, beside the same step with the memory off (the local attention alone).

    python benchmarks/profile_memory_path.py --out profile.md            # on a GPU (benchmarks/gpu_check.sh runs it)
    python benchmarks/profile_memory_path.py --small                     # toy sizes on the CPU

bench_gpu.py (a) measured the trainer at 0.47x a plain Llama at 8K with 8 segments, about 5 ms a layer more than
the memory-off model; this table says which calls those milliseconds are (fla-core's kernels, the interleaving
copies around them, casts, the reads), per layer and step, so the fix can start from a measurement.
"""
from __future__ import annotations

import argparse
import contextlib
import functools
import sys
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile, record_function

from infini_bench import InfiniConfig, InfiniForCausalLM
from infini_bench.modeling import attention, fla_ops, memory_ops

CUDA = torch.cuda.is_available()
# The memory path's functions, labelled in the profile as infini.<name> (wrapped here, the model is unchanged).
LABELLED = ((memory_ops, "segment_retrievals"), (memory_ops, "memory_scan"), (memory_ops, "memory_read"),
            (fla_ops, "fla_delta_l2_read"), (fla_ops, "fla_delta_l2_scan"), (attention, "local_causal_attention"))


def _labelled(module, name: str) -> None:
    fn = getattr(module, name, None)
    if fn is None:
        return

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with record_function(f"infini.{name}"):
            return fn(*args, **kwargs)

    setattr(module, name, wrapper)
    if module is memory_ops and hasattr(attention, name):  # attention.py imported it by name
        setattr(attention, name, wrapper)


def step_profile(config: InfiniConfig, tokens: int, steps: int) -> str:
    device = "cuda" if CUDA else "cpu"
    model = InfiniForCausalLM(config).to(device)
    ids = torch.randint(0, config.vocab_size, (1, tokens), device=device)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if CUDA else contextlib.nullcontext()

    def step() -> None:
        with autocast:
            loss = model(ids, labels=ids).loss
        loss.backward()
        model.zero_grad(set_to_none=True)

    for _ in range(2):  # warm-up: Triton compiles its kernels on the first call
        step()
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if CUDA else [])
    with profile(activities=activities) as prof:
        for _ in range(steps):
            with record_function("infini.step"):
                step()
        if CUDA:
            torch.cuda.synchronize()
    sort = "cuda_time_total" if CUDA else "cpu_time_total"
    return prof.key_averages().table(sort_by=sort, row_limit=30, max_name_column_width=60)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--small", action="store_true", help="toy sizes (a CPU smoke run)")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--out", help="also write the tables here (Markdown)")
    args = parser.parse_args(argv)
    for module, name in LABELLED:
        _labelled(module, name)
    tokens, dims = (512, dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                              vocab_size=256)) if args.small else \
        (8192, dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=8, num_attention_heads=16,
                    vocab_size=32000))
    parts = [f"# Profile of one training step: {tokens} tokens in 8 segments, "
             f"{torch.cuda.get_device_name() if CUDA else 'CPU'}, {args.steps} steps, fla-core "
             f"{'installed' if fla_ops.HAS_FLA else 'not installed'}"]
    for use_memory in (True, False):
        config = InfiniConfig(**dims, segment_length=tokens // 8, memory_update="delta_l2", use_memory=use_memory)
        parts += [f"\n## memory {'on (delta_l2)' if use_memory else 'off'}\n", "```",
                  step_profile(config, tokens, args.steps), "```"]
    text = "\n".join(parts) + "\n"
    print(text)
    if args.out:
        Path(args.out).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
