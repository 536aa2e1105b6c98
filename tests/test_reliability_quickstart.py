"""The quickstart keeps what it did not write, reruns exactly the stages whose inputs changed, and refuses a budget
too small to train (issue 14, cases 1, 2 and 9). The stages' commands are replaced by a fake that writes what each
stage must leave behind, so the bookkeeping is tested in seconds; test_quickstart.py runs the real commands."""
from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

from infini_bench import quickstart
from infini_bench.quickstart.runner import Runner
from test_quickstart import TINY_RECIPE, tiny_recipe


@pytest.fixture
def fake_stages(monkeypatch):
    """Replace every stage's work by writing its outputs; returns the names of the stages that ran, in order."""
    ran: list[str] = []

    def execute(stage, log):
        ran.append(stage.name)
        folder = stage.folder
        stamp = str(time.time_ns())
        if stage.resumable:  # a training run: a checkpoint and `latest`
            checkpoint = folder / "checkpoint-000001"
            checkpoint.mkdir(exist_ok=True)
            (checkpoint / "model.safetensors").write_text(stamp)
            if not (folder / "latest").is_symlink():
                (folder / "latest").symlink_to(checkpoint.name)
            for path in stage.outputs[1:]:  # what a training writes beside `latest` (the YaRN run's Llama)
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(stamp)
        elif stage.name.startswith("eval_"):
            (folder / "model").mkdir(exist_ok=True)
            (folder / "model" / "results_1.json").write_text(stamp)
        else:
            for path in stage.outputs:
                path.write_text(stamp)
        return 0

    monkeypatch.setattr(Runner, "execute", staticmethod(execute))
    return ran


@pytest.fixture
def recipe(tmp_path) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(TINY_RECIPE)
    return path


def qs(out: Path, recipe: Path, *extra: str) -> int:
    return quickstart.main(["--out", str(out), "--minutes", "1", "--recipe", str(recipe), *extra])


ALL = ["infini_pretrain", "infini_finetune", "eval_infini", "eval_memory_off", "eval_llama", "report"]
LANE = ["baseline_pretrain", "baseline_finetune", "baseline_export", "yarn_extend", "eval_yarn"]
TRAININGS = ["infini_pretrain", "infini_finetune", "baseline_pretrain", "baseline_finetune"]


def test_case1_never_deletes_or_writes_into_what_it_did_not_create(tmp_path, recipe, fake_stages, capsys):
    # `--out .` in a folder that holds a report made earlier with `infini-bench report` (default ./report)
    here = tmp_path / "here"
    (here / "report").mkdir(parents=True)
    (here / "report" / "report.html").write_text("my earlier report")
    (here / "notes.txt").write_text("mine")
    before = sorted(p.relative_to(here) for p in here.rglob("*"))
    assert qs(here, recipe, "--samples", "1", "--multiples", "1,2") == 1
    err = capsys.readouterr().err
    assert f"--out '{here}' already holds files the quickstart did not write (notes.txt, report/)" in err
    assert "give a new or empty folder" in err and "nothing was changed" in err
    assert sorted(p.relative_to(here) for p in here.rglob("*")) == before  # not even a marker was added
    assert (here / "report" / "report.html").read_text() == "my earlier report"
    assert fake_stages == []

    # An empty folder is fine (and from then on the quickstart's own).
    out = tmp_path / "empty"
    out.mkdir()
    assert qs(out, recipe, "--samples", "1", "--multiples", "1,2") == 0
    assert (out / quickstart.MARKER).is_file() and (out / "report" / quickstart.MARKER).is_file()

    # Inside its own folder, a stage folder someone else wrote is not emptied either: the report must run again
    # (its output is gone), finds a folder without its marker, and stops with the user's file intact.
    for path in (out / "report").iterdir():
        path.unlink()
    (out / "report" / "mine.html").write_text("hand-made")
    capsys.readouterr()
    assert qs(out, recipe, "--samples", "1", "--multiples", "1,2") == 1
    err = capsys.readouterr().err
    assert f"'{out / 'report'}' holds files the quickstart did not write" in err and "nothing was deleted" in err
    assert (out / "report" / "mine.html").read_text() == "hand-made"


