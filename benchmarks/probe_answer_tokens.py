"""Where a retrieval answer goes wrong: teacher-forced accuracy of every answer token on the tasks' own documents.

lm-eval's `acc` says whether the whole generated answer was right. This probe feeds the prompt *and the right
answer* in one call and asks, token by token, whether the model's argmax is the next answer token. A model that
finds the needle but cannot read it out is right on the first digit and wrong later; one that picks the wrong
needle (multikey NIAH) is wrong on the first digit and right on the rest once given it; one whose memory is full
is wrong everywhere, even given every earlier digit. The documents are the ones the `passkey_<len>` and
`niah_<variant>_<len>` tasks build with their default options (the same builders, evaluation seeds and answer
budgets; `--n_depths` depths, 11 as in the quickstart).

    python benchmarks/probe_answer_tokens.py --model runs/quickstart/infini/finetune/latest \\
        --family niah_multikey_2 --lengths 256,1024 --samples 3
"""
from __future__ import annotations

import argparse
from typing import Any

import torch


def documents(tokenizer: Any, family: str, length: int, depths: list[float], samples: int,
              base_seed: int) -> list[dict[str, Any]]:
    """The task's documents at `length` for every depth and sample index (the builders' samples: `input_ids` the
    prompt, `prompt` its text), each with `answer_ids`, the right answer's tokens after the prompt."""
    from infini_bench.data.niah import VARIANTS
    from infini_bench.data.grid import Cell
    from infini_bench.data.passkey import PasskeySpec, build_passkey_sample, passkey_answer_tokens
    from infini_bench.data.seeds import eval_doc_seed
    from infini_bench.training.recipe import NiahTrainConfig
    from infini_bench.training.retrieval_data import niah_sample

    niah_defaults = NiahTrainConfig()  # the tasks' defaults (7-digit values); only n_digits is read
    variant = family.removeprefix("niah_")
    if family != "passkey" and (family == variant or variant not in VARIANTS):
        raise SystemExit(f"--family {family!r}: choose passkey or niah_<variant> "
                         f"({', '.join('niah_' + v for v in VARIANTS)})")
    docs = []
    for depth in depths:
        for index in range(samples):
            if family == "passkey":
                seed = eval_doc_seed(base_seed, "passkey", length, depth, index)
                sample = build_passkey_sample(tokenizer, PasskeySpec(answer_tokens=passkey_answer_tokens()), Cell(length, depth, seed))
            else:
                seed = eval_doc_seed(base_seed, f"niah-{variant}", length, depth, index)
                sample = niah_sample(tokenizer, niah_defaults.spec(variant, 0), Cell(length, depth, seed))
            docs.append(sample)
    return docs


@torch.no_grad()
def answer_token_accuracy(model: Any, docs: list[tuple[list[int], list[int]]]) -> tuple[list[float], float]:
    """For (prompt ids, answer ids) pairs: (accuracy of answer token i given the prompt and answer tokens < i, for
    each i; the share of documents with every answer token right)."""
    width = max(len(answer) for _, answer in docs)
    right, counts, whole = [0] * width, [0] * width, 0
    for prompt, answer in docs:
        logits = model(torch.tensor([prompt + answer])).logits[0, len(prompt) - 1 : len(prompt) + len(answer) - 1]
        hits = (logits.argmax(-1) == torch.tensor(answer)).tolist()
        for i, hit in enumerate(hits):
            right[i] += hit
            counts[i] += 1
        whole += all(hits)
    return [r / c for r, c in zip(right, counts)], whole / len(docs)


def main() -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    import infini_bench.modeling  # noqa: F401  registers model_type "infini"
    from infini_bench.data.grid import NIAH_DEPTHS, depths_from_count
    from infini_bench.data.seeds import EVAL_SEED_BASE

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", required=True, help="checkpoint folder (Infini or any causal LM)")
    parser.add_argument("--family", default="passkey", help="passkey or niah_<variant> (niah_single_1, ...)")
    parser.add_argument("--lengths", default="256,1024", help="context lengths in tokens, comma-separated")
    parser.add_argument("--n_depths", type=int, default=len(NIAH_DEPTHS), help="depths evenly spread over 0-100 %%")
    parser.add_argument("--samples", type=int, default=3, help="documents per depth")
    parser.add_argument("--seed", type=int, default=EVAL_SEED_BASE, help="the tasks' base seed (--metadata seed)")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    model = AutoModelForCausalLM.from_pretrained(args.model).eval()
    print(f"{args.model}, {args.family}, {args.n_depths} depths x {args.samples} samples\n")
    print("| length | documents | answer token 1, 2, ... (teacher-forced argmax accuracy) | all tokens right |")
    print("|---|---|---|---|")
    for length in (int(n) for n in args.lengths.split(",")):
        docs = documents(tokenizer, args.family, length, depths_from_count(args.n_depths), args.samples, args.seed)
        per_token, whole = answer_token_accuracy(model, [(d["input_ids"], d["answer_ids"]) for d in docs])
        tokens = " / ".join(f"{100 * a:.0f}" for a in per_token)
        print(f"| {length} | {len(docs)} | {tokens} % | {100 * whole:.0f} % |")


if __name__ == "__main__":
    main()
