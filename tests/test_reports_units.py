"""Pure-function checks of the report's statistics and naming (no lm-eval run needed)."""
import argparse
import math
from pathlib import Path

import pytest

from infini_bench.reports.cli import _threshold, _train_length, build_parser
from infini_bench.reports.formatting import format_length
from infini_bench.reports.grid import assessment, depth_bin, effective_length, family_of, wilson
from infini_bench.reports.labels import _short_names, assign_labels
from infini_bench.reports.loading import date_id_of, parse_model_args
from infini_bench.reports.records import ModelRuns
from infini_bench.tasks.names import parse_length


@pytest.mark.parametrize(
    "k, n, low, high",
    [
        # Reference values from the closed form (Wilson 1927), z = 1.96.
        (0, 10, 0.0, 0.2775),
        (10, 10, 0.7225, 1.0),
        (5, 10, 0.2366, 0.7634),
        (81, 100, 0.7222, 0.8749),
    ],
)
def test_wilson_interval(k, n, low, high):
    lo, hi = wilson(k, n)
    assert lo == pytest.approx(low, abs=1e-4)
    assert hi == pytest.approx(high, abs=1e-4)
    assert 0.0 <= lo <= k / n <= hi <= 1.0


def test_wilson_without_samples_is_undefined():
    assert all(math.isnan(v) for v in wilson(0, 0))


@pytest.mark.parametrize(
    "mean, band",
    [(0.95, "excellent"), (0.9, "good"), (0.85, "good"), (0.8, "good"), (0.75, "fair"), (0.7, "fair"),
     (0.69, "poor"), (0.0, "poor")],
)
def test_assessment_bands(mean, band):
    assert assessment(mean) == band


def test_effective_length_is_the_longest_prefix_above_threshold():
    per_length = {1024: 1.0, 2048: 0.9, 4096: 0.7, 8192: 0.95}
    # 8k is good again, but 4k already failed: the accuracy must *stay* above the threshold.
    assert effective_length(per_length, 0.8) == 2048
    assert effective_length(per_length, 0.6) == 8192
    assert effective_length(per_length, 0.99) == 1024
    assert effective_length({1024: 0.5, 2048: 1.0}, 0.8) is None
    assert effective_length({}, 0.8) is None


@pytest.mark.parametrize(
    "task, family, length",
    [
        ("passkey_1k", "passkey", 1024),
        ("passkey_128k", "passkey", 131072),
        ("niah_mk_4k", "niah_mk", 4096),
        ("passkey_1m", "passkey", 1048576),
        ("niah_512", "niah", 512),
        ("niah_single_1", "niah_single_1", None),  # RULER's built-in names are not lengths
        ("ppl_stdlib", "ppl_stdlib", None),
    ],
)
def test_family_of(task, family, length):
    assert family_of(task) == (family, length)


def test_lengths_parse_and_format_round_trip():
    for text, value in [("4096", 4096), ("4k", 4096), ("1M", 1048576), ("1.5k", 1536), (2048, 2048), (" 2k ", 2048)]:
        assert parse_length(text) == value
    assert [format_length(x) for x in (512, 1000, 4096, 131072, 1048576)] == ["512", "1000", "4k", "128k", "1m"]
    for bad in ("", "abc", "0", "-1k", "1.3", 0, 1.5, True):
        with pytest.raises(ValueError):
            parse_length(bad)


def test_model_args_in_both_layouts():
    assert parse_model_args("pretrained=a/b,dtype=float32") == {"pretrained": "a/b", "dtype": "float32"}
    assert parse_model_args({"pretrained": "x", "max_length": 10}) == {"pretrained": "x", "max_length": "10"}
    assert parse_model_args(None) == {}


def test_short_labels_stay_unique():
    assert _short_names(["/ckpt/a/final", "/ckpt/b/final", "org/model"]) == ["a/final", "b/final", "model"]


def test_model_labels_separate_types_and_args():
    def model(name, model_type, **args):
        return ModelRuns(key=(model_type, tuple(args.items())), name=name, model_type=model_type,
                         model_args={"pretrained": name, **args})

    models = [model("/c/tiny", "infini"), model("/c/tiny", "infini", use_memory="False"), model("/c/tiny", "hf")]
    assign_labels(models)
    labels = [m.label for m in models]
    assert len(set(labels)) == 3
    assert all(label.startswith("tiny") for label in labels)
    assert "use_memory=False" in labels[1] and "hf" in labels[2]
    assert labels[0] == "tiny (infini)"  # the model with default args keeps the bare name (plus its type)


def test_train_length_flag_matches_label_path_or_folder_name():
    from infini_bench.reports.labels import apply_train_lengths

    models = [ModelRuns(key=("hf", ()), name="/ckpt/run1/", model_type="hf", model_args={}, label="run1"),
              ModelRuns(key=("hf", (("x", "1"),)), name="org/other", model_type="hf", model_args={}, label="other")]
    problems: list[str] = []
    apply_train_lengths(models, {"/ckpt/run1": 2048, "org/other": 512, "nope": 1}, problems)
    assert [m.train_length for m in models] == [2048, 512]
    assert models[0].train_length_source == "--train-length"
    assert len(problems) == 1 and "'nope'" in problems[0]


def test_date_id_of_lm_eval_file_names():
    assert date_id_of(Path("results_2024-05-01T12-30-45.123456.json")) == "2024-05-01T12-30-45.123456"
    assert date_id_of(Path("renamed.json")) == ""


