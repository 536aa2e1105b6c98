"""Seed replicates and the headline, on synthetic lm-eval output with known means and spreads.

`write_lm_eval_run` writes what ``lm_eval --output_path OUT --log_samples`` writes for a generation task of this
project (``OUT/<model_name_sanitized>/results_<date>.json`` and ``samples_<task>_<date>.jsonl``, the same keys,
layouts and NaN per-depth placeholders as lm-eval 0.4.13), but with chosen per-sample scores, so every mean,
spread and interval the report shows can be checked against numbers computed here by hand.
"""
from __future__ import annotations

import json
import math
import re
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from infini_bench.reports import build_report
from infini_bench.reports.grid import wilson
from infini_bench.reports.labels import run_names
from infini_bench.reports.text import render_text
from infini_bench.tasks.names import depth_metric, format_length
from test_reliability_quickstart import fake_stages  # noqa: F401  (a fixture)

DEPTHS = (0, 50, 100)
PER_CELL = 4  # samples per (depth, length) cell
LENGTHS = (1024, 2048, 4096)
# successes out of PER_CELL per (depth, length), one table per seed: depth rows, length columns
SEED_SUCCESSES = {
    "seed0": [[4, 4, 3], [4, 3, 1], [4, 2, 0]],
    "seed1": [[4, 4, 4], [4, 4, 2], [3, 2, 1]],
    "seed2": [[4, 3, 2], [4, 4, 0], [4, 1, 0]],
}
_clock = datetime(2026, 11, 30, 1, 0, 0)


def _date_id() -> str:
    """lm-eval's file suffix: ``datetime.now().isoformat().replace(":", "-")``; one new second per run."""
    global _clock
    _clock += timedelta(seconds=1, microseconds=123)
    return _clock.isoformat().replace(":", "-")


def _sanitize(name: str) -> str:
    return re.sub(r"[\"<>:/|\\?*\[\]]+", "__", name)  # lm-eval's utils.sanitize_model_name


def write_lm_eval_run(out: Path, model: str, model_args: dict, family: str,
                      successes: dict[int, dict[float, int]]) -> Path:
    """One lm-eval run of ``<family>_<len>`` tasks; ``successes[length][depth]`` of PER_CELL samples are right."""
    date_id = _date_id()
    name = model_args["pretrained"]
    folder = out / _sanitize(name)
    folder.mkdir(parents=True, exist_ok=True)
    results, configs, n_samples = {}, {}, {}
    for length, per_depth in successes.items():
        task = f"{family}_{format_length(length)}"
        names = ["acc", "ruler_match", *(depth_metric(d, s) for s in ("acc", "ruler_match") for d in DEPTHS)]
        lines, scores = [], {n: [] for n in names}
        for doc_id, (depth, right) in enumerate((d, i < per_depth[d]) for d in DEPTHS for i in range(PER_CELL)):
            answer = f"{10000 + 97 * doc_id + length}"
            prompt = f"There is an important info hidden inside... The pass key is {answer}. ... The pass key is"
            response = f" {answer}." if right else " 0."
            value = 1.0 if right else 0.0
            record = {"acc": value, "ruler_match": value}
            for score in ("acc", "ruler_match"):
                for d in DEPTHS:
                    record[depth_metric(d, score)] = value if d == depth else math.nan
            for key, v in record.items():
                if not math.isnan(v):
                    scores[key].append(v)
            doc = {"prompt": prompt, "prompt_tokens": length - 16, "answer_tokens": 16, "answer": answer,
                   "answers": [answer], "gen_prefix": "The pass key is", "context_length": length,
                   "depth_percent": float(depth), "seed": 7_000_000 + doc_id, "sample_index": doc_id % PER_CELL,
                   "base_seed": 1234, "task_family": family}
            lines.append({
                "doc_id": doc_id, "doc": doc, "target": answer,
                "arguments": {"gen_args_0": {"arg_0": prompt, "arg_1": {"until": [], "do_sample": False,
                                                                         "temperature": 0.0, "max_gen_toks": 16}}},
                "resps": [[response]], "filtered_resps": [response], "filter": "none", "metrics": names,
                "doc_hash": f"{doc_id:064x}", "prompt_hash": f"{doc_id + 1:064x}", "target_hash": f"{doc_id + 2:064x}",
                **record,
            })
        (folder / f"samples_{task}_{date_id}.jsonl").write_text(
            "".join(json.dumps(line, ensure_ascii=False) + "\n" for line in lines), encoding="utf-8")
        entry = {"name": task, "alias": task, "sample_len": len(lines)}
        for key, values in scores.items():
            entry[f"{key},none"] = float(np.mean(values))
            entry[f"{key}_stderr,none"] = float(np.std(values, ddof=1) / math.sqrt(len(values))) \
                if key in ("acc", "ruler_match") else "N/A"
        results[task] = entry
        configs[task] = {"task": task, "test_split": "test", "doc_to_text": "prompt", "doc_to_target": "answer",
                         "output_type": "generate_until", "num_fewshot": 0, "repeats": 1,
                         "metric_list": [{"metric": "acc", "aggregation": "mean", "higher_is_better": True}],
                         "metadata": {"version": 2.0, "task_context_length": length, "context_length": length,
                                      "depths": list(DEPTHS), "samples": PER_CELL, "seed": 1234,
                                      "skipped_docs": 0, **model_args}}
        n_samples[task] = {"original": len(lines), "effective": len(lines)}
    data = {
        "results": results, "group_subtasks": {}, "configs": configs,
        "versions": {t: 2.0 for t in results}, "n-shot": {t: 0 for t in results},
        "higher_is_better": {t: {"acc": True, "ruler_match": True} for t in results}, "n-samples": n_samples,
        "config": {"model": model, "model_args": model_args, "batch_size": "4", "batch_sizes": [], "device": "cpu",
                   "use_cache": None, "limit": None, "bootstrap_iters": 100000, "gen_kwargs": {},
                   "random_seed": 0, "numpy_seed": 1234, "torch_seed": 1234, "fewshot_seed": 1234},
        "git_hash": "0000000", "date": _clock.timestamp(), "model_source": model, "model_name": name,
        "model_name_sanitized": _sanitize(name), "system_instruction": None, "chat_template": None,
        "total_evaluation_time_seconds": "1.0",
    }
    (folder / f"results_{date_id}.json").write_text(json.dumps(data, indent=2, ensure_ascii=False), encoding="utf-8")
    return folder


