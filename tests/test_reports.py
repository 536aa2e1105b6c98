"""End-to-end report tests on output written by real lm-eval runs (see ``lm_eval_out``).

Two models feed the report: the random-weight tiny Llama through lm-eval's own ``hf`` model (passkey and
perplexity tasks: the real pipeline, accuracy 0), and a ``recall_oracle`` model registered with lm-eval in a
runner script, which answers the needle correctly only for some depths and lengths. A random model scores 0
everywhere, so the oracle is what gives the heatmap different values to check colours, the difference map and
effective lengths against. Both write ordinary lm-eval results JSON + samples JSONL through lm-eval's CLI.
"""
from __future__ import annotations

import ast
import base64
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections import defaultdict
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from infini_bench.reports import build_report, main
from infini_bench.reports.figures import accuracy_colour

REPO = Path(__file__).resolve().parents[1]
# A small grid: the two shortest passkey tasks (1k and 2k tokens), three depths, few samples per depth.
LENGTHS = [1024, 2048]
DEPTHS = [0, 50, 100]
ORACLE_RECALL = 1024  # the oracle finds every needle up to this length, beyond it only the shallow ones
# Runs several lm-eval CLI invocations (through the project's wrapper) in one process, with one extra model
# registered: recall_oracle. lm-eval's CLI re-indexes its ~10k built-in task YAMLs on every run (20 s on a busy
# 2-core machine); none are used here, so this process indexes only the project's tasks. Everything else (argument
# parsing, evaluation, the files written) is lm-eval's own code path. The first hf run in the fixture does not
# use this runner at all.
RUNNER = '''
import json
import sys
import zlib

import lm_eval.models  # the built-in models register first (ours before them would hide them)
from lm_eval.api.model import LM
from lm_eval.api.registry import register_model
from lm_eval.tasks.manager import TaskManager


@register_model("recall_oracle")
class RecallOracle(LM):
    """Answers the needle it is asked about up to recall_length tokens; beyond, less often the deeper it sits."""

    def __init__(self, recall_length=256, **kwargs):
        super().__init__()
        self.recall_length = int(recall_length)

    def generate_until(self, requests, disable_tqdm=False):
        out = []
        for req in requests:
            doc = req.doc
            length, depth = int(doc["context_length"]), float(doc["depth_percent"])
            chance = 1.0 if length <= self.recall_length else max(0.0, 1.0 - 1.2 * depth / 100.0)
            draw = (zlib.crc32(f"{doc['seed']}|{depth}|{length}".encode()) % 1000) / 1000.0
            if draw < chance:
                out.append(f" {doc['answer']}.")
            else:  # NIAH: the value in words RULER's substring match finds and the strict score does not
                out.append(f" the 1st number is {doc['answer']}." if "variant" in doc else " 0.")
        return out

    def loglikelihood(self, requests, disable_tqdm=False):
        raise NotImplementedError("recall_oracle only generates")

    def loglikelihood_rolling(self, requests, disable_tqdm=False):
        raise NotImplementedError("recall_oracle only generates")


_index_all = TaskManager.__init__


def _index_project_tasks_only(self, *args, include_defaults=False, **kwargs):
    _index_all(self, *args, include_defaults=include_defaults, **kwargs)


TaskManager.__init__ = _index_project_tasks_only

if __name__ == "__main__":
    from infini_bench.harness import main

    for argv in json.loads(sys.argv[1]):
        main(argv)
'''


def _env(cache: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TOKENIZERS_PARALLELISM="false", CUDA_VISIBLE_DEVICES="",
               INFINI_BENCH_CACHE=str(cache))
    return env


