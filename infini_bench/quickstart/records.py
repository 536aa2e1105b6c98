"""What the quickstart owns and what it has done, on disk: the marker files that make a folder its own (the only
folders it ever empties), and `quickstart_stages.json`, which records each finished stage with a fingerprint of its
inputs and outputs, so that a later run skips exactly the stages whose record still holds."""
from __future__ import annotations

import hashlib
import json
import os
import shlex
import shutil
import threading
from pathlib import Path
from typing import Any

from .plan import QuickstartError, Stage
from .profiles import CPU

MARKER = ".infini-bench-quickstart"  # in every folder the quickstart made (and so may empty)
# `--out` ignores itself in git (as a venv or pytest's cache does), so the README's first command, run inside a
# checkout with the default `--out ./quickstart`, leaves the checkout clean
GITIGNORE = "# written by infini-bench quickstart: everything here is generated (delete this file to commit it)\n*\n"

# --- what belongs to the quickstart -----------------------------------------------------------------------------
# The quickstart deletes only folders that carry its marker file: `--out` itself (marked when the quickstart creates
# it, or finds it empty) and each stage's folder (marked with the inputs that the folder's contents were made from).


def _read_marker(folder: Path) -> dict | None:
    try:
        return json.loads((folder / MARKER).read_text())
    except (FileNotFoundError, NotADirectoryError):
        return None
    except (OSError, json.JSONDecodeError):
        return {}


def _write_marker(folder: Path, **fields: Any) -> None:
    tmp = folder / (MARKER + ".tmp")
    tmp.write_text(json.dumps({"written_by": "infini-bench quickstart", **fields}, indent=1))
    os.replace(tmp, folder / MARKER)


def _some_entries(folder: Path, n: int = 3) -> str:
    names = sorted(p.name + ("/" if p.is_dir() else "") for p in folder.iterdir())
    return ", ".join(names[:n]) + (f" and {len(names) - n} more" if len(names) > n else "")


def check_out(out: Path) -> None:
    """`--out` must be new, empty, or an earlier quickstart's folder: anything else is refused untouched."""
    if out.exists() and not out.is_dir():
        raise QuickstartError(f"--out {str(out)!r} is a file: give a folder (new or from an earlier quickstart run)")
    if out.is_dir() and _read_marker(out) is None and any(out.iterdir()):
        older = (" (it looks like an older quickstart run, which did not mark its folders)"
                 if state_file(out).exists() else "")
        raise QuickstartError(
            f"--out {str(out)!r} already holds files the quickstart did not write ({_some_entries(out)}){older}: "
            f"give a new or empty folder, e.g. --out {str(out / 'quickstart')!r}; nothing was changed"
        )
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".write-test"
        probe.write_text("ok")
        probe.unlink()
        if _read_marker(out) is None:
            _write_marker(out, kind="quickstart output folder")
        if not (out / ".gitignore").exists():
            (out / ".gitignore").write_text(GITIGNORE)
    except OSError as err:
        raise QuickstartError(f"--out {str(out)!r} is not writable: {err.strerror or err}") from None


def claim(stage: Stage, inputs: dict) -> bool:
    """Make `stage.folder` the stage's, for these inputs. Returns True when an interrupted run of the same inputs
    is continued there. A folder the quickstart did not mark is never deleted: that is an error."""
    folder = stage.folder
    resumed = False
    if folder.is_symlink() or folder.exists():
        marker = _read_marker(folder) if folder.is_dir() and not folder.is_symlink() else None
        if marker is None or marker.get("stage") != stage.name:
            if folder.is_dir() and not folder.is_symlink() and not any(folder.iterdir()):
                pass  # an empty folder holds nothing to lose
            else:
                raise QuickstartError(
                    f"{str(folder)!r} holds files the quickstart did not write (no {MARKER} marker of stage "
                    f"{stage.name!r} in it): move it elsewhere, or choose another --out; nothing was deleted"
                )
        elif stage.resumable and marker.get("inputs") == inputs:
            resumed = True
        else:
            shutil.rmtree(folder)
    folder.mkdir(parents=True, exist_ok=True)
    _write_marker(folder, stage=stage.name, inputs=inputs)
    return resumed


# --- what a finished stage was made from --------------------------------------------------------------------------


