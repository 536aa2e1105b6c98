"""Milliseconds per call of the memory's short convolution (`memory_conv_size`), two ways: torch's depthwise Conv1d
and the multiply-add form `causal_depthwise_conv` uses without gradients. Shapes are the quickstart model's
(4 heads + 4 kv heads of 64 = 512 channels, width 4): an evaluation's decoding step (1 row), one segment (32),
a training batch (8 × 256) and a 2,048-token prefill chunk; plus forward + backward at the training shape, where
Conv1d stays.

    python benchmarks/bench_memory_conv.py --threads 1     # prints a Markdown table
"""
from __future__ import annotations

import argparse
import time
from typing import Callable

import torch
import torch.nn.functional as F

from infini_bench.modeling.attention import causal_depthwise_conv

CHANNELS, WIDTH = 512, 4
SHAPES = [(4, 1), (4, 32), (8, 256), (4, 2048)]  # (rows, new tokens)


def _ms(fn: Callable[[], object], repeats: int) -> float:
    fn()
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        for _ in range(repeats):
            fn()
        best = min(best, (time.perf_counter() - start) / repeats)
    return best * 1e3


def _conv1d(stream: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    return F.conv1d(stream.transpose(1, 2), weight, groups=weight.shape[0]).transpose(1, 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    weight = torch.randn(CHANNELS, 1, WIDTH)
    print(f"torch {torch.__version__}, {args.threads} thread(s), {CHANNELS} channels, width {WIDTH}\n")
    print("| rows × new tokens | Conv1d (ms) | multiply-adds (ms) | speed-up |")
    print("|---|---:|---:|---:|")
    with torch.no_grad():
        for rows, n in SHAPES:
            stream = torch.randn(rows, WIDTH - 1 + n, CHANNELS)
            torch.testing.assert_close(causal_depthwise_conv(stream, weight), _conv1d(stream, weight))
            conv = _ms(lambda: _conv1d(stream, weight), args.repeats)
            adds = _ms(lambda: causal_depthwise_conv(stream, weight), args.repeats)
            print(f"| {rows} × {n} | {conv:.3f} | {adds:.3f} | {conv / adds:.1f}× |")
    stream = torch.randn(8, WIDTH - 1 + 256, CHANNELS, requires_grad=True)
    leaf = weight.clone().requires_grad_()

    def backward(form: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> None:
        form(stream, leaf).sum().backward()

    def adds_with_grad(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:  # the multiply-adds, autograd through them
        n = x.shape[1] - WIDTH + 1
        out = x[:, :n] * w[:, 0, 0]
        for j in range(1, WIDTH):
            out = out + x[:, j : j + n] * w[:, 0, j]
        return out

    conv = _ms(lambda: backward(_conv1d), args.repeats // 2)
    adds = _ms(lambda: backward(adds_with_grad), args.repeats // 2)
    print(f"| 8 × 256, forward + backward | {conv:.3f} | {adds:.3f} | {conv / adds:.1f}× |")


if __name__ == "__main__":
    main()
