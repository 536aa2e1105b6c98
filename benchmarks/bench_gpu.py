"""The Infini model at GPU speed, every row side by side in one run (about 5 minutes on one H200):

    python benchmarks/bench_gpu.py --out benchmarks/RESULTS_gpu.md     # on a GPU (bf16)
    python benchmarks/bench_gpu.py --small                              # the same rows at toy sizes, on the CPU

(a) trainer tokens/s (this project's training loop, delta_l2 memory) at 1, 8 and 32 segments against a plain
    `LlamaForCausalLM` loop of the same dimensions (d1024 × 8 layers), at 8K and 32K tokens;
(b) `loglikelihood_rolling` through the adapter: tokens/s and peak GPU memory at 32K, 128K and 1M tokens for the
    234M shape (d1024, 18 layers, segment 2048);
(c) `generate_until` at 32K and 128K tokens against lm-eval's `hf` on the same weights as a full-attention Llama:
    seconds and peak memory;
(d) the delta_l2 memory op (every segment's retrieval and the final memory) against its float32 torch reference:
    time and relative error, and what the bf16 fla path costs in logits against the float32 model.
Random weights throughout: these rows measure speed and memory, not quality. Prints Markdown tables.
"""
from __future__ import annotations

import argparse
import json
import logging
import platform
import sys
import tempfile
import time
import traceback
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_train  # noqa: E402  (the trainer and Llama loops, shared with the CPU training benchmark)
from bench_adapter import FILLER, stdlib_text  # noqa: E402  (the offline text both evaluation benchmarks read)

from infini_bench import InfiniConfig, InfiniForCausalLM  # noqa: E402
from infini_bench.modeling import infini_to_llama  # noqa: E402
from infini_bench.modeling.fla_ops import HAS_FLA  # noqa: E402
from infini_bench.modeling.memory_features import unit  # noqa: E402
from infini_bench.modeling.memory_ops import segment_retrievals  # noqa: E402

CUDA = torch.cuda.is_available()
DEVICE = "cuda" if CUDA else "cpu"


def sync() -> None:
    if CUDA:
        torch.cuda.synchronize()


def reset_peak() -> None:
    if CUDA:
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def peak_gb() -> float:
    return torch.cuda.max_memory_allocated() / 2**30 if CUDA else float("nan")


def timed(fn, repeats: int = 5) -> float:
    """Best of `repeats` after one untimed call (which also compiles Triton kernels), in milliseconds."""
    fn()
    best = float("inf")
    for _ in range(repeats):
        sync()
        start = time.perf_counter()
        fn()
        sync()
        best = min(best, time.perf_counter() - start)
    return best * 1e3


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).norm() / b.double().norm())


# --- (a) training ------------------------------------------------------------------------------------------------
def bench_training(small: bool) -> list[dict]:
    base = dict(hidden=64, layers=2, heads=2, vocab=512, warmup=1, steps=2) if small else \
        dict(hidden=1024, layers=8, heads=16, vocab=32000, warmup=2, steps=6)
    rows = []
    for seq, segment_counts in ((256, (1, 8)), (1024, (8, 32))) if small else ((8192, (1, 8)), (32768, (8, 32))):
        args = argparse.Namespace(**base, seq=seq, batch=1, precision="bf16" if CUDA else "fp32", memory_update="delta_l2")
        llama = bench_train.bench_llama(args)
        rows.append({"tokens": seq, "loop": "plain LlamaForCausalLM", "segments": 1, "tok_s": llama, "vs_llama": 1.0})
        print(json.dumps(rows[-1]), flush=True)
        for segments in segment_counts:
            tok_s = bench_train.bench_trainer(args, segments)
            rows.append({"tokens": seq, "loop": "this trainer (delta_l2)", "segments": segments, "tok_s": tok_s,
                         "vs_llama": tok_s / llama})
            print(json.dumps(rows[-1]), flush=True)
    return rows


