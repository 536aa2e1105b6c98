"""What the loop trains on, one global batch per optimizer step, as a pure function of the data position.

Exact resume and the "same global batch on any number of processes" guarantee both follow from one rule: the
global batch of a step depends only on the seed and the saved data position (cursors), never on the process
count. Each process then takes its own rows of that batch (`rank_micro_batches`).
"""
from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np
import torch


@dataclass
class Batch:
    input_ids: torch.Tensor  # [rows, length] token ids
    labels: torch.Tensor  # [rows, length]; -100 where no loss is taken (shifted inside the model)
    source: str = "text"  # "text" (corpus), "passkey" or "niah_<variant>"; logged with the loss


class EpochOrder:
    """Row `i` of an endless stream that visits all `n` rows once per epoch, in a fresh seeded order."""

    def __init__(self, n: int, seed: int):
        self.n, self.seed = n, seed
        self._epoch, self._perm = -1, np.arange(0)

    def __call__(self, i: int) -> int:
        epoch = i // self.n
        if epoch != self._epoch:
            rng = np.random.default_rng([self.seed, epoch])
            self._epoch, self._perm = epoch, rng.permutation(self.n)
        return int(self._perm[i % self.n])


class PackedText:
    """Pretraining: packed rows of the corpus; the loss is taken on every token."""

    def __init__(self, rows: np.ndarray, seed: int):
        self.rows = rows
        self.order = EpochOrder(len(rows), seed)
        self.shortest = rows.shape[1]  # tokens in the shortest sequence this data yields

    def global_batch(self, step: int, size: int, cursors: dict[str, int], done: float) -> Batch:
        """`done` (how far the run is through its schedule) is unused: corpus batches have no curriculum."""
        start = cursors.get("text", 0)
        index = [self.order(start + i) for i in range(size)]
        cursors["text"] = start + size
        ids = torch.from_numpy(self.rows[index].astype(np.int64))
        return Batch(ids, ids.clone())


def pool_key(family: str, length: int) -> str:
    """A pool's cursor name: the length alone for passkey (the name runs saved before NIAH existed), else
    "<family>:<length>" (e.g. "niah_single_1:256")."""
    return str(length) if family == "passkey" else f"{family}:{length}"