def _digest(data: bytes | str) -> str:
    return hashlib.sha256(data.encode() if isinstance(data, str) else data).hexdigest()[:16]


def stage_inputs(stage: Stage, done: dict) -> dict:
    """The stage's inputs as named parts: its command (every option; the interpreter's path left out), the contents
    of its input files, and the recorded output of each upstream stage."""
    command = shlex.join(stage.command[1:]) if stage.command else f"{stage.title} {stage.params}"
    parts = {"command": _digest(command), "profile": stage.profile}
    for path in stage.files:
        parts[f"file {path.name}"] = _digest(path.read_bytes())
    for name in stage.depends:
        parts[f"upstream {name}"] = (done.get(name) or {}).get("output")
    return parts


def _files(path: Path) -> list[Path]:
    """The files an output path stands for (a folder's, markers left out; a link followed); [] when absent."""
    path = path.resolve() if path.is_symlink() else path
    if path.is_file():
        return [path]
    if path.is_dir():
        return sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith(MARKER))
    return []


def missing(stage: Stage) -> str | None:
    """The first of the stage's outputs that is absent (or an empty folder), else None."""
    return next((str(p) for p in stage.outputs if not _files(p)), None)


def _output_identity(stage: Stage) -> str | None:
    """A fingerprint of the stage's outputs (every file's path, size and modification time); None when one is
    missing or empty. `latest` links are followed, so a checkpoint that changes changes it."""
    h = hashlib.sha256()
    for path in stage.outputs:
        files = _files(path)
        if not files:
            return None
        for file in files:
            stat = file.stat()
            h.update(f"{file}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return h.hexdigest()[:16]


def stale_reason(stage: Stage, record: dict, inputs: dict) -> str | None:
    """Why a stage recorded as done must run again, or None when its record still holds."""
    recorded = record.get("inputs")
    if not isinstance(recorded, dict):
        return "its record has no inputs to compare"
    recorded = {"profile": CPU.name, **recorded}  # records from before profiles were all made on the CPU
    if recorded["profile"] != inputs["profile"]:
        return f"it was made under the {recorded['profile']} profile and this run uses the {inputs['profile']} one"
    if recorded.get("command") != inputs["command"]:
        return "its options differ from the recorded run's"
    for key in inputs:
        if key.startswith("file ") and recorded.get(key) != inputs[key]:
            return f"the contents of {key[5:]} changed"
    for key in inputs:
        if key.startswith("upstream ") and recorded.get(key) != inputs[key]:
            return f"{key[9:]}, whose output it uses, was made again"
    if recorded != inputs:
        return "its inputs differ from the recorded run's"
    absent = missing(stage)
    if absent:
        return f"its output {absent} is missing"
    if _output_identity(stage) != record.get("output"):
        return "its output changed since it was recorded"
    return None


# --- the finished stages: quickstart_stages.json -----------------------------------------------------------------


def state_file(out: Path) -> Path:
    return out / "quickstart_stages.json"


class Records:
    """`out`'s record of finished stages, read and written under one lock: the two lanes record stages at once."""

    def __init__(self, out: Path) -> None:
        self.out = out
        self._lock = threading.Lock()

    def _finished(self) -> dict:
        try:
            return json.loads(state_file(self.out).read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return {}

    def _write(self, done: dict) -> None:
        tmp = state_file(self.out).with_suffix(".tmp")
        tmp.write_text(json.dumps(done, indent=2))
        os.replace(tmp, state_file(self.out))

    def lookup(self, stage: Stage) -> tuple[dict | None, dict]:
        """The stage's record (None: not done) and its inputs now."""
        with self._lock:
            done = self._finished()
            return done.get(stage.name), stage_inputs(stage, done)

    def mark(self, stage: Stage, inputs: dict, seconds: float) -> None:
        """Record the stage as done, made from `inputs`, with a fingerprint of its outputs."""
        with self._lock:
            done = self._finished()
            done[stage.name] = {"command": shlex.join(stage.command) if stage.command else stage.title,
                                "seconds": round(seconds, 1), "inputs": inputs, "output": _output_identity(stage)}
            self._write(done)

    def unmark(self, stage: Stage) -> None:
        """Until it has run again, the stage is not done."""
        with self._lock:
            done = self._finished()
            if done.pop(stage.name, None) is not None:
                self._write(done)