# --- (b), (c) evaluation through lm-eval -------------------------------------------------------------------------
class EvalModels:
    """One random-weight Infini checkpoint (bf16 on CUDA) and its full-attention Llama export, on disk."""

    def __init__(self, work: Path, small: bool):
        from infini_bench.tokenizer import train_bpe_tokenizer

        self.source = stdlib_text(2_000_000)
        tok = train_bpe_tokenizer([self.source[:1_000_000], FILLER * 50], vocab_size=512 if small else 1024)
        dims = dict(hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
                    segment_length=64) if small else \
            dict(hidden_size=1024, intermediate_size=2816, num_hidden_layers=18, num_attention_heads=16,
                 segment_length=2048)
        torch.manual_seed(0)
        config = InfiniConfig(vocab_size=len(tok), gate_init="randn", memory_update="delta_l2",
                              bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                              pad_token_id=tok.pad_token_id, **dims)
        model = InfiniForCausalLM(config)
        self.params = sum(p.numel() for p in model.parameters())
        self.infini_dir, self.llama_dir = work / "infini", work / "llama"
        model.save_pretrained(self.infini_dir)
        tok.save_pretrained(self.infini_dir)
        infini_to_llama(model, max_position_embeddings=1 << 18).save_pretrained(self.llama_dir)
        tok.save_pretrained(self.llama_dir)
        self.dims = dims
        self.dtype = "bfloat16" if CUDA else "float32"
        from infini_bench.model_adapters import InfiniLM

        self.lm = InfiniLM(pretrained=str(self.infini_dir), device=DEVICE, dtype=self.dtype)
        self.source_ids = self.lm.tok_encode(self.source)

    def text_of(self, tokens: int) -> str:
        ids = (self.source_ids * (tokens // len(self.source_ids) + 1))[:tokens]
        return self.lm.tokenizer.decode(ids)


def bench_rolling(models: EvalModels, small: bool) -> list[dict]:
    """The adapter's default `prefill_chunk_tokens` at every length, then a 4× larger chunk at the longest."""
    from lm_eval.api.instance import Instance

    from infini_bench.model_adapters import InfiniLM

    lengths = (2048, 8192, 32768) if small else (32768, 131072, 1048576)
    rows = []
    big_chunk = InfiniLM(pretrained=str(models.infini_dir), device=DEVICE, dtype=models.dtype, prefill_chunk_tokens=65536)
    for i, (n, lm) in enumerate([(lengths[0], models.lm)] + [(n, models.lm) for n in lengths] + [(lengths[-1], big_chunk)]):
        text = models.text_of(n)
        start = time.perf_counter()
        tokens = len(models.lm.tok_encode(text))
        encode_s = time.perf_counter() - start
        reset_peak()
        start = time.perf_counter()
        [logprob] = lm.loglikelihood_rolling([Instance("loglikelihood_rolling", {}, (text,), 0)], disable_tqdm=True)
        sync()
        seconds = time.perf_counter() - start
        if i == 0:
            continue
        rows.append({"tokens": tokens, "chunk": lm.get_model_info()["prefill_chunk_tokens"], "seconds": seconds,
                     "tok_s": tokens / seconds, "encode_s": encode_s, "peak_gb": peak_gb(),
                     "nll_per_token": -logprob / tokens})
        print(json.dumps(rows[-1]), flush=True)
    return rows


def passkey_prompt(models: EvalModels, tokens: int) -> str:
    body = models.text_of(tokens - 80)
    cut = len(body) // 2
    return ("There is an important info hidden inside a lot of irrelevant text. Find it and memorize it.\n"
            + body[:cut] + "\nThe pass key is 68190. Remember it. 68190 is the pass key.\n" + body[cut:]
            + "\nWhat is the pass key? The pass key is")


def bench_generate(models: EvalModels, small: bool) -> list[dict]:
    """The same request through three decoders: the Infini model with its static cache and the decode step
    compiled into CUDA graphs (the adapter's CUDA default; static but eager on the CPU), with the dynamic cache,
    and lm-eval's `hf` on the Llama export. The warm-up call (which compiles) is timed apart."""
    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM

    from infini_bench.model_adapters import InfiniLM

    shared = dict(pretrained=models.lm.model, tokenizer=models.lm.tokenizer, device=DEVICE)  # one copy of the weights
    static = InfiniLM(**shared, static_cache=True, compile=CUDA)
    dynamic = InfiniLM(**shared, static_cache=False)
    hf = HFLM(pretrained=str(models.llama_dir), device=DEVICE, dtype=models.dtype, batch_size=1, max_length=1 << 18)
    lengths = (1024, 4096) if small else (32768, 131072)
    rows = []
    for i, n in enumerate((lengths[0],) + lengths):  # warm-up first
        prompt = passkey_prompt(models, n)
        request = [Instance("generate_until", {}, (prompt, {"until": [], "max_gen_toks": 16, "min_new_tokens": 16}), 0)]
        row = {"prompt_tokens": len(models.lm.tok_encode(prompt))}
        texts = {}
        for name, lm in (("infini", static), ("dynamic", dynamic), ("hf", hf)):
            reset_peak()
            start = time.perf_counter()
            [texts[name]] = lm.generate_until(request, disable_tqdm=True)
            sync()
            row[f"{name}_s"], row[f"{name}_peak_gb"] = time.perf_counter() - start, peak_gb()
        row["same_text"] = texts["infini"] == texts["dynamic"]
        if not i:
            models.warmup = {"prompt_tokens": row["prompt_tokens"], "static_s": row["infini_s"]}  # it compiles
            continue
        row["speedup"] = row["hf_s"] / row["infini_s"]
        row["dynamic_speedup"] = row["hf_s"] / row["dynamic_s"]
        row["memory_ratio"] = row["infini_peak_gb"] / row["hf_peak_gb"] if CUDA else float("nan")
        rows.append(row)
        print(json.dumps(row), flush=True)
    del hf
    return rows


# --- (d) the memory-update op ------------------------------------------------------------------------------------
def bench_op(small: bool) -> list[dict]:
    """`segment_retrievals` for delta_l2 (every segment's read of the memory before it, and the final memory):
    evaluation (forward) and training (forward + backward), torch against fla-core."""
    heads, dim = (4, 16) if small else (16, 64)
    rows = []
    for tokens, seg in ((256, 256), (512, 128)) if small else ((2048, 2048), (8192, 2048), (32768, 2048), (32768, 1024)):
        torch.manual_seed(0)
        s = tokens // seg
        keys = unit(torch.randn(1, heads, s, seg, dim, device=DEVICE)) * torch.rand(1, heads, s, seg, 1, device=DEVICE).sqrt()
        values = torch.randn(1, heads, s, seg, dim, device=DEVICE)
        queries = torch.randn(1, heads, 1, s, seg, dim, device=DEVICE)
        memory = torch.randn(1, heads, dim, dim, device=DEVICE) * 0.1
        norm = torch.zeros(1, heads, dim, device=DEVICE)
        leaves = [x.clone().requires_grad_() for x in (keys, values, queries)]

        def read(kernel: str, inputs=(keys, values, queries)):
            return segment_retrievals("delta_l2", memory, norm, inputs[0], inputs[1], inputs[2], 1e-6, kernel=kernel)

        def train(kernel: str) -> None:
            retrieved, final, _ = read(kernel, leaves)
            torch.autograd.grad(retrieved.sum() + final.sum(), leaves)

        kernels = ("torch", "fla") if CUDA and HAS_FLA else ("torch",)
        row = {"tokens": tokens, "segments": s}
        with torch.no_grad():
            ref = read("torch")
            for kernel in kernels:
                row[f"{kernel}_eval_ms"] = timed(lambda: read(kernel))
            if "fla" in kernels:
                got = read("fla")
                row["fla_read_rel_err"], row["fla_state_rel_err"] = rel(got[0], ref[0]), rel(got[1], ref[1])
        for kernel in kernels:
            row[f"{kernel}_train_ms"] = timed(lambda: train(kernel))
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def bench_logits_cost(small: bool) -> dict:
    """Logits of a bf16 model (fla kernel; then the torch kernel) against the same weights in float32."""
    dims = dict(hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=2, segment_length=64) \
        if small else dict(hidden_size=1024, intermediate_size=2816, num_hidden_layers=8, num_attention_heads=16,
                           segment_length=1024)
    torch.manual_seed(0)
    model = InfiniForCausalLM(InfiniConfig(vocab_size=1024, memory_update="delta_l2", gate_init=0.0, **dims)).to(DEVICE).eval()
    ids = torch.randint(0, 1024, (1, dims["segment_length"] * 8), device=DEVICE)
    with torch.no_grad():
        exact = model(ids).logits.float()
        out = {"tokens": ids.shape[1]}
        if CUDA:
            model.to(torch.bfloat16)
            out["bf16_fla_rel_err"] = rel(model(ids).logits.float(), exact) if HAS_FLA else None
            model.config.memory_kernel = "torch"
            out["bf16_torch_rel_err"] = rel(model(ids).logits.float(), exact)
    print(json.dumps(out), flush=True)
    return out


# --- the report --------------------------------------------------------------------------------------------------
def markdown(results: dict) -> str:
    lines = [f"device: {results['device']}; torch {results['torch']}; fla-core {results['fla']}; python "
             f"{results['python']}; {results['seconds']:.0f} s for the whole run\n"]
    if "training" in results:
        lines += ["### (a) trainer tokens/s (bf16 autocast, batch 1, delta_l2 memory)\n",
                  "| tokens | loop | segments | tokens/s | vs Llama |", "|---:|---|---:|---:|---:|"]
        lines += [f"| {r['tokens']} | {r['loop']} | {r['segments']} | {r['tok_s']:,.0f} | {r['vs_llama']:.2f}× |"
                  for r in results["training"]]
    if "rolling" in results:
        lines += [f"\n### (b) `loglikelihood_rolling` through `--model infini` ({results['eval_params'] / 1e6:.0f}M "
                  f"parameters, {results['eval_dims']}, bf16)\n",
                  "| tokens | prefill_chunk_tokens | seconds | tokens/s | peak GPU GB | vs the first row's peak | "
                  "of which tokenising (s) | tokens/s without tokenising |", "|---:|---:|---:|---:|---:|---:|---:|---:|"]
        first = results["rolling"][0]["peak_gb"]
        lines += [f"| {r['tokens']:,} | {r['chunk']} | {r['seconds']:.2f} | {r['tok_s']:,.0f} | {r['peak_gb']:.2f} | "
                  f"{r['peak_gb'] / first:.2f}× | {r['encode_s']:.2f} | {r['tokens'] / (r['seconds'] - r['encode_s']):,.0f} |"
                  for r in results["rolling"]]
    if "generate" in results:
        static = "static cache, compiled decode step (CUDA graphs)" if CUDA else "static cache (eager on the CPU)"
        lines += ["\n### (c) `generate_until`, 16 new tokens: `--model infini` against lm-eval `hf` (same weights as a "
                  f"full-attention Llama); infini: {static}; dynamic: the `InfiniCache` path\n",
                  "| prompt tokens | infini s | dynamic s | hf s | speed-up | dynamic speed-up | infini peak GB | "
                  "dynamic peak GB | hf peak GB | memory ratio | same text as dynamic |",
                  "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
        lines += [f"| {r['prompt_tokens']:,} | {r['infini_s']:.2f} | {r['dynamic_s']:.2f} | {r['hf_s']:.2f} | "
                  f"{r['speedup']:.1f}× | {r['dynamic_speedup']:.1f}× | {r['infini_peak_gb']:.2f} | "
                  f"{r['dynamic_peak_gb']:.2f} | {r['hf_peak_gb']:.2f} | {r['memory_ratio']:.2f} | "
                  f"{'yes' if r['same_text'] else 'no'} |" for r in results["generate"]]
        if "generate_warmup" in results:
            w = results["generate_warmup"]
            what = "it compiles the step and records its graphs" if CUDA else "eager: nothing is compiled on the CPU"
            lines.append(f"\nThe static path's warm-up call ({w['prompt_tokens']:,}-token prompt; {what}): "
                         f"{w['static_s']:.1f} s.")
    if "op" in results:
        lines += ["\n### (d) delta_l2 memory op (`segment_retrievals`: every segment's read of the memory before it, "
                  "and the final memory), 16 heads × 64, fla-core against the float32 torch reference\n",
                  "| tokens | segments | torch eval ms | fla eval ms | torch train ms | fla train ms | fla read rel. error "
                  "| fla state rel. error |", "|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for r in results["op"]:
            cells = [f"{r[k]:.3g}" if k in r else "–" for k in ("torch_eval_ms", "fla_eval_ms", "torch_train_ms",
                                                               "fla_train_ms", "fla_read_rel_err", "fla_state_rel_err")]
            lines.append(f"| {r['tokens']} | {r['segments']} | " + " | ".join(cells) + " |")
    if "logits" in results:
        r = results["logits"]
        lines.append(f"\nLogits of a bf16 model against the same weights in float32 ({r['tokens']} tokens, 8 segments): "
                     f"fla kernel {r.get('bf16_fla_rel_err')}, torch kernel {r.get('bf16_torch_rel_err')} (relative "
                     "Frobenius error).")
    for name, err in results.get("errors", {}).items():
        lines.append(f"\n**{name} failed**: `{err}`")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--small", action="store_true", help="toy sizes (a CPU smoke run of every row)")
    parser.add_argument("--out", help="also write the Markdown tables here")
    parser.add_argument("--json", help="also write the raw figures here")
    parser.add_argument("--only", default="training,rolling,generate,op,logits",
                        help="comma-separated sections to run (default: all)")
    args = parser.parse_args(argv)
    logging.disable(logging.WARNING)
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    if not CUDA:
        torch.set_flush_denormal(True)
    sections = set(args.only.split(","))
    started = time.perf_counter()
    results: dict = {"device": torch.cuda.get_device_name() if CUDA else f"CPU ({torch.get_num_threads()} threads)",
                     "torch": torch.__version__, "python": platform.python_version(), "errors": {}}
    try:
        from importlib.metadata import version

        results["fla"] = version("fla-core")
    except Exception:  # noqa: BLE001 -- not installed
        results["fla"] = "not installed"

    def run(name: str, fn) -> None:
        if name not in sections:
            return
        try:
            results[name] = fn()
        except Exception as err:  # noqa: BLE001 -- one failing row must not lose the others' figures
            traceback.print_exc()
            results["errors"][name] = repr(err)[:400]

    run("op", lambda: bench_op(args.small))
    run("logits", lambda: bench_logits_cost(args.small))
    run("training", lambda: bench_training(args.small))
    with tempfile.TemporaryDirectory() as work:
        if sections & {"rolling", "generate"}:
            models = EvalModels(Path(work), args.small)
            results["eval_params"], results["eval_dims"] = models.params, models.dims
            run("rolling", lambda: bench_rolling(models, args.small))
            run("generate", lambda: bench_generate(models, args.small))
            if hasattr(models, "warmup"):
                results["generate_warmup"] = models.warmup
    results["seconds"] = time.perf_counter() - started
    text = markdown(results)
    print(text)
    if args.out:
        Path(args.out).write_text(text)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 1 if results["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
