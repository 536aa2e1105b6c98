"""Retrieval finetuning examples (passkey and RULER's NIAH variants), built by the same builders the lm-eval tasks
use (`infini_bench.data.passkey`, `infini_bench.data.niah`).

Each example is the prompt the task of that family and length feeds, then the answer the scorer wants and its end
("." or EOS). Seeds come from the training namespace (`infini_bench.data.seeds`: below 2**62), hashed with the
family's name, so no example can reproduce an evaluation document; the needle depth is drawn uniformly in
[0, 100] % from the same seed. Rows of one pool (family, length) normally have equal token counts; where answers
tokenise to different lengths (UUIDs) or budgets differ (a list of NIAH `answer_tokens`), rows are right-padded
with labels -100, which a causal model never sees from earlier positions. The examples are cached in the run's
data folder (a cache `Store`, `infini_bench.data.cache`), so a resumed run trains on the very same ones. Each pool
has `HELD_OUT_EXAMPLES` more, never trained on, for the end-of-run check in `training.held_out`.
"""
from __future__ import annotations

import hashlib
import json
import random
from functools import partial
from typing import Any, Callable

import numpy as np
import torch

from ..data.cache import Store, tokenizer_fingerprint
from ..data.grid import Cell
from ..data.niah import NiahSpec, build_niah_sample
from ..data.passkey import build_passkey_sample
from ..data.seeds import check_training_seed
from ..data.tokens import tokenizer_view
from .batches import Batch, RetrievalPools
from .recipe import NiahTrainConfig, PasskeyConfig

Example = tuple[list[int], list[int], dict[str, Any]]

#: Examples per pool that no step trains on: the indices right after the pool's (training seeds, never an evaluation
#: document). The end of a finetuning compares the model's answer loss on them with its loss on examples it trained
#: on (`training.held_out`), which tells learning the task from learning the pool.
HELD_OUT_EXAMPLES = 16


def training_seed(base_seed: int, length: int, index: int, family: str = "passkey") -> int:
    """Seed of training example `index` of `family` ("passkey", "niah_single_1", ...) at `length`: a hash below
    2**62 (never an evaluation seed)."""
    payload = json.dumps([f"{family}-train", int(base_seed), int(length), int(index)]).encode()
    return check_training_seed(int.from_bytes(hashlib.sha256(payload).digest()[:8], "big") >> 2)


def training_depth(seed: int) -> float:
    """The needle depth of a training example, in [0, 100] %, drawn from its seed."""
    return round(random.Random(seed).uniform(0.0, 100.0), 2)


def with_answer(tokenizer, sample: dict[str, Any], answer_ids: list[int], loss_on: str) -> tuple[list[int], list[int]]:
    """(input_ids, labels): the task's prompt, then the answer and its terminator; labels -100 outside those when
    `loss_on` is "answer". Shared by every family, so passkey and NIAH examples end the same way.

    Training on the evaluation layout matters: a model trained on prompts that end elsewhere in their last
    segment learns that layout and fails on the task's. The "." after the answer (as in the needles, "The pass key
    is 67732.") teaches the model where the answer ends; without it the model keeps emitting digits and the first
    number is wrong."""
    target = list(answer_ids) + answer_terminator(tokenizer, sample, answer_ids)
    budget = sample["answer_tokens"]
    if len(target) > budget:
        raise ValueError(
            f"the answer and its end take {len(target)} tokens, more than answer_tokens={budget}: raise answer_tokens"
        )
    ids = list(sample["input_ids"]) + target
    labels = [-100] * len(sample["input_ids"]) + target if loss_on == "answer" else list(ids)
    return ids, labels


def answer_terminator(tokenizer, sample: dict[str, Any], answer_ids: list[int] | None = None) -> list[int]:
    """Token ids of the "." that follows the answer in context (EOS if this tokenizer merges it with the answer)."""
    answer = list(sample["answer_ids"] if answer_ids is None else answer_ids)
    ids = tokenizer(" " + sample["answer"] + ".", add_special_tokens=False)["input_ids"]
    if ids[: len(answer)] == answer and len(ids) > len(answer):
        return ids[len(answer) :]
    if tokenizer.eos_token_id is None:
        raise ValueError("the tokenizer splits the answer's end oddly and has no eos_token to end the answer with")
    return [tokenizer.eos_token_id]


# --- passkey --------------------------------------------------------------------------------------------------


def passkey_example(tokenizer, cfg: PasskeyConfig, length: int, index: int) -> Example:
    """(input_ids, labels, sample) of one passkey example: the prompt the passkey task feeds at `length`
    (length − answer budget tokens), then the key and "."."""
    seed = training_seed(cfg.seed, length, index)
    sample = build_passkey_sample(tokenizer, cfg.spec(index), Cell(length, training_depth(seed), seed))
    return (*with_answer(tokenizer, sample, sample["answer_ids"], cfg.loss_on), sample)


