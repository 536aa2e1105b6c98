"""Checkpoints that a crash can never leave half written.

Layout of `<output_dir>`:
    checkpoint-000100/        an ordinary `save_pretrained` folder (config.json, model.safetensors, tokenizer)
        trainer_state.json    step, data position, tokens seen, training seconds (human readable)
        recipe.yaml           the resolved recipe this run used
        accelerate/           optimiser, scheduler, RNG states, progress: `accelerator.save_state`
    latest -> checkpoint-000100   symlink to the newest complete checkpoint
    log.jsonl                 one line per logged step

A checkpoint is written to `checkpoint-NNNNNN.tmp/` and renamed only once every file is there; `latest` is
swapped by renaming a new symlink over it. Both renames are atomic on POSIX filesystems, so a reader (or a
resume after SIGKILL) sees the previous checkpoint or the new one, never a mix.
"""
from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from typing import Callable

CHECKPOINT_RE = re.compile(r"^checkpoint-(\d+)$")
STATE_FILE = "trainer_state.json"
ACCELERATE_DIR = "accelerate"


class CheckpointError(RuntimeError):
    """Saving a checkpoint failed; the previous checkpoint (named in the message) is untouched."""


def checkpoint_name(step: int) -> str:
    return f"checkpoint-{step:06d}"


def list_checkpoints(output_dir: str | Path) -> list[Path]:
    """Complete checkpoints (renamed from .tmp, holding a trainer state), oldest first."""
    output_dir = Path(output_dir)
    if not output_dir.is_dir():
        return []
    found = []
    for path in output_dir.iterdir():
        match = CHECKPOINT_RE.match(path.name)
        if match and path.is_dir() and (path / STATE_FILE).is_file():
            found.append((int(match.group(1)), path))
    return [path for _, path in sorted(found)]


def latest_checkpoint(output_dir: str | Path) -> Path | None:
    found = list_checkpoints(output_dir)
    return found[-1] if found else None


def read_trainer_state(checkpoint: str | Path) -> dict:
    path = Path(checkpoint) / STATE_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{str(checkpoint)!r} has no {STATE_FILE}: it is not a trainer checkpoint")
    return json.loads(path.read_text())


def save_atomically(
    output_dir: str | Path,
    step: int,
    write: Callable[[Path], None],
    is_main: bool,
    barrier: Callable[[], None],
    keep: int = 0,
) -> Path:
    """Call `write(tmp_folder)` on every process (collective saves need all of them), then publish it.

    On failure the temporary folder is removed and `CheckpointError` names the step, the cause, and the
    checkpoint that is still intact."""
    output_dir = Path(output_dir)
    final = output_dir / checkpoint_name(step)
    tmp = output_dir / (checkpoint_name(step) + ".tmp")
    previous = latest_checkpoint(output_dir)
    if is_main:
        output_dir.mkdir(parents=True, exist_ok=True)
        if tmp.exists():  # left by a crash during an earlier save
            shutil.rmtree(tmp)
        tmp.mkdir()
    barrier()
    try:
        write(tmp)
        barrier()
        if is_main:
            if final.exists():  # re-saving the same step (e.g. after a resume): replace it whole
                old = output_dir / (checkpoint_name(step) + ".old")
                shutil.rmtree(old, ignore_errors=True)
                os.rename(final, old)
                os.rename(tmp, final)
                shutil.rmtree(old)
            else:
                os.rename(tmp, final)
            _point_latest(output_dir, final.name)
            _prune(output_dir, keep)
    except Exception as err:
        if is_main:
            shutil.rmtree(tmp, ignore_errors=True)
        kept = f"the previous checkpoint {str(previous)!r} is intact" if previous else "no earlier checkpoint exists"
        raise CheckpointError(f"saving checkpoint for step {step} into {str(final)!r} failed ({err!r}); {kept}") from err
    barrier()
    return final


def _point_latest(output_dir: Path, name: str) -> None:
    link = output_dir / "latest"
    tmp = output_dir / "latest.tmp"
    if tmp.is_symlink() or tmp.exists():
        tmp.unlink()
    os.symlink(name, tmp)
    os.replace(tmp, link)


def _prune(output_dir: Path, keep: int) -> None:
    if keep <= 0:
        return
    for path in list_checkpoints(output_dir)[:-keep]:
        shutil.rmtree(path)
