"""Passkey finetuning examples, built by the same builder the passkey tasks use (`infini_bench.data.passkey`).

Each example is the prompt the passkey task of that length feeds, then the key and "."; all examples of one
length have the same number of tokens, so a batch needs no padding. Seeds come from the training namespace
(`infini_bench.data.seeds`: below 2**62), so no example can reproduce an evaluation document; the needle depth is
drawn uniformly in [0, 100] % from the same seed. The examples are cached in the run's data folder (a cache
`Store`, `infini_bench.data.cache`), so a resumed run trains on the very same ones.
"""
from __future__ import annotations

import hashlib
import json
import random

import numpy as np
import torch

from ..data.cache import Store, tokenizer_fingerprint
from ..data.passkey import build_passkey_sample
from ..data.seeds import check_training_seed
from .batches import Batch, PasskeyPools
from .recipe import PasskeyConfig


def training_seed(base_seed: int, length: int, index: int) -> int:
    """Seed of training example `index` at `length`: a hash below 2**62 (never an evaluation seed)."""
    payload = json.dumps(["passkey-train", int(base_seed), int(length), int(index)]).encode()
    return check_training_seed(int.from_bytes(hashlib.sha256(payload).digest()[:8], "big") >> 2)


def passkey_example(tokenizer, cfg: PasskeyConfig, length: int, index: int) -> tuple[list[int], list[int], dict]:
    """(input_ids, labels, sample) of one example: the prompt the passkey task feeds at `length` (length −
    answer budget tokens), then the key and ".".

    Training on the evaluation layout matters: a model trained on prompts that end elsewhere in their last
    segment learns that layout and fails on the task's. The "." after the key (as in the needle, "The pass key is
    67732.") teaches the model where the key ends; without it the model keeps emitting digits and the first number
    is wrong. Labels are -100 outside the key and "." when `loss_on` is answer."""
    seed = training_seed(cfg.seed, length, index)
    depth = round(random.Random(seed).uniform(0.0, 100.0), 2)
    haystack = cfg.haystacks[index % len(cfg.haystacks)]
    sample = build_passkey_sample(
        tokenizer, length, depth, seed, n_digits=cfg.digits, answer_tokens=cfg.answer_budget, haystack=haystack
    )
    target = list(sample["answer_ids"]) + answer_terminator(tokenizer, sample)
    if len(target) > cfg.answer_budget:
        raise ValueError(
            f"the key and '.' take {len(target)} tokens, more than answer_tokens={cfg.answer_budget}: raise answer_tokens"
        )
    ids = list(sample["input_ids"]) + target
    labels = [-100] * len(sample["input_ids"]) + target if cfg.loss_on == "answer" else list(ids)
    return ids, labels, sample


def answer_terminator(tokenizer, sample: dict) -> list[int]:
    """Token ids of the "." that follows the key in context (EOS if this tokenizer merges it with the digits)."""
    answer = list(sample["answer_ids"])
    ids = tokenizer(" " + sample["answer"] + ".", add_special_tokens=False)["input_ids"]
    if ids[: len(answer)] == answer and len(ids) > len(answer):
        return ids[len(answer) :]
    if tokenizer.eos_token_id is None:
        raise ValueError("the tokenizer splits the passkey's end oddly and has no eos_token to end the answer with")
    return [tokenizer.eos_token_id]


def passkey_pools(cfg: PasskeyConfig, tokenizer, max_steps: int, seed: int, store: Store) -> PasskeyPools:
    """`num_examples` examples per length (an arrays entry of `store`, the run's data cache, per length), served
    by the step schedule."""
    pools = {}
    for length in cfg.lengths:
        key = {"passkey": vars(cfg) | {"lengths": None}, "length": length, "tokenizer": tokenizer_fingerprint(tokenizer),
               "v": 4}
        arrays = store.load_arrays("passkey", key)
        if arrays is None:
            arrays = _build_pool(cfg, tokenizer, length)
            store.save_arrays("passkey", key, arrays)
        pools[length] = Batch(torch.from_numpy(arrays["input_ids"]), torch.from_numpy(arrays["labels"]))
    return PasskeyPools(pools, cfg.schedule, max_steps, seed)


def _build_pool(cfg: PasskeyConfig, tokenizer, length: int) -> dict[str, np.ndarray]:
    try:
        rows = [passkey_example(tokenizer, cfg, length, i)[:2] for i in range(cfg.num_examples)]
    except ValueError as err:
        raise ValueError(f"finetune.passkey.lengths has {length}, which the passkey builder refuses: {err}") from err
    sizes = {len(r[0]) for r in rows}
    if len(sizes) > 1:  # equal lengths are what lets a batch go without padding
        raise ValueError(
            f"passkey examples for length {length} have different token counts {sorted(sizes)}: the tokenizer "
            "gives keys of different lengths (use one that splits digits one per token)"
        )
    return {
        "input_ids": np.asarray([r[0] for r in rows], dtype=np.int64),
        "labels": np.asarray([r[1] for r in rows], dtype=np.int64),
    }
