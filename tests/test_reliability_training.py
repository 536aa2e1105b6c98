"""Training faults end in one sentence and lose nothing (issue 14, cases 7 and 8): a full disk while packing the
data, a second training of another model size into the same output_dir, a damaged `--from` checkpoint, two
trainings into one output_dir (a lock naming the first's PID; a dead one's lock is taken over), and a damaged
optimizer state in `latest` (resume falls back to the newest intact checkpoint)."""
from __future__ import annotations

import errno
import json
import logging
import os
import shutil
import subprocess
import sys

import pytest

from infini_bench.data import cache
from infini_bench.training.checkpoint import LOCK_FILE, list_checkpoints
from infini_bench.training.commands import main as training_main
from test_train_runs import corpus, overrides  # noqa: F401  (the module-scoped corpus fixture)

SHORT = {"run.max_steps": 2, "run.save_every": 2}


def snapshot(folder) -> dict[str, tuple[int, int]]:
    """Every file under `folder`: size and modification time (what "nothing lost or rewritten" compares)."""
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*") if p.is_file()}


class FillsUp:
    """A file whose disk fills after `allowed` writes."""

    def __init__(self, handle, allowed):
        self.handle, self.writes, self.allowed = handle, 0, allowed

    def write(self, data):
        self.writes += 1
        if self.writes > self.allowed:
            raise OSError(errno.ENOSPC, "No space left on device")
        return self.handle.write(data)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.handle.close()


def disk_fills_up(monkeypatch, allowed: int) -> None:
    """Every file the cache module writes (all training data goes through it) fails after `allowed` writes."""
    real_open = open
    monkeypatch.setattr(cache, "open", lambda *a, **k: FillsUp(real_open(*a, **k), allowed), raising=False)


def files_under(folder) -> list:
    return [p for p in folder.rglob("*") if p.is_file()] if folder.exists() else []


def test_case7_full_disk_while_packing_the_training_data(tmp_path, corpus, monkeypatch, capsys):
    out = tmp_path / "out"
    texts_before = snapshot(corpus["texts"])
    disk_fills_up(monkeypatch, allowed=1)  # the disk fills after the first chunk of tokens
    assert training_main(["train", *overrides(corpus, out, **SHORT)]) == 1
    err = capsys.readouterr().err
    assert (
        f"infini-bench train: error: cannot write the packed training data in '{out / 'data'}' (No space left on "
        "device): free space on that disk, or choose a run.output_dir on a disk with room" in err
    )
    assert "Traceback" not in err
    assert not files_under(out / "data")  # nothing half-written for a later run to trust
    assert not (out / LOCK_FILE).exists() and not list_checkpoints(out)
    assert snapshot(corpus["texts"]) == texts_before


def test_case7_full_disk_while_writing_the_retrieval_examples(tmp_path, corpus, monkeypatch, capsys):
    """The finetuning examples are a cache entry like the packed corpus: the same one-sentence error, no leftovers."""
    pre, ft = tmp_path / "pre", tmp_path / "ft"
    assert training_main(["train", *overrides(corpus, pre, **SHORT)]) == 0
    disk_fills_up(monkeypatch, allowed=0)
    capsys.readouterr()
    args = ["finetune", "--from", str(pre / "latest"), f"finetune.run.output_dir={ft}", "finetune.passkey.lengths=[160]",
            "finetune.passkey.num_examples=4", "finetune.optim.batch_size=2", "finetune.run.max_steps=2"]
    assert training_main(args) == 1
    err = capsys.readouterr().err
    assert (
        f"infini-bench finetune: error: cannot write the retrieval training examples in '{ft / 'data'}' (No space left "
        "on device): free space on that disk, or choose a finetune.run.output_dir on a disk with room" in err
    )
    assert "Traceback" not in err and not files_under(ft / "data") and not list_checkpoints(ft)
    monkeypatch.undo()  # room again: the same command builds, caches and trains
    assert training_main(args) == 0
    assert [p.suffix for p in files_under(ft / "data" / "passkey")] == [".npz", ".npz"]  # the pool, its held-out rows