def test_cli_argument_parsing():
    assert _train_length("my/model=4k") == ("my/model", 4096)
    assert _threshold("0.9") == pytest.approx(0.9)
    assert _threshold("85%") == pytest.approx(0.85)
    assert _threshold("85") == pytest.approx(0.85)
    args = build_parser().parse_args(["out", "-o", "rep", "--train-length", "m=2k", "--threshold", "70%"])
    assert args.train_length == [("m", 2048)] and args.threshold == pytest.approx(0.7)
    for bad in ("nomodel", "=4k", "m=abc"):
        with pytest.raises(argparse.ArgumentTypeError):
            _train_length(bad)


def test_depth_metric_names_and_position_buckets_parse():
    from infini_bench.reports.formatting import format_bucket
    from infini_bench.tasks.names import parse_bucket_metric, parse_depth_metric

    assert parse_depth_metric("acc_d050") == ("acc", 50.0)
    assert parse_depth_metric("acc_d012p5") == ("acc", 12.5)
    assert parse_depth_metric("ruler_match_d100") == ("ruler_match", 100.0)
    assert parse_depth_metric("acc_stderr") is None and parse_depth_metric("acc") is None
    assert parse_bucket_metric("token_perplexity_pos_1k_2k") == (1024, 2048)
    assert parse_bucket_metric("token_perplexity_pos_0_1k") == (0, 1024)
    assert parse_bucket_metric("token_perplexity_pos_4k_end") == (4096, None)
    assert parse_bucket_metric("token_perplexity") is None
    assert format_bucket(0, 1024) == "0–1k" and format_bucket(4096, None) == "4k–end"


def test_reports_read_back_every_name_the_tasks_write():
    """One naming module: every task name, depth metric and position bucket the tasks write parses back."""
    from infini_bench.reports.grid import family_of
    from infini_bench.reports.formatting import format_length as report_length
    from infini_bench.tasks.names import (
        CONTEXT_LENGTH_NAMES,
        NIAH_VARIANTS,
        bucket_metric,
        depth_metric,
        niah_lengths,
        niah_task,
        parse_bucket_metric,
        parse_depth_metric,
    )

    for length in CONTEXT_LENGTH_NAMES:
        tokens = parse_length(length)
        assert family_of(f"passkey_{length}") == ("passkey", tokens)
        assert family_of(f"niah_{length}") == ("niah", tokens)
        assert report_length(tokens) == length
    for variant in NIAH_VARIANTS:
        for length in niah_lengths(variant):
            assert family_of(niah_task(variant, length)) == (f"niah_{variant}", parse_length(length))
    for score in ("acc", "ruler_match"):
        for depth in (0, 5, 12.5, 33.3, 50, 100):
            assert parse_depth_metric(depth_metric(depth, score)) == (score, pytest.approx(depth))
    for lo, hi in ((0, 1024), (1024, 2048), (4096, None), (1 << 20, None), (1500, 3000)):
        assert parse_bucket_metric(bucket_metric(lo, hi)) == (lo, hi)


def test_headline_and_comparisons_put_the_primary_family_first():
    from infini_bench.tasks.names import PRIMARY_FAMILY, family_sort_key

    families = ["ppl_files", "niah", "niah_multikey_1", "my_task", "niah_single_1", "passkey"]
    assert sorted(families, key=family_sort_key) == [
        PRIMARY_FAMILY, "niah_single_1", "niah_multikey_1", "niah", "my_task", "ppl_files"]


def test_tasks_without_a_grid_are_set_aside_with_a_reason(tmp_path):
    from infini_bench.reports.grid import build_grids
    from infini_bench.reports.records import Sample, TaskResult

    def task(name, metrics, samples=None, metadata=None):
        return TaskResult(name=name, metrics=metrics, stderrs={}, filter="none", config={"metadata": metadata or {}},
                          n_samples=None, results_file=tmp_path / "r.json", date_id="", samples=samples)

    plain = Sample(doc_id=0, doc={"question": "q"}, metrics={"exact_match": 1.0}, prompt_tail="q", prompt_chars=1,
                   needle_context="", needle_char=None, response="a", target="a")
    model = ModelRuns(key=("hf", ()), name="m", model_type="hf", model_args={}, label="m")
    model.tasks = {
        "qa": task("qa", {"exact_match": 1.0}, samples=[plain]),
        # per-depth metrics but several lengths in one task and no samples: no column to put them in
        "niah_mixed": task("niah_mixed", {"acc": 0.5, "acc_d050": 0.5}, metadata={"context_lengths": [1024, 2048]}),
        # per-depth metrics of a single-length task whose length was overridden by --metadata
        "passkey_1k": task("passkey_1k", {"acc": 0.5, "acc_d000": 1.0, "acc_d100": 0.0},
                           metadata={"context_length": 3000}),
    }
    built = build_grids([model])
    assert [t.name for _, t in built.ungridded] == ["qa"]
    (grid,) = built.grids
    assert grid.family == "passkey" and grid.lengths == [3000] and grid.depths == [0.0, 100.0]
    assert any("niah_mixed" in n and "cannot place it" in n for n in built.notes)


@pytest.mark.parametrize(
    "depth, name",
    [(0, "start"), (30, "start"), (33.3, "start"), (100 / 3, "middle"), (50, "middle"), (200 / 3, "middle"),
     (66.7, "end"), (70, "end"), (100, "end")],
)
def test_depth_bins_are_thirds(depth, name):
    assert depth_bin(depth) == name
