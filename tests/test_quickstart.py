"""`infini-bench quickstart` end to end with the shipped recipe shrunk to a tiny model and budget: every artefact
exists and is well-formed (accuracy is not checked here; the README records a real run). Also its bad input and
resume."""
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

SHIPPED_RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "quickstart-cpu.yaml"


def tiny_recipe(max_steps: int = 3) -> str:
    """The shipped CPU recipe with every size shrunk and a few steps per stage: its structure (memory rule, the
    memory's convolution, NIAH finetuning, text steps, the baseline's Llama export) runs end to end here, so a
    slip in it (a field the export does not know) fails this test, not a user's first run."""
    recipe = yaml.safe_load(SHIPPED_RECIPE.read_text())
    recipe["model"].update(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, head_dim=32)
    recipe["data"].update(max_tokens=60000, tokenizer_train_chars=300000)
    short = {"max_steps": max_steps, "save_every": max_steps, "log_every": 1}
    for stage in (recipe, recipe["finetune"]):
        stage["optim"].update(warmup_steps=1, batch_size=2, micro_batch_size=2)
        stage["run"].update(short)
    recipe["finetune"]["passkey"]["num_examples"] = 8
    recipe["finetune"]["niah"]["num_examples"] = 4
    return yaml.safe_dump(recipe)


TINY_RECIPE = tiny_recipe()


def quickstart(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "infini_bench.cli", "quickstart", *args], capture_output=True,
                          text=True, cwd=cwd)


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("quickstart")
    recipe = root / "tiny.yaml"
    recipe.write_text(TINY_RECIPE)
    out = root / "out"
    args = [sys.executable, "-m", "infini_bench.cli", "quickstart", "--out", str(out), "--minutes", "1",
            "--recipe", str(recipe), "--samples", "1", "--multiples", "1,2"]
    # Ctrl-C once the first stage has finished: the next run must resume after it.
    # SIGINT back to its default in the child: a test runner started in the background (`cmd &`) ignores SIGINT,
    # children inherit that, and Python then never raises KeyboardInterrupt
    first = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    stages = out / "quickstart_stages.json"
    deadline = time.monotonic() + 300
    while not stages.exists() and first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.5)
    first.send_signal(signal.SIGINT)
    _, err = first.communicate(timeout=120)
    assert first.returncode == 130, err[-2000:]
    assert "interrupted; run the same command again to resume" in err
    finished_before = json.loads(stages.read_text())
    assert 1 <= len(finished_before) < 11
    proc = subprocess.run(args, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert proc.stdout.count("already done, skipped") == len(finished_before)
    return out, recipe, proc


def test_every_artefact_exists_and_is_well_formed(finished_run):
    out, _, proc = finished_run
    from transformers import AutoConfig

    import infini_bench.modeling  # noqa: F401  registers model_type "infini" (import infini_bench alone is lazy)

    assert AutoConfig.from_pretrained(out / "infini" / "finetune" / "latest").model_type == "infini"
    assert AutoConfig.from_pretrained(out / "baseline" / "llama").model_type == "llama"
    assert AutoConfig.from_pretrained(out / "yarn" / "llama").rope_parameters["rope_type"] == "yarn"
    for label in ("infini", "memory_off", "llama", "yarn"):
        results = list((out / "eval" / label).rglob("results_*.json"))
        assert len(results) == 1, label
        data = json.loads(results[0].read_text())
        for task in ("passkey_256", "passkey_512", "niah_256", "niah_512", "niah_multikey_2_256", "ppl_stdlib"):
            assert task in data["results"], (label, task)
        assert not [k for k in data["results"]["passkey_256"] if "_d0" in k]  # the table: headline scores only
        assert list((out / "eval" / label).rglob("samples_passkey_512_*.jsonl"))
    report = out / "report"
    html = (report / "report.html").read_text()
    assert html.count("data:image/png;base64,") >= 3 and "http://" not in html and "https://" not in html
    summary = json.loads((report / "summary.json").read_text())
    assert summary and list(report.glob("*.png"))
    stages = json.loads((out / "quickstart_stages.json").read_text())
    assert len(stages) == 11 and all(s["seconds"] >= 0 for s in stages.values())
    commands = (out / "commands.sh").read_text()
    assert commands.count("infini_bench.harness --model") == 4 and "use_memory=False" in commands
    assert "infini_bench.cli extend --config" in commands and "--control llama --control yarn" in commands
    assert "report.html" in proc.stdout and "lm_eval" not in proc.stderr[-200:]


def test_second_run_reuses_finished_stages(finished_run):
    out, recipe, _ = finished_run
    proc = quickstart("--out", str(out), "--minutes", "1", "--recipe", str(recipe), "--samples", "1", "--multiples", "1,2")
    assert proc.returncode == 0
    assert proc.stdout.count("already done, skipped") == 11


@pytest.mark.parametrize(
    "args, message",
    [
        (["--minutes", "0"], "--minutes=0.0 is invalid"),
        (["--minutes", "-2"], "--minutes=-2.0 is invalid"),
        (["--samples", "0"], "--samples=0 is invalid"),
        (["--recipe", "/no/such/recipe.yaml"], "--recipe '/no/such/recipe.yaml' does not exist"),
    ],
)
def test_bad_input_is_a_clear_error(tmp_path, capsys, args, message):
    from infini_bench.quickstart import main

    assert main(["--out", str(tmp_path / "o"), *args]) == 1
    assert message in capsys.readouterr().err


def test_bad_multiples(capsys):
    from infini_bench.quickstart import main

    with pytest.raises(SystemExit):
        main(["--multiples", "1,x"])
    assert "'1,x' is not a comma-separated list" in capsys.readouterr().err


def test_out_that_is_a_file(tmp_path, capsys):
    from infini_bench.quickstart import main

    target = tmp_path / "file.txt"
    target.write_text("x")
    assert main(["--out", str(target)]) == 1
    assert "is a file" in capsys.readouterr().err


def test_out_that_is_not_writable(capsys):
    from infini_bench.quickstart import main

    assert main(["--out", "/sys/infini-bench-quickstart"]) == 1  # sysfs refuses new folders, even to root
    assert "not writable" in capsys.readouterr().err
