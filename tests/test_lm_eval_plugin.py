"""Plain `lm_eval --model infini` after `pip install` (the .pth hook, regular and editable installs), and the
lazy top-level package that keeps torch out of processes that never touch a model."""
from __future__ import annotations

import json
import os
import shutil
import site
import subprocess
import sys
import zipfile
from pathlib import Path

from test_adapter_support import infini_dir  # noqa: F401

ROOT = Path(__file__).resolve().parents[1]
PTH = "infini_bench_lm_eval.pth"


def _python(code: str, tmp: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", CUDA_VISIBLE_DEVICES="")
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp, env=env, timeout=300)


def test_import_and_report_help_load_no_torch(tmp_path) -> None:
    done = _python(
        "import sys, infini_bench\n"
        "from infini_bench.cli import main\n"
        "try:\n    main(['report', '--help'])\nexcept SystemExit:\n    pass\n"
        "assert 'infini_bench.lm_eval_compat' in sys.modules  # loaded by the .pth hook, without lm-eval\n"
        "print(sorted(m for m in ('torch', 'transformers', 'lm_eval') if m in sys.modules))",
        tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "[]"


def test_the_hook_is_installed_and_registers_infini_beside_the_builtins(tmp_path) -> None:
    assert any((Path(folder) / PTH).is_file() for folder in site.getsitepackages()), "pip install did not ship the .pth"
    done = _python(
        "import sys\n"
        "assert 'torch' not in sys.modules\n"
        "from lm_eval.api.registry import get_model\n"
        "import lm_eval.models\n"
        "assert 'infini_bench.model_adapters' not in sys.modules  # registered lazily: nothing imported yet\n"
        "print(get_model('hf').__name__, get_model('dummy').__name__, get_model('infini').__name__)",
        tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["HFLM", "DummyLM", "InfiniLM"]


def test_plain_lm_eval_runs_model_infini(infini_dir, tmp_path) -> None:
    include = subprocess.run([sys.executable, "-m", "infini_bench.cli", "tasks", "--path"], capture_output=True,
                             text=True, check=True).stdout.strip()
    lm_eval = Path(sys.executable).with_name("lm_eval")
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", CUDA_VISIBLE_DEVICES="",
               INFINI_BENCH_CACHE=str(tmp_path / "cache"))
    done = subprocess.run(
        [str(lm_eval), "--model", "infini", "--model_args", f"pretrained={infini_dir}", "--tasks", "passkey_256",
         "--include_path", include, "--metadata", "depths=[50]", "samples=2", "--device", "cpu",
         "--output_path", str(tmp_path / "out")],
        capture_output=True, text=True, cwd=tmp_path, env=env, timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    [results] = (tmp_path / "out").rglob("results_*.json")
    data = json.loads(results.read_text())
    assert "passkey_256" in data["results"] and data["config"]["model"] == "infini"


def test_a_regular_wheel_ships_the_hook(tmp_path) -> None:
    source = tmp_path / "src"  # setuptools builds in the project folder: build a copy, leave the checkout alone
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    for name in tracked:
        if (ROOT / name).is_file():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, source / name)
    done = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path), str(source)],
        capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    [wheel] = tmp_path.glob("infini_bench-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        assert PTH in names  # at the root of site-packages, beside the package
        assert archive.read(PTH).decode() == (ROOT / "infini_bench" / PTH).read_text()
        assert "infini_bench/lm_eval_plugin.py" in names
        assert "infini_bench/lm_eval_compat.py" in names  # the hook imports it at interpreter start