def test_case7_second_training_of_another_size_into_the_same_output_dir(tmp_path, corpus, capsys):
    out = tmp_path / "out"
    assert training_main(["train", *overrides(corpus, out, **SHORT)]) == 0
    before = snapshot(out)
    capsys.readouterr()
    bigger = overrides(corpus, out, **SHORT, **{"model.hidden_size": 64, "model.intermediate_size": 128})
    assert training_main(["train", *bigger]) == 1
    err = capsys.readouterr().err
    assert (
        f"run.output_dir '{out}' holds checkpoints of another model (hidden_size=48 there, 64 here; "
        "intermediate_size=96 there, 128 here; head_dim=12 there, 16 here): a training resumes only its own "
        f"checkpoints; choose another run.output_dir, or move '{out}' away to start over" in err
    )
    assert "Traceback" not in err
    after = snapshot(out)
    assert {k: v for k, v in after.items() if not k.startswith("data/")} == {
        k: v for k, v in before.items() if not k.startswith("data/")
    }  # the first run's checkpoints and log are untouched (only its data cache may hold one more packing)


def test_case7_damaged_checkpoint_for_finetuning(tmp_path, corpus, capsys):
    out = tmp_path / "pre"
    assert training_main(["train", *overrides(corpus, out, **SHORT)]) == 0
    weights = out / "latest" / "model.safetensors"
    os.truncate(weights, weights.stat().st_size // 2)
    size = weights.stat().st_size
    capsys.readouterr()
    args = ["finetune", "--from", str(out / "latest"), f"finetune.run.output_dir={tmp_path / 'ft'}"]
    assert training_main(args) == 1
    err = capsys.readouterr().err
    assert f"'{out / 'latest' / 'model.safetensors'}' is damaged (the file is {size} bytes, its header describes" in err
    assert "cut short), e.g. by a full disk or an interrupted copy or save: copy or save the checkpoint again" in err
    assert weights.stat().st_size == size and not (tmp_path / "ft").exists()


def test_case8_one_training_per_output_dir(tmp_path, corpus, capsys, caplog):
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    first = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        lock = {"pid": first.pid, "host": os.uname().nodename, "since": "2026-11-30 10:00:00"}
        (out / LOCK_FILE).write_text(json.dumps(lock))
        assert training_main(["train", *overrides(corpus, out, **SHORT)]) == 1
        err = capsys.readouterr().err
        assert (
            f"run.output_dir '{out}' is in use by another training (PID {first.pid}, since 2026-11-30 10:00:00): "
            "wait for it to end or stop it, or choose another run.output_dir" in err
        )
        assert not list_checkpoints(out) and not (out / "log.jsonl").exists()
    finally:
        first.kill()
        first.wait()
    # The first training died without releasing its lock: the next one takes it over, with a warning.
    with caplog.at_level(logging.WARNING):
        assert training_main(["train", *overrides(corpus, out, **SHORT)]) == 0
    assert f"left by PID {first.pid}, which is no longer running" in caplog.text
    assert [p.name for p in list_checkpoints(out)] == ["checkpoint-000002"]
    assert not (out / LOCK_FILE).exists()  # released at the end
    assert (out / "notes.txt").read_text() == "mine"


def test_case8_resume_falls_back_to_the_newest_intact_checkpoint(tmp_path, corpus, caplog, capsys):
    out = tmp_path / "out"
    settings = {"run.max_steps": 4, "run.save_every": 2}
    assert training_main(["train", *overrides(corpus, out, **settings)]) == 0
    reference = [json.loads(line)["loss"] for line in (out / "log.jsonl").read_text().splitlines()]
    damaged = out / "checkpoint-000004"
    shutil.copytree(damaged, tmp_path / "kept")
    (damaged / "accelerate" / "optimizer.bin").write_bytes(b"\x00garbage" * 10)
    with caplog.at_level(logging.WARNING):
        assert training_main(["train", *overrides(corpus, out, **settings)]) == 0
    assert "resuming from checkpoint-000002, the newest intact checkpoint" in caplog.text
    assert f"{damaged} (" in caplog.text and "could not be loaded (damaged" in caplog.text
    assert "resumed from" in capsys.readouterr().out
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2, 3, 4]  # steps 3-4 trained again, logged once
    assert [r["loss"] for r in log] == pytest.approx(reference, rel=1e-5)  # exactly as the first time
    assert [p.name for p in list_checkpoints(out)] == ["checkpoint-000002", "checkpoint-000004"]
    assert (out / "latest").resolve().name == "checkpoint-000004"
    import torch

    torch.load(damaged / "accelerate" / "optimizer.bin", weights_only=False)  # saved again, whole
