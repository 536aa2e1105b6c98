"""Passkey finetuning examples, built by the same builder the passkey tasks use (`infini_bench.data.passkey`).

Each example is prompt + answer, exactly `length` tokens in the model's tokenizer, so one length makes a batch with
no padding. Seeds come from the training namespace (`infini_bench.data.seeds`: below 2**62), so no example can
reproduce an evaluation document; the needle depth is drawn uniformly in [0, 100] % from the same seed.
"""
from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path

import numpy as np
import torch

from ..data import text_corpus
from ..data.passkey import build_passkey_sample
from ..data.seeds import check_training_seed
from .batches import Batch, PasskeyPools
from .recipe import PasskeyConfig


def training_seed(base_seed: int, length: int, index: int) -> int:
    """Seed of training example `index` at `length`: a hash below 2**62 (never an evaluation seed)."""
    payload = json.dumps(["passkey-train", int(base_seed), int(length), int(index)]).encode()
    return check_training_seed(int.from_bytes(hashlib.sha256(payload).digest()[:8], "big") >> 2)


def passkey_example(tokenizer, cfg: PasskeyConfig, length: int, index: int) -> tuple[list[int], list[int], dict]:
    """(input_ids, labels, sample) of one example: prompt + answer + ".", exactly `length` tokens.

    The "." after the key (as in the needle, "The pass key is 67732.") teaches the model where the key ends;
    without it a model trained on the answer alone keeps emitting digits and the first number is wrong.
    Labels are -100 outside answer and "." when `loss_on` is answer."""
    seed = training_seed(cfg.seed, length, index)
    depth = round(random.Random(seed).uniform(0.0, 100.0), 2)
    haystack = cfg.haystacks[index % len(cfg.haystacks)]
    build = lambda budget: build_passkey_sample(  # noqa: E731
        tokenizer, length, depth, seed, n_digits=cfg.digits, answer_tokens=budget, haystack=haystack
    )
    sample = build(None)
    end = answer_terminator(tokenizer, sample)
    sample = build(len(sample["answer_ids"]) + len(end))
    target = list(sample["answer_ids"]) + end
    ids = list(sample["input_ids"]) + target
    if len(ids) != length:  # the builder promises exact lengths; a silent mismatch would break batching
        raise ValueError(f"passkey builder gave {len(ids)} tokens for length {length} (seed {seed})")
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


def passkey_pools(cfg: PasskeyConfig, tokenizer, max_steps: int, seed: int, cache_dir: str | Path) -> PasskeyPools:
    """`num_examples` examples per length (cached under `cache_dir`), served by the step schedule."""
    pools = {}
    for length in cfg.lengths:
        key = text_corpus.cache_key({"passkey": vars(cfg) | {"lengths": None}, "length": length, "v": 2}, tokenizer)
        path = Path(cache_dir) / f"passkey-{key}.npz"
        if path.is_file():
            arrays = np.load(path)
            ids, labels = arrays["input_ids"], arrays["labels"]
        else:
            try:
                rows = [passkey_example(tokenizer, cfg, length, i)[:2] for i in range(cfg.num_examples)]
            except ValueError as err:
                raise ValueError(f"finetune.passkey.lengths has {length}, which the passkey builder refuses: {err}") from err
            ids = np.asarray([r[0] for r in rows], dtype=np.int64)
            labels = np.asarray([r[1] for r in rows], dtype=np.int64)
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp.npz")
            np.savez(tmp, input_ids=ids, labels=labels)
            tmp.rename(path)
        pools[length] = Batch(torch.from_numpy(ids), torch.from_numpy(labels))
    return PasskeyPools(pools, cfg.schedule, max_steps, seed)