def _per_length(table: list[list[int]]) -> dict[int, dict[float, int]]:
    return {length: {float(d): table[i][j] for i, d in enumerate(DEPTHS)} for j, length in enumerate(LENGTHS)}


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """Three seeds of one Infini model (one eval folder each, as the quickstart writes them), one Llama run, and
    for every model a NIAH family that sorts before passkey and scores 0 (the quickstart's all-red grid)."""
    root = tmp_path_factory.mktemp("seeds")
    folders = {}
    zero = {length: {float(d): 0 for d in DEPTHS} for length in LENGTHS}
    for seed, table in SEED_SUCCESSES.items():
        out = root / f"qs_{seed}" / "eval" / "infini"
        args = {"pretrained": str(root / f"qs_{seed}" / "infini" / "finetune" / "latest")}
        write_lm_eval_run(out, "infini", args, "passkey", _per_length(table))
        write_lm_eval_run(out, "infini", args, "niah_single_1", zero)
        folders[seed] = out
    llama = root / "qs_seed0" / "eval" / "llama"
    args = {"pretrained": str(root / "qs_seed0" / "baseline" / "llama"), "dtype": "float32"}
    write_lm_eval_run(llama, "hf", args, "niah_single_1", zero)
    write_lm_eval_run(llama, "hf", args, "passkey", _per_length([[4, 0, 0], [4, 0, 0], [3, 0, 0]]))
    folders["llama"] = llama
    return folders


