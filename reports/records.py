"""What a report knows about its input: the records `loading.py` fills from lm-eval's files and `labels.py` names.

Apart from both so that reading files (`loading.py`) and deciding which model a file belongs to and what to call
it (`labels.py`) can each import the records without importing each other.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class Sample:
    """The few fields of one logged lm-eval sample a report needs (prompts can be megabytes; only a tail is kept)."""

    doc_id: int
    doc: dict[str, Any]
    metrics: dict[str, float]
    prompt_tail: str
    prompt_chars: int
    needle_context: str  # the prompt around the first occurrence of the answer ("" when it does not occur)
    needle_char: int | None
    response: str
    target: str
    run: str | None = None  # which run of its model label (seed replicates only)


@dataclass
class TaskResult:
    """One task of one results file: aggregated metrics (for the chosen filter), its config and, if logged, samples."""

    name: str
    metrics: dict[str, float]
    stderrs: dict[str, float]
    filter: str
    config: dict[str, Any]
    n_samples: int | None
    results_file: Path
    date_id: str
    samples: list[Sample] | None = None
    samples_file: Path | None = None


@dataclass
class ModelRuns:
    """Everything loaded for one model (one model type + identifying model args), merged over results files."""

    key: tuple[str, tuple[tuple[str, str], ...]]
    name: str
    model_type: str
    model_args: dict[str, str]
    results_files: list[Path] = field(default_factory=list)
    tasks: dict[str, TaskResult] = field(default_factory=dict)
    groups: dict[str, TaskResult] = field(default_factory=dict)
    train_length: int | None = None
    train_length_source: str | None = None
    label: str = ""
    run: str | None = None  # seed replicates: which run of the label (the part of its input path that differs)

    @property
    def display(self) -> str:
        """The label, and for a seed replicate its run: ``infini [seed1]``."""
        return self.label if self.run is None else f"{self.label} [{self.run}]"


@dataclass
class Loaded:
    """What `loading.load` read: the models (merged over results files and labelled), every problem met on the
    way as one line each, and the results files used."""

    models: list[ModelRuns]
    problems: list[str]
    results_files: list[Path]
