"""What the loop trains on, one global batch per optimizer step, as a pure function of the data position.

Exact resume and the "same global batch on any number of processes" guarantee both follow from one rule: the
global batch of a step depends only on the seed and the saved data position (cursors), never on the process
count. Each process then takes its own rows of that batch (`rank_micro_batches`).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass
class Batch:
    input_ids: torch.Tensor  # [rows, length] token ids
    labels: torch.Tensor  # [rows, length]; -100 where no loss is taken (shifted inside the model)
    source: str = "text"  # "text" (corpus, loss on every token) or "passkey"; logged with the loss


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

    def global_batch(self, step: int, size: int, cursors: dict[str, int]) -> Batch:
        start = cursors.get("text", 0)
        index = [self.order(start + i) for i in range(size)]
        cursors["text"] = start + size
        ids = torch.from_numpy(self.rows[index].astype(np.int64))
        return Batch(ids, ids.clone())


class PasskeyPools:
    """Finetuning: one pool of examples per context length; each step uses one length, chosen by `schedule`.

    mix: lengths cycle step by step. ramp (curriculum): the run is cut into len(lengths) equal stages; stage k
    cycles through the first k+1 lengths, so short sequences come first and stay in the mix."""

    def __init__(self, pools: dict[int, Batch], schedule: str, max_steps: int, seed: int):
        self.pools = pools
        self.lengths = list(pools)
        self.schedule, self.max_steps = schedule, max_steps
        self.orders = {length: EpochOrder(len(pool.input_ids), seed + j) for j, (length, pool) in enumerate(pools.items())}
        self.shortest = min(pool.input_ids.shape[1] for pool in pools.values())

    def length_at(self, step: int) -> int:
        if self.schedule == "mix":
            return self.lengths[step % len(self.lengths)]
        unlocked = min(len(self.lengths), 1 + step * len(self.lengths) // self.max_steps)
        return self.lengths[step % unlocked]

    def global_batch(self, step: int, size: int, cursors: dict[str, int]) -> Batch:
        length = self.length_at(step)
        key = str(length)
        start = cursors.get(key, 0)
        index = torch.tensor([self.orders[length](start + i) for i in range(size)])
        cursors[key] = start + size
        pool = self.pools[length]
        return Batch(pool.input_ids[index], pool.labels[index], "passkey")


class WithText:
    """Finetuning that keeps language modelling alive: every `every`-th step is a corpus batch, the others passkey.

    The two sources keep separate cursors, so resume stays exact."""

    def __init__(self, passkey: PasskeyPools, text: PackedText, every: int):
        self.passkey, self.text, self.every = passkey, text, every
        self.shortest = min(passkey.shortest, text.shortest)

    def _is_text(self, step: int) -> bool:
        return step % self.every == self.every - 1

    def global_batch(self, step: int, size: int, cursors: dict[str, int]) -> Batch:
        return (self.text if self._is_text(step) else self.passkey).global_batch(step, size, cursors)


def rank_micro_batches(batch: Batch, micro: int, world: int, rank: int) -> list[Batch]:
    """This process's micro-batches: the global batch viewed as [accumulation, world, micro] rows."""
    rows = batch.input_ids.shape[0]
    accumulation = rows // (micro * world)
    pick = torch.arange(rows).view(accumulation, world, micro)[:, rank]
    return [Batch(batch.input_ids[i], batch.labels[i], batch.source) for i in pick]
