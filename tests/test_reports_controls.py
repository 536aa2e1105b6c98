"""The headline's warning about a control that fails at its own training length (reports/controls.py)."""
import pandas as pd
import pytest

from infini_bench.reports.controls import CONSEQUENCE, control_warnings
from infini_bench.reports.grid import CELL_COLUMNS, Grid
from infini_bench.reports.report import ReportError, checked_controls


def _grid(model: str, per_length: dict[int, float], train_length: int | None = 256) -> Grid:
    """A grid of two depths per length, 10 samples per cell, every cell at the length's accuracy."""
    rows = [{"depth": depth, "length": length, "acc": acc, "n": 10, "successes": acc * 10, "ci_low": 0.0,
             "ci_high": 1.0, "source": "samples", "pooled_acc": acc, "seeds": 1, "seed_min": acc, "seed_max": acc,
             "seed_std": 0.0}
            for length, acc in per_length.items() for depth in (0.0, 100.0)]
    return Grid(model=model, family="passkey", metric="acc", tasks=[], cells=pd.DataFrame(rows, columns=CELL_COLUMNS),
                train_length=train_length)


def test_a_control_below_the_threshold_at_its_training_length_is_named_with_its_score():
    grids = [_grid("infini", {256: 1.0, 512: 1.0}), _grid("llama", {256: 0.1, 512: 0.0})]
    (warning,) = control_warnings(grids, ["llama"], threshold=0.8)
    assert (warning["model"], warning["family"], warning["train_length"]) == ("llama", "passkey", 256)
    assert warning["acc"] == pytest.approx(0.1)
    assert "10 % at its training length (256)" in warning["text"] and CONSEQUENCE in warning["text"]


def test_a_control_that_works_at_its_training_length_and_a_model_not_named_a_control_get_no_warning():
    grids = [_grid("llama", {256: 0.95, 512: 0.0}), _grid("memory_off", {256: 0.0, 512: 0.0})]
    assert control_warnings(grids, ["llama"], threshold=0.8) == []


def test_a_control_not_evaluated_at_its_training_length_or_without_one_is_flagged():
    missing = control_warnings([_grid("llama", {512: 1.0})], ["llama"], 0.8)
    assert [w["acc"] for w in missing] == [None] and "not evaluated at its training length" in missing[0]["text"]
    unknown = control_warnings([_grid("llama", {256: 1.0}, train_length=None)], ["llama"], 0.8)
    assert "--train-length llama=N" in unknown[0]["text"]


def test_a_control_name_that_matches_no_model_is_refused_in_one_sentence():
    with pytest.raises(ReportError, match=r"--control 'lama' names no model of this report \(models: llama\)"):
        checked_controls([_grid("llama", {256: 1.0})], ["lama"], 0.8)
