"""The items earlier notes left alone (issue 25, item 4), each fixed: `convert --help` without torch; a copied
checkpoint is the same model for `--use_cache`; an unknown `--metadata` key refused before the model loads; every
process of a multi-process training refused by another training's lock stops with the one sentence (none hangs).
(`ppl_*` building all their documents is explained in tasks/README.md, not changed.)"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

from infini_bench import harness
from infini_bench.training.checkpoint import LOCK_FILE, list_checkpoints
from test_adapter_support import infini_dir  # noqa: F401
from test_train_runs import corpus, env, free_port, overrides  # noqa: F401


def test_convert_help_does_not_import_torch():
    code = ("import sys\nfrom infini_bench.cli import main\ntry:\n    main(['convert', '--help'])\n"
            "except SystemExit:\n    pass\nprint('torch loaded:', 'torch' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert "--memory-update {linear,delta,delta_l2,gated_delta}" in done.stdout
    assert done.stdout.strip().endswith("torch loaded: False")


def test_a_copied_checkpoint_is_the_same_model_for_the_cache(tmp_path, infini_dir):
    copy = tmp_path / "copy"
    shutil.copytree(infini_dir, copy, copy_function=shutil.copy)  # new file times, another folder
    original = harness.model_identity("infini", {"pretrained": str(infini_dir)})
    copied = harness.model_identity("infini", {"pretrained": str(copy)})
    assert copied["digest"] == original["digest"]
    with open(copy / "model.safetensors", "r+b") as handle:  # one byte of the weights changed: another model
        handle.seek(-1, os.SEEK_END)
        last = handle.read(1)
        handle.seek(-1, os.SEEK_END)
        handle.write(bytes([last[0] ^ 1]))
    assert harness.model_identity("infini", {"pretrained": str(copy)})["digest"] != original["digest"]
    assert harness.model_identity("infini", {"pretrained": str(infini_dir), "use_memory": False})["digest"] != \
        original["digest"]


def test_an_unknown_metadata_key_is_refused_before_the_model_loads(infini_dir, monkeypatch, capsys):
    from lm_eval.api.model import LM

    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded before the refusal")

    monkeypatch.setattr(LM, "create_from_arg_obj", classmethod(refuse))
    monkeypatch.setattr(LM, "create_from_arg_string", classmethod(refuse))
    code = harness.main(["--model", "infini", "--model_args", f"pretrained={infini_dir}", "--tasks", "passkey_256",
                         "--device", "cpu", "--metadata", "sampels=1"])
    assert code == 1
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert line.startswith("error: the selected tasks: unknown option 'sampels' (did you mean 'samples'?) in --metadata")


def test_a_refused_multi_process_training_stops_on_every_process(tmp_path, corpus):
    out = tmp_path / "out"
    out.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
    try:
        lock = {"pid": holder.pid, "host": os.uname().nodename, "since": "2026-12-04 10:00:00"}
        (out / LOCK_FILE).write_text(json.dumps(lock))
        cmd = [
            sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
            "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port",
            str(free_port()), "-m", "infini_bench.training", "train", *overrides(corpus, out, **{"run.max_steps": 2}),
        ]
        done = subprocess.run(cmd, env=env(), capture_output=True, text=True, timeout=240)
    finally:
        holder.kill()
        holder.wait()
    assert done.returncode != 0
    sentence = (f"infini-bench train: error: run.output_dir '{out}' is in use by another training (PID {holder.pid}, "
                "since 2026-12-04 10:00:00)")
    assert done.stderr.count(sentence) == 2, done.stderr[-3000:]  # both processes, the same sentence
    assert not list_checkpoints(out) and json.loads((out / LOCK_FILE).read_text())["pid"] == holder.pid
