"""Benchmarks of the `--model infini` adapter (issue 4), all in one run on one machine.

    python benchmarks/bench_adapter.py [--workdir DIR] [--skip-1m]

1. Peak memory of `loglikelihood_rolling` at 4K, 16K, 64K, 256K (and 1M) tokens: every length in a fresh
   subprocess; reported as the process's peak RSS (`ru_maxrss`), and as the peak growth during the call (sampled
   every 2 ms by a thread) of the RSS and of the live C heap (glibc `mallinfo2`, where torch's CPU tensors live).
2. Time per generated token (64 new tokens, greedy, best of 3) after a 1K-, 32K- and 33K-token prompt (33K puts
   the decode at the same place inside its segment as 1K; 32K starts a fresh segment).
3. A 16K-token passkey prompt, 15 new tokens: this adapter's `generate_until` against lm-eval's `hf` model on the
   same weights as a full-attention Llama, and against regenerating with no cache (the whole prompt recomputed
   for every new token, as earlier Infini evaluation scripts do).

Every measurement runs with one torch thread (`--threads`): on a shared 2-core machine, two OpenMP threads next to
someone else's busy core spend most of their time waiting for each other (10x slower, and erratic).

The model: 4 layers, d_model 256, 4 heads, SwiGLU 688, segment 2048, random weights (speed and memory do not
depend on the weights), a 1024-token byte-level BPE trained on the Python standard library's sources.
"""
from __future__ import annotations

import argparse
import ctypes
import json
import os
import resource
import subprocess
import sys
import sysconfig
import threading
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

SEGMENT = 2048
THREADS = 1  # set from --threads
FILLER = "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again. "


# --- setup ---------------------------------------------------------------------------------------------------------
def stdlib_text(min_chars: int) -> str:
    """Python standard library sources: the corpus that is always present offline."""
    parts, size = [], 0
    for path in sorted(Path(sysconfig.get_paths()["stdlib"]).rglob("*.py")):
        try:
            text = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        parts.append(text)
        size += len(text)
        if size >= min_chars:
            break
    return "".join(parts)


def build_checkpoints(workdir: Path) -> tuple[Path, Path]:
    """An Infini checkpoint and the same weights as a full-attention Llama (for lm-eval's `hf` model)."""
    import torch

    from infini_bench import InfiniConfig, InfiniForCausalLM
    from infini_bench.modeling import infini_to_llama
    from infini_bench.tokenizer import train_bpe_tokenizer

    infini_dir, llama_dir = workdir / "infini", workdir / "llama"
    if (infini_dir / "config.json").is_file() and (llama_dir / "config.json").is_file():
        return infini_dir, llama_dir
    tokenizer = train_bpe_tokenizer([stdlib_text(2_000_000), FILLER * 50], vocab_size=1024)
    torch.manual_seed(0)
    config = InfiniConfig(
        vocab_size=len(tokenizer), hidden_size=256, intermediate_size=688, num_hidden_layers=4,
        num_attention_heads=4, segment_length=SEGMENT, gate_init="randn",
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )
    model = InfiniForCausalLM(config)
    model.save_pretrained(infini_dir)
    tokenizer.save_pretrained(infini_dir)
    infini_to_llama(model, max_position_embeddings=65536).save_pretrained(llama_dir)
    tokenizer.save_pretrained(llama_dir)
    return infini_dir, llama_dir


def load_adapter(infini_dir: Path, **kwargs):
    from infini_bench.model_adapters import InfiniLM

    return InfiniLM(pretrained=str(infini_dir), device="cpu", **kwargs)


