"""When does a model form an in-context copying (induction) circuit? Trains a checkpoint on the trainer's copy rows
(`infini_bench/training/copy_data.py`: a random span, a random gap, the span again; loss on the repeat) under a
bare AdamW loop and prints the copy loss every `--every` steps. ln(vocabulary) means no copying; the step where the
loss leaves it is where the circuit forms (benchmarks/RESULTS_train.md §10).

    python benchmarks/copy_formation.py --from runs/quickstart/baseline/pretrain/latest --lr 1e-3 --batch 16
    python benchmarks/copy_formation.py --fresh --init 0.08 --tokenizer runs/quickstart/baseline/pretrain/latest
"""
from __future__ import annotations

import argparse
import math
import time

import torch
from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

from infini_bench.modeling import load_infini
from infini_bench.training.copy_data import CopySpans, ordinary_ids


def fresh_llama(vocab_size: int, init: float, seed: int) -> LlamaForCausalLM:
    """A transformers Llama of the CPU quickstart's shape (2 layers, d 128, 4 heads of 64, SwiGLU 256)."""
    torch.manual_seed(seed)
    return LlamaForCausalLM(LlamaConfig(
        vocab_size=vocab_size, hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=4, head_dim=64, max_position_embeddings=4096, initializer_range=init,
    ))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--from", dest="checkpoint", help="an Infini or Llama checkpoint folder (with its tokenizer)")
    source.add_argument("--fresh", action="store_true", help="a freshly initialised Llama of the quickstart's shape")
    parser.add_argument("--tokenizer", help="with --fresh: the folder whose tokenizer gives the vocabulary")
    parser.add_argument("--init", type=float, default=0.02, help="with --fresh: initializer_range (default 0.02)")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--beta2", type=float, default=0.95, help="AdamW's beta2 (the recipes' 0.95)")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--every", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.fresh and not args.tokenizer:
        parser.error("--fresh needs --tokenizer (the vocabulary the rows are drawn from)")
    torch.set_num_threads(1)
    tokenizer = AutoTokenizer.from_pretrained(args.tokenizer or args.checkpoint)
    if args.fresh:
        model = fresh_llama(len(tokenizer), args.init, args.seed)
    else:
        model = load_infini(args.checkpoint, convert_llama=True)
    model.train()
    rows = CopySpans(ordinary_ids(tokenizer), args.seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, betas=(0.9, args.beta2), weight_decay=0.01)
    print(f"copy loss; no copying = ln({len(rows.ids)}) = {math.log(len(rows.ids)):.2f}")
    cursors: dict[str, int] = {}
    started, window = time.monotonic(), []
    for step in range(1, args.steps + 1):
        batch = rows.global_batch(step, args.batch, cursors, 0.0)
        loss = model(batch.input_ids, labels=batch.labels).loss
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        window.append(loss.item())
        if step % args.every == 0:
            print(f"step {step:6d}  copy loss {sum(window) / len(window):.3f}  {time.monotonic() - started:.0f} s",
                  flush=True)
            window = []


if __name__ == "__main__":
    main()
