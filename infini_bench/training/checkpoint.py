"""Checkpoints that a crash can never leave half written.

Layout of `<output_dir>`:
    checkpoint-000100/        an ordinary `save_pretrained` folder (config.json, model.safetensors, tokenizer)
        trainer_state.json    step, data position, tokens seen, training seconds (human readable)
        recipe.yaml           the resolved recipe this run used
        accelerate/           optimiser, scheduler, RNG states, progress: `accelerator.save_state`
    latest -> checkpoint-000100   symlink to the newest complete checkpoint
    log.jsonl                 one line per logged step
    training.lock             while a training runs: its PID (a second training into the folder is refused)

A checkpoint is written to `checkpoint-NNNNNN.tmp/` and renamed only once every file is there; `latest` is
swapped by renaming a new symlink over it. Both renames are atomic on POSIX filesystems, so a reader (or a
resume after SIGKILL) sees the previous checkpoint or the new one, never a mix.
"""
from __future__ import annotations

import json
import logging
import os
import re
import shutil
import socket
import time
from pathlib import Path
from typing import Callable

CHECKPOINT_RE = re.compile(r"^checkpoint-(\d+)$")
STATE_FILE = "trainer_state.json"
ACCELERATE_DIR = "accelerate"
LOCK_FILE = "training.lock"

logger = logging.getLogger(__name__)


class CheckpointError(RuntimeError):
    """Saving a checkpoint failed; the previous checkpoint (named in the message) is untouched."""


class OutputDirInUse(RuntimeError):
    """Another training holds the output folder's lock; the message names its PID."""


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


# --- one training per output folder --------------------------------------------------------------------------


def _process_start(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (Linux), to tell a live PID from a reused one."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _alive(holder: dict) -> bool:
    if holder.get("host") != socket.gethostname():
        return True  # another machine's process (shared disk): it cannot be checked from here
    pid = holder.get("pid")
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, owned by someone else
    started = holder.get("process_start")
    return started is None or _process_start(pid) in (None, started)


def acquire_lock(output_dir: str | Path, key: str = "run.output_dir") -> Path:
    """Take `<output_dir>/training.lock` for this process. A lock held by a running process is refused (naming its
    PID); one left by a process that is gone is taken over with a warning."""
    path = Path(output_dir) / LOCK_FILE
    me = {"pid": os.getpid(), "host": socket.gethostname(), "process_start": _process_start(os.getpid()),
          "since": time.strftime("%Y-%m-%d %H:%M:%S")}
    for _ in range(3):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            try:
                holder = json.loads(path.read_text())
            except FileNotFoundError:
                continue  # released meanwhile
            except (OSError, ValueError):
                holder = {}
            if holder.get("pid") == os.getpid() and holder.get("host") == me["host"]:
                raise OutputDirInUse(f"{key} {str(output_dir)!r} is already being trained by this process")
            if holder and _alive(holder):
                where = "" if holder.get("host") == me["host"] else f" on {holder.get('host')}"
                raise OutputDirInUse(
                    f"{key} {str(output_dir)!r} is in use by another training (PID {holder.get('pid')}{where}, since "
                    f"{holder.get('since', '?')}): wait for it to end or stop it, or choose another {key} (if no such "
                    f"training runs, delete {path})"
                )
            logger.warning(
                "taking over the lock of %s left by PID %s, which is no longer running", output_dir, holder.get("pid", "?")
            )
            path.unlink(missing_ok=True)
            continue
        with os.fdopen(fd, "w") as handle:
            json.dump(me, handle)
        return path
    raise OutputDirInUse(f"{key} {str(output_dir)!r}: could not take {path} (another training keeps taking it)")


def release_lock(lock: Path) -> None:
    """Remove the lock if it is still this process's."""
    try:
        if json.loads(lock.read_text()).get("pid") == os.getpid():
            lock.unlink()
    except (OSError, ValueError):
        pass