class RetrievalPools:
    """Finetuning: one pool of examples per (family, context length); each step uses one pool, so rows of
    different token counts never share a batch.

    The length comes from `schedule` over `lengths` — mix: lengths cycle step by step; ramp (curriculum): the run
    is cut into len(lengths) equal stages by `done` (how far it is through its schedule, 0 to 1: its share of
    max_steps, or of max_minutes when that runs out first), stage k cycles through the first k+1 lengths, so short
    sequences come first and stay in the mix. Within a length the families that have a pool there (in `pools`
    order: passkey, then the NIAH variants) take turns, one per visit of that length. Both choices are functions
    of the step and `done` alone, and each pool keeps its own cursor: a global batch depends only on the seed, the
    cursors and the stage."""

    def __init__(self, pools: dict[tuple[str, int], Batch], lengths: list[int], schedule: str, seed: int,
                 held_out: dict[tuple[str, int], Batch] | None = None):
        self.pools = pools
        self.held_out = dict(held_out or {})  # per pool, examples of its builder that no step trains on
        self.lengths = list(lengths)
        missing = [n for n in self.lengths if not any(length == n for _, length in pools)]
        if missing or not pools:
            raise ValueError(f"no retrieval pool at lengths {missing}")
        self.families = {n: [f for f, length in pools if length == n] for n in self.lengths}
        self.schedule = schedule
        self.orders = {key: EpochOrder(len(pool.input_ids), _order_seed(seed, key, j))
                       for j, (key, pool) in enumerate(pools.items())}
        self.shortest = min(pool.input_ids.shape[1] for pool in pools.values())

    def _cycle(self, done: float) -> int:
        """How many lengths the schedule cycles through once `done` of the run is done."""
        if self.schedule == "mix":
            return len(self.lengths)
        return min(len(self.lengths), 1 + int(done * len(self.lengths)))

    def length_at(self, step: int, done: float) -> int:
        return self.lengths[step % self._cycle(done)]

    def pool_at(self, step: int, done: float) -> tuple[str, int]:
        """(family, length) of the pool `step` trains on."""
        cycle = self._cycle(done)
        length = self.lengths[step % cycle]
        families = self.families[length]
        return families[(step // cycle) % len(families)], length

    def drawn_rows(self, key: tuple[str, int], count: int) -> list[int]:
        """The first `count` rows of pool `key` the run drew, in the order it drew them."""
        return [self.orders[key](i) for i in range(count)]

    def global_batch(self, step: int, size: int, cursors: dict[str, int], done: float) -> Batch:
        family, length = self.pool_at(step, done)
        key = pool_key(family, length)
        start = cursors.get(key, 0)
        index = torch.tensor([self.orders[(family, length)](start + i) for i in range(size)])
        cursors[key] = start + size
        pool = self.pools[(family, length)]
        return Batch(pool.input_ids[index], pool.labels[index], family)


def _order_seed(seed: int, key: tuple[str, int], j: int) -> int:
    """The epoch-order seed of a pool: seed + its index for passkey pools (as before NIAH pools existed, so older
    runs resume on the same order), a stable hash of the pool's name for the others."""
    family, length = key
    if family == "passkey":
        return seed + j
    return seed + zlib.crc32(pool_key(family, length).encode())


class WithText:
    """Finetuning that keeps language modelling alive: every `every`-th step is a corpus batch, the others
    retrieval (passkey, NIAH). The sources keep separate cursors, so resume stays exact.

    The retrieval pools see their own step count (the steps that are not text): counting global steps would let the
    text steps alias the length and family cycles (with every=2 and two lengths, one length would never train)."""

    def __init__(self, retrieval: RetrievalPools, text: PackedText, every: int):
        self.retrieval, self.text, self.every = retrieval, text, every
        self.shortest = min(retrieval.shortest, text.shortest)

    def _is_text(self, step: int) -> bool:
        return step % self.every == self.every - 1

    def global_batch(self, step: int, size: int, cursors: dict[str, int], done: float) -> Batch:
        if self._is_text(step):
            return self.text.global_batch(step, size, cursors, done)
        return self.retrieval.global_batch(retrieval_step(step, self.every), size, cursors, done)


class CopyFirst:
    """The first `steps` optimizer steps are copy steps (`copy_data.CopySpans`); then `rest` (retrieval, with or
    without text steps) trains as if it started there (its own step count from 0; `done` stays the whole run's)."""

    def __init__(self, copy, rest: RetrievalPools | WithText, steps: int):
        self.copy, self.rest, self.steps = copy, rest, steps
        self.shortest = min(copy.shortest, rest.shortest)

    def global_batch(self, step: int, size: int, cursors: dict[str, int], done: float) -> Batch:
        if step < self.steps:
            return self.copy.global_batch(step, size, cursors, done)
        return self.rest.global_batch(step - self.steps, size, cursors, done)


def retrieval_part(data: PackedText | RetrievalPools | WithText | CopyFirst) -> RetrievalPools | None:
    """The retrieval pools a stage trains on (finetuning, with or without text or copy steps); None for
    pretraining."""
    if isinstance(data, CopyFirst):
        data = data.rest
    if isinstance(data, WithText):
        return data.retrieval
    return data if isinstance(data, RetrievalPools) else None


def retrieval_step(step: int, every: int) -> int:
    """How many retrieval steps come before global `step` when every `every`-th step is text (0: none is)."""
    return step - (step + 1) // every if every else step


def rank_micro_batches(batch: Batch, micro: int, world: int, rank: int) -> list[Batch]:
    """This process's micro-batches: the global batch viewed as [accumulation, world, micro] rows."""
    rows = batch.input_ids.shape[0]
    accumulation = rows // (micro * world)
    pick = torch.arange(rows).view(accumulation, world, micro)[:, rank]
    return [Batch(batch.input_ids[i], batch.labels[i], batch.source) for i in pick]