# --- NIAH -----------------------------------------------------------------------------------------------------


def niah_sample(tokenizer, spec: NiahSpec, cell: Cell) -> dict[str, Any]:
    """The document the `niah_<variant>_<length>` task builds for `cell` (plain prompt), plus `answer_ids`: the
    answer's tokens after the answer prefix, as the model would generate them."""
    sample = build_niah_sample(tokenizer, spec, cell)
    view = tokenizer_view(tokenizer)
    return {**sample, "answer_ids": view.continuation_ids(sample["gen_prefix"], " " + sample["answer"])}


def niah_example(tokenizer, cfg: NiahTrainConfig, variant: str, length: int, index: int) -> Example:
    """(input_ids, labels, sample) of one NIAH example: the task's prompt at `length`, then the answer the scorer
    accepts (the value; several values joined by ", ", the document's `answer`) and "."."""
    seed = training_seed(cfg.seed, length, index, family=f"niah_{variant}")
    sample = niah_sample(tokenizer, cfg.spec(variant, index), Cell(length, training_depth(seed), seed))
    return (*with_answer(tokenizer, sample, sample["answer_ids"], cfg.loss_on), sample)


# --- pools ----------------------------------------------------------------------------------------------------


def retrieval_pools(
    passkey: PasskeyConfig, niah: NiahTrainConfig, tokenizer, seed: int, store: Store
) -> RetrievalPools:
    """One pool per (family, length), each an arrays entry of `store` (the run's data cache), served by the step
    schedule over the passkey lengths followed by any lengths only NIAH variants use; with each pool, its
    `HELD_OUT_EXAMPLES` held-out examples."""
    fingerprint = tokenizer_fingerprint(tokenizer)
    pools: dict[tuple[str, int], Batch] = {}
    held_out: dict[tuple[str, int], Batch] = {}

    def add(family: str, length: int, key: dict[str, Any], example: Callable[[int], Example], count: int,
            refused: str) -> None:
        pools[(family, length)] = _pool(store, family, key, example, range(count), tokenizer, refused)
        held_out[(family, length)] = _pool(store, family, key | {"held_out": HELD_OUT_EXAMPLES}, example,
                                           range(count, count + HELD_OUT_EXAMPLES), tokenizer, refused)

    lengths = list(passkey.lengths)
    for length in passkey.lengths:
        key = {"passkey": vars(passkey) | {"lengths": None}, "length": length, "tokenizer": fingerprint, "v": 4}
        add("passkey", length, key, partial(passkey_example, tokenizer, passkey, length), passkey.num_examples,
            f"finetune.passkey.lengths has {length}, which the passkey builder refuses")
    for variant in niah.variants:
        for length in niah.lengths_for(variant, passkey.lengths):
            key = {"niah": vars(niah) | {"variants": None, "lengths": None}, "variant": variant, "length": length,
                   "tokenizer": fingerprint, "v": 1}
            add(f"niah_{variant}", length, key, partial(niah_example, tokenizer, niah, variant, length),
                niah.num_examples,
                f"finetune.niah: variant {variant} at length {length} is refused by the NIAH builder (give this "
                "variant longer lengths, e.g. finetune.niah.lengths={" + variant + ": [...]})")
            if length not in lengths:
                lengths.append(length)
    return RetrievalPools(pools, lengths, passkey.schedule, seed, held_out)


def _pool(store: Store, name: str, key: dict[str, Any], example: Callable[[int], Example], indices: range,
          tokenizer, refused: str) -> Batch:
    """The cached pool `name`/`key`, or the examples `indices` built now (a builder's refusal named by `refused`)."""
    arrays = store.load_arrays(name, key)
    if arrays is None:
        try:
            rows = [example(i)[:2] for i in indices]
        except ValueError as err:
            raise ValueError(f"{refused}: {err}") from err
        arrays = _stack(rows, _pad_id(tokenizer))
        store.save_arrays(name, key, arrays)
    return Batch(torch.from_numpy(arrays["input_ids"]), torch.from_numpy(arrays["labels"]))


def _pad_id(tokenizer) -> int:
    for token_id in (tokenizer.pad_token_id, tokenizer.eos_token_id):
        if token_id is not None:
            return int(token_id)
    return 0


def _stack(rows: list[tuple[list[int], list[int]]], pad_id: int) -> dict[str, np.ndarray]:
    """Rows as arrays, right-padded to the longest (labels -100 there) when their lengths differ: a causal model's
    earlier positions never see the padding, and no loss is taken on it."""
    width = max(len(ids) for ids, _ in rows)
    ids = np.full((len(rows), width), pad_id, dtype=np.int64)
    labels = np.full((len(rows), width), -100, dtype=np.int64)
    for i, (row_ids, row_labels) in enumerate(rows):
        ids[i, : len(row_ids)] = row_ids
        labels[i, : len(row_labels)] = row_labels
    return {"input_ids": ids, "labels": labels}
