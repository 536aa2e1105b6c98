"""Runs a plan's stages: two lanes (the foreground, and a background thread for the stages that run alongside,
their output in logs/), each stage after what it needs, skipped while its record holds (records.py); the first
failure or Ctrl-C on either side stops the other and its running command. Knows nothing of which stages exist."""
from __future__ import annotations

import os
import shlex
import subprocess
import threading
import time
from pathlib import Path

from .plan import QuickstartError, Stage
from .records import Records, claim, missing, stale_reason


class Progress:
    """The stages finished so far, shared by the foreground and the background lane: each stage first waits for
    what it needs (`_needs`). A failure or an interruption on either side stops the other at its next wait."""

    def __init__(self) -> None:
        self.finished: set[str] = set()
        self.error: BaseException | None = None
        self.stopped = False
        self._changed = threading.Condition()

    def finish(self, name: str) -> None:
        with self._changed:
            self.finished.add(name)
            self._changed.notify_all()

    def stop(self, error: BaseException | None = None) -> None:
        with self._changed:
            self.stopped = True
            self.error = self.error or error
            self._changed.notify_all()

    def wait_for(self, names: set[str]) -> None:
        with self._changed:
            self._changed.wait_for(lambda: names <= self.finished or self.stopped)
        if self.error is not None:
            raise self.error
        if not names <= self.finished:
            raise KeyboardInterrupt  # the other side was interrupted


def _needs(stage: Stage, trainings: set[str]) -> set[str]:
    """What `stage` waits for: its upstream stages, and for an evaluation every training too (their budgets are
    in minutes, and an evaluation beside a training would slow it)."""
    return {*stage.depends, *(trainings if stage.name.startswith("eval_") else ())}


class Runner:
    """One run of the stages over the output folder `out` (already checked by `records.check_out`)."""

    def __init__(self, out: Path) -> None:
        self.out = out
        self.records = Records(out)
        self._stop = threading.Event()  # set when the run stops: a command that ends then was interrupted
        self._children: list[subprocess.Popen] = []  # the background lane's command, stopped when the run stops

    def run(self, stages: list[Stage]) -> None:
        """Every stage in order, the background ones in their own lane; returns when all are done."""
        numbered = list(enumerate(stages, 1))
        background = [(i, s) for i, s in numbered if s.background]
        progress = Progress()
        trainings = {s.name for s in stages if s.resumable and not s.beside_eval}
        lane = threading.Thread(target=self._run_lane, args=(background, len(stages), progress, trainings),
                                daemon=True)
        lane.start()
        try:
            for i, stage in numbered:
                if stage.background:
                    continue
                progress.wait_for(_needs(stage, trainings))
                self._run_stage(stage, i, len(stages), log=None)
                progress.finish(stage.name)
            progress.wait_for({s.name for _, s in background})
        except BaseException:
            self._stop.set()
            progress.stop()
            for child in list(self._children):
                child.terminate()
            lane.join()
            raise

    def _run_lane(self, stages: list[tuple[int, Stage]], total: int, progress: Progress,
                  trainings: set[str]) -> None:
        """The background lane: its stages in order, each logged to a file; the first failure stops the lane."""
        (self.out / "logs").mkdir(exist_ok=True)
        try:
            for i, stage in stages:
                progress.wait_for(_needs(stage, trainings))
                self._run_stage(stage, i, total, log=self.out / "logs" / f"{stage.name}.log")
                progress.finish(stage.name)
        except KeyboardInterrupt:
            progress.stop()
        except BaseException as err:  # raised in the foreground at its next wait
            progress.stop(err)

    def _run_stage(self, stage: Stage, i: int, total: int, log: Path | None) -> None:
        head = f"[{i}/{total}] {stage.title}"
        record, inputs = self.records.lookup(stage)
        why = None
        if record is not None:
            why = stale_reason(stage, record, inputs)
            if why is None:
                print(f"{head}: already done, skipped", flush=True)
                return
            self.records.unmark(stage)  # until it has run again, it is not done
        resumed = claim(stage, inputs)
        note = f"\n  recorded as done, but {why}: running it again" if why else ""
        note += f"\n  continuing the interrupted run in {stage.folder}" if resumed else ""
        where = f"\n  (running alongside; output in {log})" if log else ""
        print(f"\n{head}{note}\n  $ {shlex.join(stage.command) if stage.command else '(in process)'}{where}",
              flush=True)
        t0 = time.monotonic()
        code = self.execute(stage, log)
        if code != 0:
            if code < 0 or code == 130 or self._stop.is_set():
                raise KeyboardInterrupt
            raise QuickstartError(
                f"stage {stage.name!r} failed (exit code {code}); fix the cause and run again to resume")
        absent = missing(stage)
        if absent:
            raise QuickstartError(f"stage {stage.name!r} ended without writing {absent}; see its output above")
        self.records.mark(stage, inputs, time.monotonic() - t0)
        print(f"{head}: done in {time.monotonic() - t0:.0f} s", flush=True)

    def execute(self, stage: Stage, log: Path | None) -> int:
        """Run the stage's command (its exit code) or in-process action (0); with a `log`, as a child the
        foreground can stop."""
        if not stage.command:
            stage.action()
            return 0
        env = {**os.environ, "TOKENIZERS_PARALLELISM": "false"}
        if stage.threads is not None:
            env.update(OMP_NUM_THREADS=str(stage.threads), MKL_NUM_THREADS=str(stage.threads))
        if log is None:
            return subprocess.call(stage.command, env=env)
        with open(log, "w") as handle:
            child = subprocess.Popen(stage.command, env=env, stdout=handle, stderr=subprocess.STDOUT)
            self._children.append(child)
            try:
                return child.wait()
            finally:
                self._children.remove(child)