@pytest.fixture(scope="module")
def report(runs, tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("seed_report")
    inputs = [f"infini={runs[s]}" for s in SEED_SUCCESSES] + [f"llama={runs['llama']}"]
    summary = build_report(inputs, out, train_lengths={"infini": 1024, "llama": 1024}, threshold=0.7)
    return out, summary


def _grid(summary: dict, model: str, family: str = "passkey") -> dict:
    (grid,) = [g for g in summary["grids"] if g["model"] == model and g["family"] == family]
    return grid


def _expected_cells() -> dict[tuple[float, int], list[float]]:
    """Each seed's cell accuracy, by (depth, length)."""
    return {(float(d), length): [SEED_SUCCESSES[s][i][j] / PER_CELL for s in SEED_SUCCESSES]
            for i, d in enumerate(DEPTHS) for j, length in enumerate(LENGTHS)}


def test_replicates_are_one_model_with_three_runs(report):
    _, summary = report
    infini = [m for m in summary["models"] if m["label"] == "infini"]
    assert [m["run"] for m in infini] == ["qs_seed0", "qs_seed1", "qs_seed2"]
    assert [m["run"] for m in summary["models"] if m["label"] == "llama"] == [None]
    grid = _grid(summary, "infini")
    assert grid["seeds"] == 3 and grid["runs"] == ["qs_seed0", "qs_seed1", "qs_seed2"]
    assert _grid(summary, "llama")["seeds"] == 1
    assert not summary["problems"]


def test_cells_show_the_mean_the_spread_and_the_pooled_interval(report):
    _, summary = report
    grid = _grid(summary, "infini")
    expected = _expected_cells()
    assert {(c["depth"], c["length"]) for c in grid["cells"]} == set(expected)
    for cell in grid["cells"]:
        values = expected[(cell["depth"], cell["length"])]
        successes = sum(v * PER_CELL for v in values)
        assert cell["acc"] == pytest.approx(np.mean(values))
        assert cell["per_seed"] == pytest.approx(values)
        assert (cell["seeds"], cell["seed_min"], cell["seed_max"]) == (3, min(values), max(values))
        assert cell["seed_std"] == pytest.approx(np.std(values, ddof=1))
        assert cell["n"] == 3 * PER_CELL
        assert cell["pooled_acc"] == pytest.approx(successes / (3 * PER_CELL))
        assert (cell["ci_low"], cell["ci_high"]) == pytest.approx(wilson(successes, 3 * PER_CELL))
    # depth 50 % at 4k: the seeds got 1, 2 and 0 of 4 right
    spread = next(c for c in grid["cells"] if (c["depth"], c["length"]) == (50.0, 4096))
    assert (spread["seed_min"], spread["seed_max"]) == (0.0, 0.5) and spread["acc"] == pytest.approx(0.25)


def test_per_length_mean_and_spread_and_effective_lengths(report):
    _, summary = report
    grid = _grid(summary, "infini")
    per_seed_length = {length: [sum(SEED_SUCCESSES[s][i][j] for i in range(len(DEPTHS))) / (PER_CELL * len(DEPTHS))
                                for s in SEED_SUCCESSES] for j, length in enumerate(LENGTHS)}
    for row in grid["per_length"]:
        values = per_seed_length[row["length"]]
        assert row["acc"] == pytest.approx(np.mean(values))
        assert (row["seed_min"], row["seed_max"]) == pytest.approx((min(values), max(values)))
        assert row["seed_std"] == pytest.approx(np.std(values, ddof=1))
        assert row["n"] == 3 * len(DEPTHS) * PER_CELL
        k = sum(values) * PER_CELL * len(DEPTHS)
        assert (row["ci_low"], row["ci_high"]) == pytest.approx(wilson(k, row["n"]))
    # per seed at 1k/2k/4k: seed0 1.0/0.75/0.33, seed1 0.92/0.83/0.58, seed2 1.0/0.67/0.17 (threshold 70 %)
    stats = grid["stats"]
    assert [r["effective_length"] for r in stats["per_seed"]] == [2048, 2048, 1024]
    assert (stats["seed_effective_length_min"], stats["seed_effective_length_max"]) == (1024, 2048)
    assert stats["effective_length"] == 2048  # the mean: 0.97, 0.75, 0.36
    per_depth_means = [np.mean([sum(SEED_SUCCESSES[s][i]) / (PER_CELL * len(LENGTHS)) for s in SEED_SUCCESSES])
                       for i in range(len(DEPTHS))]
    assert stats["mean"] == pytest.approx(np.mean(per_depth_means))
    seed_means = [np.mean([sum(SEED_SUCCESSES[s][i]) / (PER_CELL * len(LENGTHS)) for i in range(len(DEPTHS))])
                  for s in SEED_SUCCESSES]
    assert [r["mean"] for r in stats["per_seed"]] == pytest.approx(seed_means)
    assert stats["seed_mean_std"] == pytest.approx(np.std(seed_means, ddof=1))
    (comparison,) = [c for c in summary["comparisons"] if c["family"] == "passkey"]
    row = next(r for r in comparison["table"] if r["model"] == "infini")
    assert row["per_length"]["4096"] == pytest.approx(np.mean(per_seed_length[4096]))
    assert row["per_length_seeds"]["4096"]["seed_max"] == pytest.approx(max(per_seed_length[4096]))


def test_heatmap_draws_the_mean(report):
    from PIL import Image

    from infini_bench.reports.figures import accuracy_colour

    out, summary = report
    grid = _grid(summary, "infini")
    with Image.open(out / grid["heatmap"]["file"]) as img:
        pixels = np.asarray(img.convert("RGB"), dtype=float)
    for cell in grid["cells"]:
        x0, y0, x1, y1 = cell["pixel_box"]
        patch = pixels[y0 + 4 : y0 + 10, x0 + 4 : x0 + 10].reshape(-1, 3)
        assert np.abs(np.median(patch, axis=0) - np.array(accuracy_colour(cell["acc"] * 100)) * 255).max() <= 6


def test_headline_leads_with_the_primary_family(report):
    out, summary = report
    headline = summary["headline"]
    assert [(r["family"], r["model"]) for r in headline] == [
        ("passkey", "infini"), ("passkey", "llama"), ("niah_single_1", "infini"), ("niah_single_1", "llama")]
    first = headline[0]
    assert first["effective_length"] == 2048 and first["effective_multiple"] == 2.0 and first["seeds"] == 3
    assert first["mean"] == _grid(summary, "infini")["stats"]["mean"]
    assert (first["effective_length_min"], first["effective_length_max"]) == (1024, 2048)
    assert headline[1]["effective_length"] == 1024 and headline[1]["seeds"] == 1 and headline[1]["mean_min"] is None
    assert [c["family"] for c in summary["comparisons"]] == ["passkey", "niah_single_1"]
    text = render_text(summary)
    assert text.startswith("== headline")
    first_rows = text.split("\n\n", 1)[0].splitlines()
    assert "passkey" in first_rows[2] and "2k (2× training)" in first_rows[2] and "[seeds 1k–2k]" in first_rows[2]
    html = (out / "report.html").read_text(encoding="utf-8")
    assert html.index('id="headline"') < html.index('id="models"') < html.index('id="compare-1"')
    assert "<td>2k (2× training length; seeds 1k–2k)</td>" in html and "69.4% (seeds 61–78%, sd 8.3)" in html
    assert html.index("<h2>Comparison: passkey") < html.index("<h2>Comparison: niah_single_1")
    on_disk = json.loads((out / "summary.json").read_text())
    assert on_disk["headline"] == json.loads(json.dumps(headline))


def test_text_and_html_show_the_seed_spread(report):
    out, summary = report
    text = render_text(summary)
    assert "== infini · passkey (acc %, mean of 3 seeds, 108 samples pooled" in text
    assert "seeds (mean / effective length): qs_seed0" in text
    # per length: the mean, the seed range and sd, the pooled interval
    assert "4k 36 [17–58, sd 21.0] (22–52)" in text
    html = (out / "report.html").read_text(encoding="utf-8")
    assert "seeds 0–50%" in html  # the 50 % depth at 4k
    assert "run qs_seed1" in html  # example prompts name their run
    assert "NaN" not in (out / "summary.json").read_text()


def test_run_names_drop_what_the_paths_share():
    assert run_names(["a/qs_s0/eval/infini", "a/qs_s1/eval/infini"]) == ["qs_s0", "qs_s1"]
    assert run_names(["/x/seed0", "/x/seed1/"]) == ["seed0", "seed1"]
    assert run_names(["same", "same"]) == ["run 1", "run 2"]


def test_a_replicated_label_on_a_folder_of_several_models_is_reported(runs, tmp_path):
    both = runs["seed0"].parents[0]  # .../qs_seed0/eval: infini and llama
    summary = build_report([f"x={both}", f"x={runs['seed1']}"], tmp_path / "rep", html=False)
    assert any("holds 2 models" in p and "one model per input" in p for p in summary["problems"])
    assert all(g["seeds"] == 1 for g in summary["grids"])
    assert len({m["label"] for m in summary["models"]}) == 3


def test_readme_seed_loop_trains_each_seed_on_the_same_documents(tmp_path, monkeypatch, fake_stages):  # noqa: F811
    """The README's N-seed quickstart loop, run as written (the stages' work replaced): each run trains both models
    (and extends the baseline by YaRN) with its own seed everywhere (pretraining, finetuning order, passkey and NIAH
    examples) and evaluates the same documents with all four models."""
    import shlex

    import torch

    from infini_bench import quickstart

    root = Path(__file__).resolve().parents[1]
    readme = (root / "README.md").read_text(encoding="utf-8")
    line = re.search(r"^for s in 0 1 2; do (infini-bench quickstart [^;]*); done$", readme, re.M)
    assert line, "the README's seed loop is missing"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.chdir(tmp_path)
    evaluations = []
    for s in (0, 1, 2):
        argv = shlex.split(line.group(1).replace("$s", str(s)))[2:]
        assert quickstart.main(argv) == 0
        commands = (tmp_path / f"qs_seed{s}" / "commands.sh").read_text()
        for key in ("finetune.run.seed", "finetune.passkey.seed", "finetune.niah.seed"):
            assert commands.count(f" {key}={s}") == 2, key  # both models' finetuning
        assert commands.count(f" run.seed={s}") == 3  # both pretrainings and the YaRN extension
        evaluations.append([c.replace(f"qs_seed{s}", "OUT") for c in commands.splitlines() if "harness" in c])
    assert len(evaluations[0]) == 4 and evaluations[0] == evaluations[1] == evaluations[2]
