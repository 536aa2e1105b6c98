"""A diverging training stops (issue 25): `optim.lr=1000` makes the loss non-finite part-way through a real tiny
run; the command ends in one sentence naming the step, the batch's family and the last good checkpoint, `latest`
stays on it, no checkpoint holds a NaN, and `log.jsonl` is strict JSON. `optim.skip_non_finite=N` drops up to N
such steps in a row, counted in the log, and still stops at the next."""
from __future__ import annotations

import json
import math
import re

import torch
from safetensors.torch import load_file

from infini_bench.training.checkpoint import list_checkpoints
from infini_bench.training.commands import main as training_main
from test_train_runs import corpus, overrides  # noqa: F401  (the module-scoped corpus fixture)

DIVERGES = {"optim.lr": 1000, "optim.min_lr": 0, "optim.warmup_steps": 0, "run.max_steps": 12, "run.save_every": 2}


def strict_records(path) -> list[dict]:
    """Every line of a log.jsonl, parsed as strict JSON (a bare NaN or Infinity is refused, as jq refuses it)."""

    def refuse(token: str):
        raise ValueError(f"{path}: non-standard JSON constant {token}")

    return [json.loads(line, parse_constant=refuse) for line in path.read_text().splitlines()]


def all_finite(checkpoint) -> bool:
    return all(torch.isfinite(t).all() for t in load_file(checkpoint / "model.safetensors").values())


def test_a_non_finite_loss_stops_the_run_and_keeps_latest(tmp_path, corpus, capsys):
    out = tmp_path / "run"
    assert training_main(["train", *overrides(corpus, out, **DIVERGES)]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    [line] = [l for l in err.splitlines() if "error:" in l]
    match = re.search(r"training stopped at step (\d+) \(text batch\): the (loss|gradient norm) is", line)
    assert match, line
    step = int(match.group(1))
    saved = list_checkpoints(out)
    assert saved, "the run diverged before its first checkpoint: raise the test's run.max_steps"
    assert all(int(c.name.split("-")[1]) < step for c in saved)  # nothing at or after the bad step
    assert (out / "latest").resolve() == saved[-1].resolve()
    assert f"the last good checkpoint is '{saved[-1]}' (`latest` still points at it)" in line
    assert "optim.skip_non_finite=N" in line
    assert all(all_finite(c) for c in saved)
    records = strict_records(out / "log.jsonl")
    assert [r["step"] for r in records] == list(range(1, step))  # the bad step is never logged as a result
    assert all(math.isfinite(r["loss"]) and r["skipped"] == 0 for r in records)


def test_skip_non_finite_drops_steps_counts_them_and_stops_at_the_limit(tmp_path, corpus, capsys):
    out = tmp_path / "run"
    args = overrides(corpus, out, **DIVERGES, **{"optim.skip_non_finite": 2})
    assert training_main(["train", *args]) == 1
    err = capsys.readouterr().err
    [line] = [l for l in err.splitlines() if "error:" in l]
    assert "3 non-finite steps in a row (optim.skip_non_finite=2 skips at most 2)" in line
    records = strict_records(out / "log.jsonl")
    skipped = [r for r in records if r["skipped"]]
    assert [r["skipped"] for r in skipped] == [1, 2]  # the count grows with each dropped step
    assert all(r["loss"] is None or r["grad_norm"] is None for r in skipped)  # what was not finite is null, not NaN
    first_bad = skipped[0]["step"]
    assert int(re.search(r"step (\d+)", line).group(1)) == first_bad + 2
    assert all(all_finite(c) for c in list_checkpoints(out))
    assert (out / "latest").resolve() == list_checkpoints(out)[-1].resolve()