def _harness(args: list[str], work: Path, runner: list[str] | None = None) -> None:
    cmd = [*(runner or [sys.executable, "-m", "infini_bench.harness"]), *args]
    proc = subprocess.run(cmd, cwd=work, env=_env(work / "cache"), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"


@pytest.fixture(scope="module")
def lm_eval_out(tmp_path_factory, tiny_llama_dir) -> dict[str, Path]:
    """lm-eval output written by lm-eval's CLI (through ``python -m infini_bench.harness``):

    * the tiny Llama with lm-eval's ``hf`` model: passkey_1k + passkey_2k in one run (the plain CLI), ppl_stdlib in
      a second run, so one model's results are spread over two results files, the second without any depth grid;
    * the recall oracle: passkey_1k, passkey_2k, niah_single_1_1k, niah_single_1_2k.
    """
    root = tmp_path_factory.mktemp("lm_eval_out")
    work = tmp_path_factory.mktemp("lm_eval_work")
    common = ["--output_path", str(root), "--log_samples", "--batch_size", "1"]
    hf = ["--model", "hf", "--model_args", f"pretrained={tiny_llama_dir}", "--device", "cpu", *common]
    _harness([*hf, "--tasks", "passkey_1k,passkey_2k", "--metadata", json.dumps({"depths": DEPTHS, "samples": 1})],
             work)
    oracle = ["--model", "recall_oracle", "--model_args",
              f"pretrained=recall-oracle,tokenizer={tiny_llama_dir},recall_length={ORACLE_RECALL}", *common,
              "--tasks", "passkey_1k,passkey_2k,niah_single_1_1k,niah_single_1_2k", "--metadata",
              json.dumps({"depths": DEPTHS, "samples": 4, "depth_metrics": True})]
    ppl = [*hf, "--tasks", "ppl_stdlib", "--metadata",
           json.dumps({"doc_tokens": 2048, "min_doc_tokens": 2048, "max_docs": 1})]
    runner = work / "runner.py"
    runner.write_text(RUNNER)
    _harness([json.dumps([oracle, ppl])], work, runner=[sys.executable, str(runner)])
    folders = {p.name: p for p in root.iterdir() if p.is_dir()}
    oracle_folder = folders.pop("recall-oracle")
    (hf_folder,) = folders.values()
    return {"root": root, "hf": hf_folder, "oracle": oracle_folder}


@pytest.fixture(scope="module")
def report(lm_eval_out, tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("report")
    summary = build_report([lm_eval_out["root"]], out, train_lengths={"recall-oracle": ORACLE_RECALL})
    return out, summary


def _samples_by_cell(folder: Path, metric: str = "acc") -> dict[tuple[str, float, int], list[float]]:
    """Read the samples logs directly, independently of the report code: (family, depth, length) -> values.

    The family is the task name without its length (``samples_passkey_2k_<date>.jsonl`` -> ``passkey``)."""
    cells: dict[tuple[str, float, int], list[float]] = defaultdict(list)
    for path in folder.glob("samples_*.jsonl"):
        family = re.match(r"samples_(.+)_\d+k_\d{4}-", path.name)
        for line in path.read_text(encoding="utf-8").splitlines():
            rec = json.loads(line)
            doc = rec["doc"]
            if isinstance(doc, dict) and "depth_percent" in doc and metric in rec:
                cells[(family.group(1), float(doc["depth_percent"]), int(doc["context_length"]))].append(rec[metric])
    return cells


def _grid(summary: dict, model: str, family: str = "passkey") -> dict:
    (grid,) = [g for g in summary["grids"] if g["model"] == model and g["family"] == family]
    return grid


def _hf_label(summary: dict) -> str:
    (label,) = [m["label"] for m in summary["models"] if m["model_type"] == "hf"]
    return label


# --- the pivot ---------------------------------------------------------------------------------------------


def test_every_cell_is_the_mean_of_its_samples(report, lm_eval_out):
    _, summary = report
    checked = 0
    for model, folder in (("recall-oracle", lm_eval_out["oracle"]), (_hf_label(summary), lm_eval_out["hf"])):
        raw = _samples_by_cell(folder)
        families = {family for family, _, _ in raw}
        grids = {g["family"]: g for g in summary["grids"] if g["model"] == model}
        assert set(grids) == families
        for family, grid in grids.items():
            expected = {(d, n): v for (f, d, n), v in raw.items() if f == family}
            assert {(c["depth"], c["length"]) for c in grid["cells"]} == set(expected)
            for cell in grid["cells"]:
                values = expected[(cell["depth"], cell["length"])]
                assert cell["n"] == len(values)
                assert cell["acc"] == pytest.approx(sum(values) / len(values))
                assert cell["ci_low"] <= cell["acc"] <= cell["ci_high"]
                checked += 1
            assert grid["lengths"] == LENGTHS
            assert grid["depths"] == [float(d) for d in DEPTHS]
    assert checked == 3 * len(LENGTHS) * len(DEPTHS)  # oracle passkey + oracle niah + hf passkey


def test_oracle_grid_has_the_shape_it_was_given(report):
    """Recall at the short length, falling with depth at the long one: the grid is not vacuous."""
    _, summary = report
    grid = _grid(summary, "recall-oracle")
    acc = {(c["depth"], c["length"]): c["acc"] for c in grid["cells"]}
    assert all(acc[(d, LENGTHS[0])] == 1.0 for d in (0.0, 50.0, 100.0))
    assert acc[(0.0, LENGTHS[1])] == 1.0 and acc[(100.0, LENGTHS[1])] == 0.0
    stats = grid["stats"]
    per_depth = {p["depth"]: p["acc"] for p in grid["per_depth"]}
    assert stats["mean"] == pytest.approx(np.mean(list(per_depth.values())))
    assert stats["std"] == pytest.approx(np.std(list(per_depth.values())))
    assert stats["min_depth"] == 100.0 and stats["max_depth"] == 0.0
    assert stats["effective_length"] == LENGTHS[0]


def test_cells_agree_with_lm_eval_per_depth_metrics(report, lm_eval_out):
    """Each task's column equals what lm-eval itself aggregated as acc_dNNN for that depth."""
    _, summary = report
    results = json.loads(next(lm_eval_out["oracle"].glob("results_*.json")).read_text())
    grid = _grid(summary, "recall-oracle")
    cells = {(c["depth"], c["length"]): c["acc"] for c in grid["cells"]}
    for length, task in zip(LENGTHS, ("passkey_1k", "passkey_2k")):
        for depth in DEPTHS:
            assert cells[(float(depth), length)] == pytest.approx(results["results"][task][f"acc_d{depth:03d},none"])


# --- the figures -------------------------------------------------------------------------------------------


def _patch_colour(image: np.ndarray, box: list[int]) -> np.ndarray:
    """Median colour of a small patch inside a cell's top-left corner, clear of the centred annotation."""
    x0, y0, x1, y1 = box
    inset_x, inset_y = max(4, (x1 - x0) // 12), max(4, (y1 - y0) // 12)
    patch = image[y0 + inset_y : y0 + 2 * inset_y, x0 + inset_x : x0 + 2 * inset_x, :3]
    return np.median(patch.reshape(-1, 3), axis=0)


def test_heatmap_png_size_and_cell_colours_follow_values(report):
    out, summary = report
    for grid in summary["grids"]:
        with Image.open(out / grid["heatmap"]["file"]) as img:
            assert img.format == "PNG"
            assert img.size == (grid["heatmap"]["width"], grid["heatmap"]["height"])
            pixels = np.asarray(img.convert("RGB"), dtype=float)
        for cell in grid["cells"]:
            expected = np.array(accuracy_colour(cell["acc"] * 100.0)) * 255.0
            got = _patch_colour(pixels, cell["pixel_box"])
            assert np.abs(got - expected).max() <= 6, (grid["model"], cell["depth"], cell["length"], got, expected)
    oracle = _grid(summary, "recall-oracle")
    # Higher accuracy, greener cell: green minus red rises with the value.
    with Image.open(out / oracle["heatmap"]["file"]) as img:
        pixels = np.asarray(img.convert("RGB"), dtype=float)
    ranked = sorted(oracle["cells"], key=lambda c: c["acc"])
    greenness = [(_patch_colour(pixels, c["pixel_box"]) @ np.array([-1.0, 1.0, 0.0])) for c in ranked]
    assert ranked[0]["acc"] < ranked[-1]["acc"]
    assert all(a <= b + 1 for a, b in zip(greenness, greenness[1:]))


def test_training_length_marker_is_drawn(report):
    out, summary = report
    oracle = _grid(summary, "recall-oracle")
    assert oracle["train_length"] == ORACLE_RECALL
    with Image.open(out / oracle["heatmap"]["file"]) as img:
        pixels = np.asarray(img.convert("RGB"), dtype=float)
    box_short = next(c["pixel_box"] for c in oracle["cells"] if c["length"] == LENGTHS[0] and c["depth"] == 50.0)
    column = pixels[box_short[1] + 3 : box_short[3] - 3, box_short[2] - 1 : box_short[2] + 2, :].min(axis=1)
    dark = (column.max(axis=1) < 80).mean()
    assert 0.3 < dark < 0.95, dark  # dashed: mostly dark, with gaps
    others = [g for g in summary["grids"] if g["model"] != "recall-oracle"]
    for grid in others:  # no training length known there: the boundary is the white grid line
        with Image.open(out / grid["heatmap"]["file"]) as img:
            pixels = np.asarray(img.convert("RGB"), dtype=float)
        box = grid["cells"][0]["pixel_box"]
        column = pixels[box[1] + 3 : box[3] - 3, box[2] - 1 : box[2] + 2, :].min(axis=1)
        assert (column.max(axis=1) < 80).mean() == 0.0


def test_comparison_and_difference_maps(report):
    out, summary = report
    (comparison,) = [c for c in summary["comparisons"] if c["family"].startswith("passkey")]
    assert len(comparison["models"]) == 2
    assert (out / comparison["side_by_side"]["file"]).is_file()
    (diff,) = comparison["differences"]
    with Image.open(out / diff["file"]) as img:
        assert img.size == (diff["width"], diff["height"])
    for row in comparison["table"]:
        grid = _grid(summary, row["model"])
        for length, acc in row["per_length"].items():
            cells = [c for c in grid["cells"] if c["length"] == int(length)]
            pooled = sum(c["acc"] * c["n"] for c in cells) / sum(c["n"] for c in cells)
            assert acc == pytest.approx(pooled)
    oracle_row = next(r for r in comparison["table"] if r["model"] == "recall-oracle")
    assert oracle_row["effective_length"] == LENGTHS[0]


def test_ruler_match_report_pivots_rulers_score(report, lm_eval_out, tmp_path):
    _, by_acc = report
    summary = build_report([lm_eval_out["root"]], tmp_path / "ruler", metric="ruler_match", html=False)
    raw = _samples_by_cell(lm_eval_out["oracle"], "ruler_match")
    for family in ("passkey", "niah_single_1"):
        grid = _grid(summary, "recall-oracle", family)
        assert grid["metric"] == "ruler_match"
        for cell in grid["cells"]:
            values = raw[(family, cell["depth"], cell["length"])]
            assert cell["acc"] == pytest.approx(sum(values) / len(values))
    niah_ruler = _grid(summary, "recall-oracle", "niah_single_1")["cells"]
    niah_strict = _grid(by_acc, "recall-oracle", "niah_single_1")["cells"]
    assert all(c["acc"] == 1.0 for c in niah_ruler)  # "the 1st number is N" holds N
    assert any(c["acc"] < 1.0 for c in niah_strict)  # ... but its first number is 1


def test_start_middle_end_view(report, capsys):
    out, summary = report
    grid = _grid(summary, "recall-oracle")
    bins = {b["bin"]: b for b in grid["depth_bins"]}
    assert [b["bin"] for b in grid["depth_bins"]] == ["start", "middle", "end"]
    assert bins["start"]["depths"] == [0.0] and bins["middle"]["depths"] == [50.0] and bins["end"]["depths"] == [100.0]
    cells = {(c["depth"], c["length"]): c for c in grid["cells"]}
    for name, depth in (("start", 0.0), ("middle", 50.0), ("end", 100.0)):
        for length in LENGTHS:
            assert bins[name]["per_length"][str(length)]["acc"] == cells[(depth, length)]["acc"]
            assert bins[name]["per_length"][str(length)]["n"] == cells[(depth, length)]["n"]
    (comparison,) = [c for c in summary["comparisons"] if c["family"] == "passkey"]
    row = next(r for r in comparison["table"] if r["model"] == "recall-oracle")
    assert row["start_middle_end"][str(LENGTHS[1])] == [cells[(d, LENGTHS[1])]["acc"] for d in (0.0, 50.0, 100.0)]
    html = (out / "report.html").read_text()
    assert "Start / middle / end" in html and "100% / " in html
    from infini_bench.reports.text import render_text

    text = render_text(summary)
    assert "== start / middle / end · passkey" in text and "100/100/100" in text


def test_metric_flag_accepts_only_the_two_scores(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main([str(tmp_path), "--metric", "accuracy"])
    assert exc.value.code == 2 and "invalid choice: 'accuracy'" in capsys.readouterr().err


def test_depth_bars_png(report):
    out, summary = report
    for grid in summary["grids"]:
        with Image.open(out / grid["depth_bars"]["file"]) as img:
            assert img.size == (grid["depth_bars"]["width"], grid["depth_bars"]["height"])
            assert np.asarray(img.convert("L")).std() > 5  # something drawn


# --- the HTML ----------------------------------------------------------------------------------------------


class _Collector(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.ids: set[str] = set()
        self.style = ""
        self._in_style = False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags.append((tag, attrs))
        if attrs.get("id"):
            self.ids.add(attrs["id"])
        self._in_style = tag == "style"

    def handle_endtag(self, tag):
        self._in_style = False

    def handle_data(self, data):
        if self._in_style:
            self.style += data


def test_html_is_self_contained_and_embeds_every_image(report):
    out, summary = report
    page = _Collector()
    page.feed((out / "report.html").read_text(encoding="utf-8"))
    page.close()
    images = [attrs for tag, attrs in page.tags if tag == "img"]
    embedded = set()
    for attrs in images:
        src = attrs["src"]
        assert src.startswith("data:image/png;base64,")
        embedded.add(base64.b64decode(src.split(",", 1)[1]))
    on_disk = {p.read_bytes() for p in out.glob("*.png")}
    assert embedded == on_disk and len(on_disk) >= 6
    for tag, attrs in page.tags:
        assert tag not in ("link", "iframe", "object", "embed")
        if tag == "script":
            assert "src" not in attrs
        for name in ("href", "src", "action", "poster", "data", "srcset"):
            value = (attrs.get(name) or "").strip().lower()
            assert not value.startswith(("http:", "https:", "//", "file:", "ftp:")), (tag, name, value)
        if attrs.get("href"):
            assert attrs["href"].startswith("#") and attrs["href"][1:] in page.ids, attrs["href"]
    assert "url(" not in page.style and "@import" not in page.style


def test_html_shows_intervals_and_sample_tails(report, lm_eval_out):
    out, summary = report
    text = (out / "report.html").read_text(encoding="utf-8")
    oracle = _grid(summary, "recall-oracle")
    for cell in oracle["cells"]:
        assert cell["examples"], cell
        for example in cell["examples"]:
            assert example["answer"] in text
            assert example["prompt_tail"] and example["prompt_chars"] >= len(example["prompt_tail"])
            assert example["answer"] in example["needle_context"]  # the needle itself is shown
            assert example["correct"] == (1.0 if example["response"].strip(" .") == example["answer"] else 0.0)
    answers = {json.loads(line)["doc"]["answer"] for p in lm_eval_out["oracle"].glob("samples_*.jsonl")
               for line in p.read_text().splitlines()}
    shown = {e["answer"] for c in oracle["cells"] for e in c["examples"]}
    assert shown <= answers
    assert "Wilson" in text and "effective length" in text


def test_html_renders_in_headless_chromium(report, tmp_path):
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("chromium is not installed (.ci/run installs it)")
    out, summary = report
    url = (out / "report.html").resolve().as_uri()
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--window-size=1280,2000"]
    with tempfile.TemporaryDirectory() as profile:
        dom = subprocess.run([browser, *flags, f"--user-data-dir={profile}", "--dump-dom",
                              "--virtual-time-budget=5000", url], capture_output=True, text=True, timeout=120)
    marker = dom.stdout.split('data-images-loaded="', 1)
    assert len(marker) == 2, dom.stderr[-2000:]
    loaded, total = marker[1].split('"', 1)[0].split("/")
    assert int(total) >= 6 and loaded == total
    shot = tmp_path / "report.png"
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run([browser, *flags, f"--user-data-dir={profile}", f"--screenshot={shot}", url],
                       capture_output=True, text=True, timeout=120)
    with Image.open(shot) as img:
        assert img.size == (1280, 2000)
        pixels = np.asarray(img.convert("RGB"), dtype=int)
    assert pixels.std() > 20  # not a blank page
    red = accuracy_colour(0.0)
    green = accuracy_colour(100.0)
    for colour in (red, green):  # heatmap cells of both ends of the scale are on screen
        close = np.abs(pixels - np.array(colour) * 255).max(axis=2) < 8
        assert close.sum() > 2000
    keep = os.environ.get("INFINI_BENCH_REPORT_SCREENSHOT")
    if keep:
        shutil.copy(shot, keep)


# --- bad input ---------------------------------------------------------------------------------------------


def test_empty_folder_gives_a_clear_message(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main([str(empty), "-o", str(tmp_path / "rep")]) == 1
    err = capsys.readouterr().err
    assert "no lm-eval results" in err and str(empty) in err and "Traceback" not in err
    assert main([str(tmp_path / "missing"), "-o", str(tmp_path / "rep")]) == 1
    assert "no such file or folder" in capsys.readouterr().err


def test_truncated_samples_line_is_reported_and_the_rest_used(report, lm_eval_out, tmp_path, capsys):
    _, full = report
    copy = tmp_path / "oracle"
    shutil.copytree(lm_eval_out["oracle"], copy)
    (victim,) = copy.glob("samples_passkey_2k_*.jsonl")
    lines = victim.read_text(encoding="utf-8").splitlines(keepends=True)
    last = json.loads(lines[-1])
    victim.write_text("".join(lines[:-1]) + lines[-1][: len(lines[-1]) // 2], encoding="utf-8")
    out = tmp_path / "rep"
    assert main([str(copy), "-o", str(out), "--train-length", f"recall-oracle={ORACLE_RECALL}"]) == 0
    printed = capsys.readouterr()
    assert victim.name in printed.out and f"line {len(lines)}" in printed.out
    summary = json.loads((out / "summary.json").read_text())
    assert any(victim.name in p and f"line {len(lines)}" in p for p in summary["problems"])
    before = {(c["depth"], c["length"]): c["n"] for c in _grid(full, "recall-oracle")["cells"]}
    after = {(c["depth"], c["length"]): c["n"] for c in _grid(summary, "recall-oracle")["cells"]}
    lost = (float(last["doc"]["depth_percent"]), int(last["doc"]["context_length"]))
    assert after[lost] == before[lost] - 1
    assert all(after[k] == before[k] for k in before if k != lost)
    assert (out / "report.html").is_file()


def test_missing_samples_fall_back_to_per_depth_metrics(lm_eval_out, tmp_path):
    copy = tmp_path / "oracle"
    shutil.copytree(lm_eval_out["oracle"], copy)
    for path in copy.glob("samples_*.jsonl"):
        path.unlink()
    results_file = next(copy.glob("results_*.json"))
    results = json.loads(results_file.read_text())
    summary = build_report([results_file], tmp_path / "rep")
    assert "--log_samples" in " ".join(summary["notes"])
    assert {g["family"] for g in summary["grids"]} == {"passkey", "niah_single_1"}
    for grid in summary["grids"]:
        assert not grid["has_counts"] and all(c["n"] is None and c["ci_low"] is None for c in grid["cells"])
        for cell in grid["cells"]:
            task = f"{grid['family']}_{cell['length'] // 1024}k"
            assert cell["acc"] == pytest.approx(results["results"][task][f"acc_d{int(cell['depth']):03d},none"])
    assert (tmp_path / "rep" / "report.html").is_file()


def test_results_file_without_a_depth_grid_is_explained_and_the_rest_drawn(lm_eval_out, tmp_path, capsys):
    (ppl_file,) = [p for p in lm_eval_out["hf"].glob("results_*.json")
                   if set(json.loads(p.read_text())["configs"]) == {"ppl_stdlib"}]
    out = tmp_path / "rep"
    assert main([str(ppl_file), "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    summary = json.loads((out / "summary.json").read_text())
    assert summary["grids"] == []
    assert any("ppl_stdlib" in n and "no depth × length heatmap" in n for n in summary["notes"])
    assert "ppl_stdlib" in printed and "no depth × length heatmap" in printed
    (figure,) = summary["perplexity_figures"]
    assert (out / figure["file"]).is_file()
    assert "no depth × length heatmap" in (out / "report.html").read_text(encoding="utf-8")


# --- perplexity --------------------------------------------------------------------------------------------


def test_perplexity_table_and_curve_come_from_the_results(report, lm_eval_out):
    out, summary = report
    (ppl_file,) = [p for p in lm_eval_out["hf"].glob("results_*.json")
                   if "ppl_stdlib" in json.loads(p.read_text())["configs"]]
    metrics = json.loads(ppl_file.read_text())["results"]["ppl_stdlib"]
    (entry,) = summary["perplexity"]
    assert entry["model"] == _hf_label(summary) and entry["task"] == "ppl_stdlib"
    for name in ("token_perplexity", "word_perplexity", "bits_per_byte"):
        assert entry[name] == pytest.approx(metrics[f"{name},none"])
    assert [(p["lo"], p["hi"]) for p in entry["positions"]] == [(0, 1024), (1024, 2048)]
    assert entry["positions"][0]["token_perplexity"] == pytest.approx(metrics["token_perplexity_pos_0_1k,none"])
    assert entry["positions"][1]["token_perplexity"] == pytest.approx(metrics["token_perplexity_pos_1k_2k,none"])
    (figure,) = summary["perplexity_figures"]
    with Image.open(out / figure["file"]) as img:
        assert img.size == (figure["width"], figure["height"])
        assert np.asarray(img.convert("L")).std() > 5


def test_one_model_spread_over_two_results_files_is_one_model(report):
    _, summary = report
    (hf,) = [m for m in summary["models"] if m["model_type"] == "hf"]
    assert len(hf["results_files"]) == 2
    assert hf["tasks"] == ["passkey_1k", "passkey_2k", "ppl_stdlib"]
    assert len(summary["models"]) == 2


def test_non_results_json_and_unknown_model_flag_are_reported(report, lm_eval_out, tmp_path):
    out, _ = report
    summary = build_report([lm_eval_out["oracle"], out / "summary.json"], tmp_path / "rep",
                           train_lengths={"no-such-model": 1024})
    problems = " ".join(summary["problems"])
    assert "summary.json: not an lm-eval results file" in problems
    assert "no model called 'no-such-model'" in problems
    assert summary["grids"]


# --- hygiene -----------------------------------------------------------------------------------------------


def test_reports_never_import_the_model_or_the_tasks():
    """Only the naming module of the tasks (standard library only), never the tasks themselves."""
    forbidden = ("torch", "transformers", "lm_eval", "infini_bench.modeling", "infini_bench.tasks",
                 "infini_bench.model_adapters", "infini_bench.data", "infini_bench.training")
    allowed = ("infini_bench.tasks.names",)
    naming = ast.parse((REPO / "tasks" / "names.py").read_text(encoding="utf-8"))
    assert {a.name for node in ast.walk(naming) if isinstance(node, ast.Import) for a in node.names} <= {"re"}
    assert {node.module for node in ast.walk(naming) if isinstance(node, ast.ImportFrom)} <= {"__future__"}
    for path in (REPO / "reports").glob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module or ""]
            for name in names:
                assert name in allowed or not name.startswith(forbidden), f"{path.name} imports {name}"


def test_summary_json_is_strict_json(report):
    out, summary = report
    text = (out / "summary.json").read_text()
    assert "NaN" not in text and "Infinity" not in text
    loaded = json.loads(text)
    assert loaded["threshold"] == summary["threshold"]
    assert not math.isnan(loaded["grids"][0]["stats"]["mean"])


def test_a_second_report_in_the_same_folder_replaces_the_first_ones_figures(report, lm_eval_out, tmp_path):
    out = tmp_path / "rep"
    shutil.copytree(report[0], out)
    before = {p.name for p in out.glob("*.png")}
    summary = build_report([lm_eval_out["oracle"]], out)
    referenced = {g[k]["file"] for g in summary["grids"] for k in ("heatmap", "depth_bars")}
    after = {p.name for p in out.glob("*.png")}
    assert after == referenced and after < before


def test_name_equals_path_labels_the_models_found_there(lm_eval_out, tmp_path):
    summary = build_report([f"baseline={lm_eval_out['hf']}", f"oracle={lm_eval_out['oracle']}"], tmp_path / "rep",
                           train_lengths={"oracle": ORACLE_RECALL})
    assert sorted(m["label"] for m in summary["models"]) == ["baseline", "oracle"]
    assert {g["model"] for g in summary["grids"]} == {"baseline", "oracle"}
    # the same name for two folders marks seed replicates of one model: one label, one run per folder, pooled
    twice = build_report([f"x={lm_eval_out['hf']}", f"x={lm_eval_out['oracle']}"], tmp_path / "rep2", html=False)
    assert [m["label"] for m in twice["models"]] == ["x", "x"]
    assert {m["run"] for m in twice["models"]} == {lm_eval_out["hf"].name, lm_eval_out["oracle"].name}
    assert _grid(twice, "x")["seeds"] == 2
    assert any("different kinds of model (hf, recall_oracle)" in p for p in twice["problems"])


def test_gpu_check_page_reads_the_report_and_the_benchmark(report, tmp_path):
    """benchmarks/gpu_targets.py (what gpu_check.sh renders RESULTS_gpu.md with) on a real summary.json and on the
    benchmark's JSON shape (the previous run's figures stand in for a new run)."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import gpu_targets

    _, summary = report
    scores = gpu_targets.quickstart_scores(summary)
    (oracle,) = [row for e in summary["comparisons"] if e["family"] == "passkey" for row in e["table"]
                 if row["model"] == "recall-oracle"]
    assert scores[("passkey", "recall-oracle")] == {int(k) // ORACLE_RECALL: v for k, v in oracle["per_length"].items()}
    previous = json.loads(gpu_targets.PREVIOUS.read_text())
    page = gpu_targets.render(previous, "(tables)", "==== 70 passed, 2 skipped in 41.0s ====", summary, "# GPU check")
    assert "| trainer at 8K, 8 segments | ≥ 1.0× plain Llama | 0.47× | 0.47× | **no** |" in page
    assert "| generate_until at 128K | ≥ 5× faster than hf | 2.42× | 2.42× | **no** |" in page
    assert "| rolling peak memory 32K → 1M | flat (max/min ≤ 1.05) | 1.00× | 1.00× | yes |" in page
    assert "CUDA tests: 70 passed, 2 skipped in 41.0s" in page and "| passkey · recall-oracle |" in page
