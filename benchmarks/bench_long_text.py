"""Tokenising one long document: one call against `encode_long`'s parallel pieces (same ids, checked here).

    TOKENIZERS_PARALLELISM=true python benchmarks/bench_long_text.py [--tokens 1000000]

Text: the Python standard library's sources, repeated to the length; tokenizer: the project's byte-level BPE
trained on a slice of it (infini_bench.tokenizer, as the quickstart trains one). Prints one Markdown row.
"""
from __future__ import annotations

import argparse
import os
import sysconfig
import time
from pathlib import Path

os.environ.setdefault("TOKENIZERS_PARALLELISM", "true")

from infini_bench.model_adapters.long_text import encode_long  # noqa: E402
from infini_bench.tokenizer import train_bpe_tokenizer  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", type=int, default=1_000_000)
    args = parser.parse_args()
    sources = sorted(Path(sysconfig.get_paths()["stdlib"]).glob("*.py"))
    corpus = "\n".join(p.read_text(errors="replace") for p in sources[:40])
    tokenizer = train_bpe_tokenizer([corpus[i : i + 4000] for i in range(0, 400_000, 4000)], vocab_size=4096)
    per_char = len(tokenizer.encode(corpus[:200_000], add_special_tokens=False)) / 200_000
    text = (corpus * (1 + int(args.tokens / per_char) // len(corpus)))[: int(args.tokens / per_char)]
    timings = {}
    for name, encode in (("one call", lambda: tokenizer.encode(text)), ("pieces", lambda: encode_long(tokenizer, text, {}))):
        best = float("inf")
        for _ in range(3):
            start = time.perf_counter()
            ids = encode()
            best = min(best, time.perf_counter() - start)
        timings[name] = (best, ids)
    assert timings["one call"][1] == timings["pieces"][1], "the pieces' ids differ from one call"
    (serial, ids), (pieces, _) = timings["one call"], timings["pieces"]
    print("| tokens | characters | CPU threads | one call (s) | pieces (s) | speed-up |")
    print("|---:|---:|---:|---:|---:|---:|")
    print(f"| {len(ids):,} | {len(text):,} | {os.cpu_count()} | {serial:.2f} | {pieces:.2f} | {serial / pieces:.2f}× |")


if __name__ == "__main__":
    main()