def test_case2_stages_rerun_when_their_inputs_change(tmp_path, recipe, fake_stages, capsys):
    out = tmp_path / "out"
    assert qs(out, recipe, "--samples", "1", "--multiples", "1,2") == 0
    assert sorted(fake_stages) == sorted(ALL + LANE)

    fake_stages.clear()
    capsys.readouterr()
    assert qs(out, recipe, "--samples", "1", "--multiples", "1,2") == 0  # same options: nothing runs
    assert fake_stages == [] and capsys.readouterr().out.count("already done, skipped") == 11

    # Other evaluation options: the four evaluations, the Llama export (its position table covers the longest
    # length), the YaRN extension (its factor is the longest multiple) and the report run again; the rest does not.
    assert qs(out, recipe, "--samples", "2", "--multiples", "1,2,4") == 0
    assert sorted(fake_stages) == sorted(["baseline_export", "eval_infini", "eval_memory_off", "eval_llama", "report",
                                          "yarn_extend", "eval_yarn"])
    printed = capsys.readouterr().out
    assert printed.count("recorded as done, but its options differ from the recorded run's: running it again") == 6
    assert "recorded as done, but eval_infini, whose output it uses, was made again: running it again" in printed
    assert "passkey_1k" in (out / "commands.sh").read_text()

    # A deleted output: that stage runs again, and every path printed at the end exists.
    fake_stages.clear()
    (out / "report" / "report.html").unlink()
    assert qs(out, recipe, "--samples", "2", "--multiples", "1,2,4") == 0
    assert fake_stages == ["report"]
    printed = capsys.readouterr().out
    assert f"its output {out / 'report' / 'report.html'} is missing" in printed
    paths = [line.split()[1] for line in printed.splitlines() if line.split()[:1] in (["report:"], ["summary:"])]
    assert len(paths) == 2 and all(Path(p).is_file() for p in paths)

    # Other recipe contents: everything runs again, and each training starts over in an emptied folder.
    fake_stages.clear()
    (out / "infini" / "pretrain" / "stale.txt").write_text("from the old run")
    recipe.write_text(tiny_recipe(max_steps=4))
    assert qs(out, recipe, "--samples", "2", "--multiples", "1,2,4") == 0
    assert sorted(fake_stages) == sorted(ALL + LANE)
    assert "the contents of tiny.yaml changed" in capsys.readouterr().out
    assert not (out / "infini" / "pretrain" / "stale.txt").exists()

    # A changed upstream checkpoint (retrained by hand): what uses it runs again.
    fake_stages.clear()
    (out / "baseline" / "finetune" / "checkpoint-000001" / "model.safetensors").write_text("retrained by hand!")
    assert qs(out, recipe, "--samples", "2", "--multiples", "1,2,4") == 0
    assert sorted(fake_stages) == sorted(["baseline_finetune", "baseline_export", "eval_llama", "yarn_extend",
                                          "eval_yarn", "report"])
    assert "recorded as done, but its output changed since it was recorded" in capsys.readouterr().out


def test_case9_a_budget_too_small_is_refused_up_front(tmp_path, recipe, fake_stages, capsys):
    fresh = tmp_path / "fresh"
    assert quickstart.main(["--out", str(fresh), "--minutes", "0.001", "--recipe", str(recipe)]) == 1
    err = capsys.readouterr().err
    assert "--minutes=0.001 is too small" in err and "give --minutes 0.01 or more" in err
    assert not fresh.exists()