def text_of_about(lm, n_tokens: int, source: str) -> str:
    """A prefix of `source` (repeated as needed) holding about n_tokens of the model's tokens."""
    sample = source[:200_000]
    chars_per_token = len(sample) / len(lm.tok_encode(sample))
    n_chars = int(n_tokens * chars_per_token)
    text = (source * (n_chars // len(source) + 1))[:n_chars]
    while (count := len(lm.tok_encode(text))) > n_tokens:  # trim to at most n_tokens
        text = text[: int(len(text) * n_tokens / count * 0.9995)]
    return text


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]


class MemorySampler:
    """Peak memory of this process while a block runs, sampled every 2 ms by a thread:
    `rss` from /proc/self/statm, and `live` = bytes the C allocator has handed out and not yet taken back
    (glibc `mallinfo2`: uordblks + hblkhd), which is where torch's CPU tensors live. RSS also counts memory the
    allocator keeps after a free, so it depends on allocation history; `live` does not."""

    def __init__(self) -> None:
        self.page = os.sysconf("SC_PAGE_SIZE")
        libc = ctypes.CDLL("libc.so.6")
        libc.mallinfo2.restype = _MallInfo2
        self._mallinfo = libc.mallinfo2
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def rss(self) -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * self.page

    def live(self) -> int:
        info = self._mallinfo()
        return info.uordblks + info.hblkhd

    def _sample(self) -> None:
        self.peak_rss = max(self.peak_rss, self.rss())
        self.peak_live = max(self.peak_live, self.live())

    def _run(self) -> None:
        while not self._stop.is_set():
            self._sample()
            time.sleep(0.002)

    def __enter__(self) -> "MemorySampler":
        self.start_rss = self.peak_rss = self.rss()
        self.start_live = self.peak_live = self.live()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()


# --- children (one measurement each, in a fresh process) ------------------------------------------------------------
def child_rolling(infini_dir: Path, n_tokens: int) -> dict:
    from lm_eval.api.instance import Instance

    lm = load_adapter(infini_dir)
    text = text_of_about(lm, n_tokens, stdlib_text(min(60_000_000, 6 * n_tokens)))
    tokens = len(lm.tok_encode(text))
    request = [Instance("loglikelihood_rolling", {}, (text,), 0)]
    with MemorySampler() as mem:
        start = time.perf_counter()
        [logprob] = lm.loglikelihood_rolling(request, disable_tqdm=True)
        seconds = time.perf_counter() - start
    return {
        "tokens": tokens,
        "seconds": seconds,
        "tokens_per_s": tokens / seconds,
        "nll_per_token": -logprob / tokens,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "rss_before_call_mb": mem.start_rss / 2**20,
        "peak_rss_growth_during_call_mb": (mem.peak_rss - mem.start_rss) / 2**20,
        "peak_live_heap_growth_during_call_mb": (mem.peak_live - mem.start_live) / 2**20,
    }


def child_decode(infini_dir: Path) -> dict:
    """Prefill with the adapter's streaming prefill, then time the adapter's own decode step (`_generate`), 64
    greedy tokens, EOS suppressed so every run decodes the same number."""
    import torch

    from infini_bench.model_adapters.streaming import prefill

    lm = load_adapter(infini_dir)
    source = lm.tok_encode(stdlib_text(400_000))
    new_tokens = 64

    def run(prompt_len: int) -> dict:
        prompt = (source * (prompt_len // len(source) + 1))[:prompt_len]
        start = time.perf_counter()
        [(_, state)] = list(prefill(lm.model, [prompt[:-1]], lm.device))
        prefill_s = time.perf_counter() - start
        start = time.perf_counter()
        lm._generate([prompt], state, until=[], max_new=new_tokens, kwargs={"min_new_tokens": new_tokens})
        decode_s = time.perf_counter() - start
        return {"prompt_tokens": prompt_len, "prefill_s": prefill_s, "ms_per_new_token": 1000 * decode_s / new_tokens}

    run(256)  # warm-up
    with torch.no_grad():  # best of 3 per length: the machine is shared, the minimum is the least disturbed
        rows = []
        for n in (1024, 32768, 33792):
            runs = [run(n) for _ in range(3)]
            rows.append(min(runs, key=lambda r: r["ms_per_new_token"]))
    return {"rows": rows}


def child_passkey(infini_dir: Path, llama_dir: Path, which: str) -> dict:
    """One 16K-token passkey prompt, 15 new tokens, greedy, by one of three routes."""
    import torch
    from lm_eval.api.instance import Instance

    lm = load_adapter(infini_dir)

    def passkey_prompt(repeats: int) -> str:
        half = FILLER * (repeats // 2)
        return (
            "There is an important info hidden inside a lot of irrelevant text. Find it and memorize it. "
            + half + "The pass key is 68190. Remember it. 68190 is the pass key. " + half
            + "What is the pass key? The pass key is"
        )

    repeats = 2 * (16384 // len(lm.tok_encode(FILLER)) // 2)
    while len(lm.tok_encode(prompt := passkey_prompt(repeats))) > 16384:
        repeats -= 2
    prompt_tokens = len(lm.tok_encode(prompt))
    # 15 new tokens on every route: EOS is suppressed (`min_new_tokens` reaches `generate` through gen_kwargs)
    request = [Instance("generate_until", {}, (prompt, {"until": [], "max_gen_toks": 15, "min_new_tokens": 15}), 0)]
    if which == "infini":
        start = time.perf_counter()
        [answer] = lm.generate_until(request, disable_tqdm=True)
    elif which == "hf":
        from lm_eval.models.huggingface import HFLM

        hf = HFLM(pretrained=str(llama_dir), device="cpu", dtype="float32", batch_size=1)
        start = time.perf_counter()
        [answer] = hf.generate_until(request, disable_tqdm=True)
    else:  # no cache: the whole sequence through the Infini model again for every new token
        ids = lm.tok_encode(prompt)
        start = time.perf_counter()
        new = []
        with torch.no_grad():
            for _ in range(15):
                logits = lm.model(torch.tensor([ids]), logits_to_keep=1).logits[0, -1]
                logits[lm.eot_token_id] = float("-inf")
                token = int(logits.argmax())
                new.append(token)
                ids.append(token)
        answer = lm.tok_decode(new)
    return {"route": which, "prompt_tokens": prompt_tokens, "seconds": time.perf_counter() - start, "answer": answer}


# --- parent ---------------------------------------------------------------------------------------------------------
def in_child(*args: str, timeout: int = 3600) -> dict:
    """One measurement in a fresh process; the load average before it is kept (the machine may be shared)."""
    cmd = [sys.executable, __file__, "--child", *args, "--threads", str(THREADS)]
    load_before = os.getloadavg()[0]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{done.stderr[-4000:]}")
    return {**json.loads(done.stdout.strip().splitlines()[-1]), "load_avg_1min_before": load_before}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/infini_bench_adapter"))
    parser.add_argument("--skip-1m", action="store_true", help="leave out the 1M-token rolling run")
    parser.add_argument("--json", type=Path, default=None, help="also write the raw figures here")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per measurement (default 1)")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    global THREADS
    THREADS = args.threads
    if args.child:
        import torch

        torch.set_num_threads(args.threads)
        kind, *rest = args.child
        infini_dir = Path(rest[0])
        if kind == "rolling":
            result = child_rolling(infini_dir, int(rest[1]))
        elif kind == "decode":
            result = child_decode(infini_dir)
        else:
            result = child_passkey(infini_dir, Path(rest[1]), rest[2])
        print(json.dumps(result))
        return

    import torch

    args.workdir.mkdir(parents=True, exist_ok=True)
    infini_dir, llama_dir = build_checkpoints(args.workdir)
    figures: dict = {"machine": f"{os.cpu_count()} CPUs, torch {torch.__version__}, {args.threads} torch thread(s) per measurement"}
    print(f"# {figures['machine']}", flush=True)

    lengths = [4096, 16384, 65536, 262144] + ([] if args.skip_1m else [1_048_576])
    figures["rolling"] = {}
    for n in lengths:
        figures["rolling"][n] = in_child("rolling", str(infini_dir), str(n), timeout=7200)
        print(json.dumps({"rolling": n, **figures["rolling"][n]}), flush=True)
    r4, r64 = figures["rolling"][4096], figures["rolling"][65536]
    figures["rolling_ratio_peak_rss"] = r64["peak_rss_mb"] / r4["peak_rss_mb"]
    for key in ("peak_rss_growth_during_call_mb", "peak_live_heap_growth_during_call_mb"):
        figures[f"rolling_ratio_{key.removesuffix('_during_call_mb')}"] = r64[key] / r4[key]

    decode = in_child("decode", str(infini_dir))
    figures["decode"] = decode["rows"]
    figures["decode_load_avg_1min_before"] = decode["load_avg_1min_before"]
    print(json.dumps({"decode": figures["decode"]}), flush=True)
    by_len = {row["prompt_tokens"]: row["ms_per_new_token"] for row in figures["decode"]}
    figures["decode_ratio_32k_over_1k"] = by_len[32768] / by_len[1024]

    figures["passkey16k"] = {}
    for route in ("infini", "hf", "nocache"):
        figures["passkey16k"][route] = in_child("passkey", str(infini_dir), str(llama_dir), route, timeout=7200)
        print(json.dumps(figures["passkey16k"][route]), flush=True)
    p = figures["passkey16k"]
    figures["passkey_speedup_vs_hf"] = p["hf"]["seconds"] / p["infini"]["seconds"]
    figures["passkey_speedup_vs_nocache"] = p["nocache"]["seconds"] / p["infini"]["seconds"]
    summary = {k: v for k, v in figures.items() if "ratio" in k or "speedup" in k}
    print(json.dumps(summary, indent=1))
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1))


if __name__ == "__main__":
    main()
