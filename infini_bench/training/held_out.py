"""Has a finetuning learnt its retrieval tasks, or the examples it was shown? Measured once, at the end of the run:
per pool, the answer loss on examples the run trained on against the pool's held-out examples (the same builder,
training seeds no step used).

A pool is drawn epoch after epoch, and a model given enough steps learns its examples by heart: the training loss
keeps falling while new documents are answered no better. Measured (benchmarks/RESULTS_train.md §8): the CPU
quickstart's model finetuned for 30 minutes on NIAH multikey_2 alone, 8.8 passes over the 1,000 examples at 256
tokens, got every answer token of 98 % of those examples right (teacher-forced) and of 25 % of new ones; lm-eval
scored it 3 %. Its training loss alone said nothing of this.
"""
from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from .batches import Batch, RetrievalPools, pool_key

logger = logging.getLogger(__name__)
REPORT_FILE = "held_out.json"
#: A pool whose held-out answer loss exceeds RATIO x its trained-on loss + MARGIN (nats per answer token), after more
#: than one pass, is reported as learnt by heart. The 30-minute model above: 0.013 against 0.924 at 256 tokens
#: (flagged), 0.001 against 0.030 at 192 (26.8 passes; not flagged: it answers new 192-token examples too); the
#: quickstart's model (at most 3.3 passes): 0.067 / 0.079 and 0.400 / 0.323 for multikey_2 at 192 / 256.
RATIO, MARGIN = 3.0, 0.1


@dataclass
class PoolFit:
    family: str
    length: int
    passes: float  # rows the run drew from the pool / rows in the pool
    seen_loss: float  # mean answer loss per token on the first rows the run drew
    held_out_loss: float  # the same on the pool's held-out examples

    @property
    def memorised(self) -> bool:
        return self.passes > 1 and self.held_out_loss > RATIO * self.seen_loss + MARGIN


@torch.no_grad()
def pool_fits(model: torch.nn.Module, pools: RetrievalPools, cursors: dict[str, int], rows_per_call: int,
              device: torch.device) -> list[PoolFit]:
    """A `PoolFit` for every pool the run drew from that has held-out examples (as many trained-on rows as held-out
    ones). Every process computes the same figures (the model may be sharded)."""
    was_training = model.training
    model.eval()
    fits = []
    try:
        for key, held in pools.held_out.items():
            pool = pools.pools[key]
            drawn = cursors.get(pool_key(*key), 0)
            if drawn == 0:
                continue
            rows = torch.tensor(pools.drawn_rows(key, min(drawn, len(held.input_ids))))
            seen = Batch(pool.input_ids[rows], pool.labels[rows])
            fits.append(PoolFit(*key, passes=drawn / len(pool.input_ids),
                                seen_loss=answer_loss(model, seen, rows_per_call, device),
                                held_out_loss=answer_loss(model, held, rows_per_call, device)))
    finally:
        model.train(was_training)
    return fits


def answer_loss(model: torch.nn.Module, batch: Batch, rows_per_call: int, device: torch.device) -> float:
    """Mean cross-entropy per labelled token over all rows: the model's own loss (its mean over one call's labelled
    tokens), weighted by each call's count of them."""
    total, count = 0.0, 0
    for start in range(0, len(batch.input_ids), rows_per_call):
        labels = batch.labels[start : start + rows_per_call].to(device)
        tokens = int((labels[:, 1:] != -100).sum())  # the model shifts its labels by one
        if tokens:
            ids = batch.input_ids[start : start + rows_per_call].to(device)
            total += model(ids, labels=labels).loss.item() * tokens
            count += tokens
    return total / max(count, 1)


def write_report(fits: list[PoolFit], out: Path, step: int) -> None:
    """Log the figures, warn about every pool learnt by heart (naming the recipe key that sizes it), and write
    them to `out`/held_out.json (atomically; a write error is a warning, since the run itself is complete)."""
    for fit in fits:
        logger.info("%s at %d tokens: %.1f passes over the pool; answer loss %.3f on examples it trained on, %.3f "
                    "on held-out ones", fit.family, fit.length, fit.passes, fit.seen_loss, fit.held_out_loss)
        if fit.memorised:
            key = "finetune.passkey.num_examples" if fit.family == "passkey" else "finetune.niah.num_examples"
            logger.warning(
                "%s at %d tokens: the model answers the examples it trained on far better than new ones (loss %.3f "
                "against %.3f after %.1f passes): it has learnt the pool, not the task; raise %s or train fewer "
                "steps", fit.family, fit.length, fit.seen_loss, fit.held_out_loss, fit.passes, key)
    record = {"step": step, "pools": [asdict(f) | {"memorised": f.memorised} for f in fits]}
    tmp = out / f".{REPORT_FILE}.tmp"
    try:
        tmp.write_text(json.dumps(record, indent=1))
        os.replace(tmp, out / REPORT_FILE)
    except OSError as err:  # the run and its checkpoints are complete; a missing summary must not fail it
        tmp.unlink(missing_ok=True)
        logger.warning("could not write %s (%s); the figures are in the log above", out / REPORT_FILE, err)
