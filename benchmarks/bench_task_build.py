"""Seconds to build exact-length task documents: one 1M-token passkey doc and one 128K NIAH doc.

Measured for each tokenizer: the first build (haystack tokenised and cached), a build once the haystack is
tokenised (what every further document of a task costs), and the same documents read back from the disk cache.
Every document's length is verified by tokenising the whole prompt (not timed). Offline: the tokenizers are
trained here, a tiny one (the test fixture's shape) and a 32K-vocabulary byte-level BPE trained on the standard
library's docstrings (GPT-2-like, about 4 characters per token).

    python benchmarks/bench_task_build.py            # prints a Markdown table
"""
from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from typing import Any, Callable

ONE_M = 1 << 20
K128 = 128 * 1024


def _timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def _tokenizers() -> dict[str, Any]:
    from infini_bench.data.corpus import stdlib_prose
    from infini_bench.data.haystack import FILLER
    from infini_bench.tokenizer import train_bpe_tokenizer

    tiny_corpus = [
        FILLER,
        "There is an important info hidden inside a lot of irrelevant text. Find it and memorize it.",
        "The pass key is 12345. Remember it. 12345 is the pass key. What is the pass key? The pass key is",
        "The special magic number for apple is: 6789. What is the special magic number for apple?",
    ] * 20
    prose = stdlib_prose()
    chunks = [prose[i : i + 2000] for i in range(0, len(prose), 2000)]
    return {
        "tiny (vocab 320)": train_bpe_tokenizer(tiny_corpus, vocab_size=320),
        "byte-level BPE (vocab 32K)": train_bpe_tokenizer(chunks, vocab_size=32000),
    }


def bench(tokenizer: Any, label: str) -> list[tuple[str, str, float, str]]:
    from infini_bench.data import build_niah_docs, build_passkey_docs, build_passkey_sample, tokenizer_view
    from infini_bench.data import haystack as haystack_module
    from infini_bench.data.grid import Cell, Grid
    from infini_bench.data.niah import niah_spec
    from infini_bench.data.passkey import PasskeySpec

    rows = []
    view = tokenizer_view(tokenizer)

    def check(prompt: str, expected: int) -> str:
        n = len(tokenizer(prompt)["input_ids"])
        return "exact" if n == expected else f"WRONG ({n} != {expected})"

    # Passkey, 1M tokens, filler haystack.
    seconds, (docs, hit) = _timed(lambda: build_passkey_docs(view, PasskeySpec(), Grid(ONE_M, [50], 1)))
    assert not hit
    rows.append((label, "passkey 1M: first build", seconds, check(docs[0]["prompt"], docs[0]["prompt_tokens"])))
    seconds, sample = _timed(lambda: build_passkey_sample(view, PasskeySpec(answer_tokens=16), Cell(ONE_M, 30, 7)))
    rows.append((label, f"passkey 1M: build, haystack tokenised ({sample['build_method']})", seconds,
                 check(sample["prompt"], ONE_M - 16)))
    seconds, (docs, hit) = _timed(lambda: build_passkey_docs(view, PasskeySpec(), Grid(ONE_M, [50], 1)))
    assert hit
    rows.append((label, "passkey 1M: from cache", seconds, check(docs[0]["prompt"], docs[0]["prompt_tokens"])))

    # NIAH, 128K tokens, standard-library prose haystack (tokenised once, then memoised and cached).
    haystack_module._HAYSTACKS.clear()
    seconds, (docs, hit) = _timed(
        lambda: build_niah_docs(view, niah_spec("single_1", haystack="stdlib"), Grid(K128, [50], 1))
    )
    assert not hit
    rows.append((label, "NIAH 128K (stdlib prose): first build, haystack tokenised", seconds,
                 check(docs[0]["prompt"], docs[0]["prompt_tokens"])))
    seconds, (docs2, hit) = _timed(
        lambda: build_niah_docs(view, niah_spec("single_1", haystack="stdlib"), Grid(K128, [25], 1, 5))
    )
    rows.append((label, f"NIAH 128K: build, haystack tokenised ({docs2[0]['build_method']})", seconds,
                 check(docs2[0]["prompt"], docs2[0]["prompt_tokens"])))
    seconds, (docs, hit) = _timed(
        lambda: build_niah_docs(view, niah_spec("single_1", haystack="stdlib"), Grid(K128, [50], 1))
    )
    assert hit
    rows.append((label, "NIAH 128K: from cache", seconds, check(docs[0]["prompt"], docs[0]["prompt_tokens"])))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", help="cache folder (default: a fresh temporary folder)")
    args = parser.parse_args()
    cache = args.cache or tempfile.mkdtemp(prefix="infini_bench_bench_")
    os.environ["INFINI_BENCH_CACHE"] = cache
    tokenizers = _tokenizers()
    rows = []
    for label, tok in tokenizers.items():
        rows.extend(bench(tok, label))
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores, "
          f"Python {platform.python_version()}; cache {cache}\n")
    print("| tokenizer | step | seconds | length |")
    print("|---|---|---:|---|")
    for label, step, seconds, ok in rows:
        print(f"| {label} | {step} | {seconds:.3f} | {ok} |")


if __name__ == "__main__":
    main()
