"""Which model each results file belongs to, what to call it, and which models are seed replicates of one.

`loading.py` reads the files; this module decides identity and names: results files whose model type and
identifying model args agree are one model (the rule of `infini_bench.model_args`, the same the harness's
``--use_cache`` check keeps); each model gets a short unique label (its path's tail, then what tells it apart);
``NAME=PATH`` on the command line names the models under PATH; a NAME given to several inputs marks seed
replicates, one run per input.
"""
from __future__ import annotations

import os
import re
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

from infini_bench.model_args import identifying_args

from .records import ModelRuns

#: A model's identity: its type and identifying args (or its name when it has none); a seed replicate's key also
#: holds its label and input index, so runs of one label are never merged.
ModelKey = tuple


def model_key(model_type: str, name: str, model_args: dict[str, str]) -> ModelKey:
    """Results files with one key are one model: one model type and the same identifying args, or, with none of
    those, the same name."""
    ident = tuple(identifying_args(model_args).items())
    return (model_type, ident if ident else (("name", name),))


def replicated_labels(labels: Iterable[str | None]) -> set[str]:
    """The labels named for more than one input: each such input is one seed replicate of the label."""
    return {label for label, count in Counter(label for label in labels if label).items() if count > 1}


def label_models(models: list[ModelRuns], inputs: list[str], given: dict[Path, str],
                 train_lengths: dict[str, int], problems: list[str]) -> None:
    """Name every model in place: derived labels, then seed replicates' label and run, then the labels given on
    the command line (replicates keep theirs), then ``--train-length`` overrides."""
    assign_labels(models)
    runs = group_replicates(models, inputs, problems)
    apply_given_labels([m for m in models if id(m) not in runs], given)
    apply_train_lengths(models, train_lengths, problems)


def split_label(raw: str | Path) -> tuple[str | None, str | Path]:
    """``NAME=PATH`` names the model(s) found under PATH; anything else (or an existing path holding "=") is a path."""
    text = str(raw)
    name, sep, path = text.partition("=")
    if sep and name and path and "/" not in name and not Path(text).exists():
        return name, path
    return None, raw


def group_replicates(models: list[ModelRuns], inputs: list[str], problems: list[str]) -> set[int]:
    """Seed replicates: a label given to several inputs names one model, one run per input. Each run gets the
    label and a run name (the part of its input path that differs from the others'); returns the ids of the
    models so grouped. An input holding several models cannot be one run: its label's models stay apart, as
    for a label given once, and the problem is reported."""
    by_label: dict[str, dict[int, list[ModelRuns]]] = {}
    for model in models:
        if model.key[0] == "replicate":
            label, index = model.key[1]
            by_label.setdefault(label, {}).setdefault(index, []).append(model)
    grouped: set[int] = set()
    for label, per_input in by_label.items():
        crowded = {index: found for index, found in per_input.items() if len(found) > 1}
        if crowded:
            index, found = next(iter(crowded.items()))
            problems.append(
                f"{label}={inputs[index]}: holds {len(found)} models ({', '.join(m.label for m in found)}); a label "
                f"given to several inputs marks seed replicates, one model per input, so {label}'s models are "
                "kept apart (give each model folder its own NAME=PATH)"
            )
            continue
        indices = sorted(per_input)
        kinds = sorted({per_input[i][0].model_type for i in indices})
        if len(kinds) > 1:
            problems.append(f"{label}: its runs are different kinds of model ({', '.join(kinds)}); pooled as seed "
                            "replicates all the same, as the repeated label asks")
        names = run_names([inputs[i] for i in indices])
        for index, run in zip(indices, names):
            (model,) = per_input[index]
            model.label, model.run = label, run
            grouped.add(id(model))
            for task in model.tasks.values():
                for sample in task.samples or []:
                    sample.run = run
    return grouped