def test_the_default_output_leaves_a_git_checkout_clean(tmp_path, recipe, fake_stages, monkeypatch, capsys):
    """The README's first command runs inside the checkout: its default `--out ./quickstart` ignores itself in
    git, so `git status` shows nothing new afterwards (an earlier quickstart's folder gets the same file)."""
    import shutil
    import subprocess

    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    checkout = tmp_path / "checkout"
    checkout.mkdir()

    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(checkout), *args], capture_output=True, text=True, check=True).stdout

    git("init", "-q")
    (checkout / "README.md").write_text("a project\n")
    git("add", "README.md")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "start")
    monkeypatch.chdir(checkout)
    assert quickstart.main(["--minutes", "1", "--recipe", str(recipe), "--samples", "1", "--multiples", "1,2"]) == 0
    assert (checkout / "quickstart" / "report" / "report.html").is_file()
    assert git("status", "--porcelain", "--untracked-files=all") == ""
    (checkout / "quickstart" / ".gitignore").unlink()  # a folder from before this rule: marked, so it is ours
    assert quickstart.main(["--minutes", "1", "--recipe", str(recipe), "--samples", "1", "--multiples", "1,2"]) == 0
    assert git("status", "--porcelain", "--untracked-files=all") == ""


@pytest.mark.parametrize("slower", ["infini_finetune", "baseline_finetune"])
def test_each_stage_starts_after_what_it_needs(tmp_path, recipe, fake_stages, monkeypatch, slower):
    """The Llama's evaluation runs beside the Infini model's, but no evaluation starts before both trainings end
    (their budgets are in minutes), and the report waits for all three, whichever training is slower."""
    execute = Runner.execute
    spans: dict[str, tuple[float, float]] = {}

    def timed(stage, log):
        start = time.monotonic()
        time.sleep({slower: 0.6, "eval_infini": 0.4, "eval_llama": 0.4, "baseline_export": 0.0}.get(stage.name, 0.1))
        code = execute(stage, log)
        spans[stage.name] = (start, time.monotonic())
        return code

    monkeypatch.setattr(Runner, "execute", staticmethod(timed))
    assert qs(tmp_path / "out", recipe) == 0
    assert sorted(spans) == sorted(ALL + LANE)
    trained = max(spans[name][1] for name in TRAININGS)
    assert all(spans[f"eval_{m}"][0] >= trained for m in ("infini", "memory_off", "llama"))
    assert spans["eval_llama"][0] >= spans["baseline_export"][1]
    assert spans["report"][0] >= max(spans[f"eval_{m}"][1] for m in ("infini", "memory_off", "llama"))
    assert spans["yarn_extend"][0] >= spans["baseline_finetune"][1] and spans["eval_yarn"][0] >= spans["yarn_extend"][1]
    assert spans["yarn_extend"][0] < spans["eval_infini"][1]  # the extension runs beside the evaluations
    assert spans["report"][0] >= spans["eval_yarn"][1]


def test_cpu_evaluations_run_on_one_thread_each(tmp_path, recipe):
    stages = {s.name: s for s in quickstart.plan(tmp_path / "out", 1.0, recipe, profile=quickstart.CPU)}
    assert [stages[f"eval_{m}"].threads for m in ("infini", "memory_off", "llama", "yarn")] == [1, 1, 1, 1]
    assert stages["eval_yarn"].background and not stages["eval_infini"].background and not stages["eval_llama"].background
    assert all(stages[name].threads is None for name in TRAININGS)  # the recipe's cpu_threads decides
    assert quickstart.GPU.eval_threads is None
    probe = quickstart.Stage("probe", "print the thread setting",
                             [sys.executable, "-c", "import os; print(os.environ['OMP_NUM_THREADS'])"], threads=1)
    log = tmp_path / "probe.log"
    assert Runner(tmp_path).execute(probe, log) == 0
    assert log.read_text().strip() == "1"


def test_a_failure_in_the_background_lane_stops_the_run(tmp_path, recipe, fake_stages, monkeypatch, capsys):
    execute = Runner.execute
    monkeypatch.setattr(Runner, "execute",
                        staticmethod(lambda stage, log: 3 if stage.name == "eval_yarn" else execute(stage, log)))
    assert qs(tmp_path / "out", recipe) == 1
    assert "stage 'eval_yarn' failed (exit code 3)" in capsys.readouterr().err
    assert "report" not in fake_stages