def run_names(paths: list[str]) -> list[str]:
    """Short names for the runs of one model: each path without the parts all of them share at the start and at
    the end (``s0/eval/infini``, ``s1/eval/infini`` -> ``s0``, ``s1``); ``run N`` where nothing differs."""
    parts = [[p for p in re.split(r"[/\\]+", os.path.normpath(path)) if p] for path in paths]
    shortest = min((len(p) for p in parts), default=0)
    head = 0
    while head < shortest and len({tuple(p[: head + 1]) for p in parts}) == 1:
        head += 1
    tail = 0
    while tail < shortest - head and len({p[len(p) - tail - 1] for p in parts}) == 1:
        tail += 1
    names = ["/".join(p[head : len(p) - tail]) for p in parts]
    if len(set(names)) < len(names) or not all(names):
        return [f"run {i + 1}" for i in range(len(paths))]
    return names


def apply_given_labels(models: list[ModelRuns], given: dict[Path, str]) -> None:
    """Labels named on the command line win over the derived ones; a name given to several models keeps the
    derived label beside it, so labels stay unique."""
    named = {}
    for model in models:
        labels = {given.get(path.resolve()) for path in model.results_files}
        if len(labels) == 1 and None not in labels:
            named[id(model)] = labels.pop()
    counts = Counter(named.values())
    for model in models:
        label = named.get(id(model))
        if label:
            model.label = label if counts[label] == 1 else f"{label} ({model.label})"


def _short_names(names: list[str]) -> list[str]:
    """Shortest trailing path parts that keep the names apart: ``/ckpt/a/final`` vs ``/ckpt/b/final`` -> ``a/final``."""
    parts = [[p for p in re.split(r"[/\\]+", n) if p] or [n] for n in names]
    depth = [1] * len(names)
    while True:
        shown = ["/".join(p[-d:]) for p, d in zip(parts, depth)]
        owners: dict[str, set[str]] = {}
        for s, n in zip(shown, names):
            owners.setdefault(s, set()).add(n)
        clashes = {s for s, who in owners.items() if len(who) > 1}  # the same model name is not a clash
        grow = [i for i, s in enumerate(shown) if s in clashes and depth[i] < len(parts[i])]
        if not grow:
            return shown
        for i in grow:
            depth[i] += 1


def assign_labels(models: list[ModelRuns]) -> None:
    """Give every model a short unique display label (path tail, then model type, then differing model args)."""
    labels = _short_names([m.name for m in models])
    for model, label in zip(models, labels):
        model.label = label
    by_label: dict[str, list[ModelRuns]] = {}
    for model in models:
        by_label.setdefault(model.label, []).append(model)
    for same in by_label.values():
        if len(same) < 2:
            continue
        keys = sorted({k for m in same for k in identifying_args(m.model_args) if k != "pretrained"})
        for model in same:
            extras = [model.model_type] if len({m.model_type for m in same}) > 1 else []
            extras += [  # only the args this model sets: the one with the defaults keeps the bare name
                f"{k}={model.model_args[k]}"
                for k in keys
                if k in model.model_args and len({m.model_args.get(k) for m in same}) > 1
            ]
            model.label = f"{model.label} ({', '.join(extras)})" if extras else model.label
    seen: dict[str, int] = {}
    for model in models:  # last resort: identical in everything we can see
        if model.label in seen:
            seen[model.label] += 1
            model.label = f"{model.label} #{seen[model.label]}"
        else:
            seen[model.label] = 1


def apply_train_lengths(models: list[ModelRuns], given: dict[str, int], problems: list[str]) -> None:
    """``--train-length MODEL=N`` overrides what the files say; MODEL may be the label, full name or basename."""
    for key, length in given.items():
        wanted = {key, os.path.normpath(key)}
        matched = [
            m
            for m in models
            if wanted & {m.label, m.name, os.path.normpath(m.name), os.path.basename(os.path.normpath(m.name))}
        ]
        if not matched:
            known = ", ".join(m.label for m in models) or "none loaded"
            problems.append(f"--train-length {key}={length}: no model called {key!r} (models: {known})")
        for m in matched:
            m.train_length, m.train_length_source = length, "--train-length"
