"""Read what lm-eval wrote: ``results_*.json`` files and their ``samples_<task>_<date>.jsonl`` logs.

Only files are read here; the model and the tasks are never imported (only the tasks' naming module), so a report
can be built on a machine that has neither. Every problem with the input (missing folder, a file that is not lm-eval output, a truncated JSONL
line) becomes a human-readable line in ``Loaded.problems`` and the rest of the input is still used.
"""
from __future__ import annotations

import json
import os
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from infini_bench.tasks.names import parse_length

#: lm-eval names output files with ``datetime.now().isoformat().replace(":", "-")``.
DATE_ID_RE = re.compile(r"(\d{4}-\d{2}-\d{2}T\d{2}-\d{2}-\d{2}(?:\.\d+)?)$")

#: Model arguments that change how a model runs, not which model it is; they do not split one model into two.
RUNTIME_ARGS = frozenset(
    {"device", "batch_size", "max_batch_size", "parallelize", "trust_remote_code", "device_map", "use_cache"}
)

#: Characters of the prompt kept per sample (the tail is what the question and the needle context look like).
PROMPT_TAIL_CHARS = 600
NEEDLE_CONTEXT_CHARS = 160


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
    models: list[ModelRuns]
    problems: list[str]
    results_files: list[Path]


def parse_model_args(model_args: Any) -> dict[str, str]:
    """``config.model_args`` is a dict when given as JSON and a ``k=v,k=v`` string otherwise; return a str dict."""
    if isinstance(model_args, dict):
        return {str(k): str(v) for k, v in model_args.items()}
    out: dict[str, str] = {}
    if isinstance(model_args, str):
        for part in model_args.split(","):
            if "=" in part:
                key, value = part.split("=", 1)
                out[key.strip()] = value.strip()
    return out


def split_metric_key(key: str) -> tuple[str, str]:
    """``"acc_d050,none"`` -> ``("acc_d050", "none")``; keys without a filter get filter ``""``."""
    name, _, filt = key.partition(",")
    return name, filt


def _metrics_for_filter(entry: dict[str, Any]) -> tuple[str, dict[str, float], dict[str, float]]:
    """Pick one filter (``none`` if present, else the first one seen) and return its metrics and stderrs."""
    filters: list[str] = []
    for key, value in entry.items():
        if "," in key and isinstance(value, (int, float)) and not isinstance(value, bool):
            filt = split_metric_key(key)[1]
            if filt not in filters:
                filters.append(filt)
    chosen = "none" if "none" in filters else (filters[0] if filters else "none")
    metrics: dict[str, float] = {}
    stderrs: dict[str, float] = {}
    for key, value in entry.items():
        if "," not in key or isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        name, filt = split_metric_key(key)
        if filt != chosen:
            continue
        if name.endswith("_stderr"):
            stderrs[name[: -len("_stderr")]] = float(value)
        else:
            metrics[name] = float(value)
    return chosen, metrics, stderrs


def date_id_of(path: Path) -> str:
    """The ``<datetime>`` lm-eval appended to a results file's name, or ``""`` if the file was renamed."""
    m = DATE_ID_RE.search(path.stem)
    return m.group(1) if m else ""


def is_results_json(data: Any) -> bool:
    """lm-eval results files carry both ``results`` and ``configs`` dicts; our own summary.json does not."""
    return isinstance(data, dict) and isinstance(data.get("results"), dict) and isinstance(data.get("configs"), dict)


def _read_json(path: Path, problems: list[str]) -> Any | None:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        problems.append(f"{path}: not valid JSON ({e.msg} at line {e.lineno}); file skipped")
    except (OSError, UnicodeDecodeError) as e:
        problems.append(f"{path}: cannot be read ({e}); file skipped")
    return None


def _prompt_of(arguments: Any) -> str:
    """The prompt (first argument of the first request) from lm-eval's ``arguments`` field, in either layout."""
    first: Any = None
    if isinstance(arguments, dict) and arguments:
        first = next(iter(arguments.values()))
        if isinstance(first, dict) and first:
            first = next(iter(first.values()))
    elif isinstance(arguments, list) and arguments:
        first = arguments[0]
        if isinstance(first, list) and first:
            first = first[0]
    return first if isinstance(first, str) else ("" if first is None else str(first))


def _response_of(filtered: Any) -> str:
    while isinstance(filtered, list) and filtered:
        filtered = filtered[0]
    if isinstance(filtered, list):
        return ""
    return filtered if isinstance(filtered, str) else json.dumps(filtered)


def _small_doc(doc: Any) -> dict[str, Any]:
    """Keep the scalar doc fields that are short (grid coordinates, answer, seed); drop haystacks and long text."""
    if not isinstance(doc, dict):
        return {}
    out: dict[str, Any] = {}
    for key, value in doc.items():
        if isinstance(value, (bool, int, float)) or value is None:
            out[key] = value
        elif isinstance(value, str) and len(value) <= 200:
            out[key] = value
        elif isinstance(value, list) and len(value) <= 20 and all(
            isinstance(v, (str, int, float)) and len(str(v)) <= 100 for v in value
        ):
            out[key] = value
    return out


def _needle_context(prompt: str, doc: dict[str, Any]) -> tuple[str, int | None]:
    """Where the answer sits in the prompt, with some text around it, so a reader sees the needle itself."""
    answer = doc.get("answer")
    if not isinstance(answer, str) or not answer.strip():
        answers = doc.get("answers")
        answer = str(answers[0]) if isinstance(answers, list) and answers else None
    if not answer:
        return "", None
    where = prompt.find(answer)
    if where < 0:
        return "", None
    lo, hi = max(0, where - NEEDLE_CONTEXT_CHARS), where + len(answer) + NEEDLE_CONTEXT_CHARS
    return ("…" if lo else "") + prompt[lo:hi] + ("…" if hi < len(prompt) else ""), where


def read_samples(path: Path, filter_name: str, problems: list[str]) -> list[Sample]:
    """Read a samples JSONL log line by line; broken lines (a truncated write) are reported and skipped."""
    samples: list[Sample] = []
    bad: list[int] = []
    other_filters = 0
    try:
        f = open(path, encoding="utf-8", errors="replace")
    except OSError as e:
        problems.append(f"{path}: cannot be read ({e}); samples not used")
        return samples
    with f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                bad.append(lineno)
                continue
            if not isinstance(rec, dict):
                bad.append(lineno)
                continue
            if rec.get("filter", filter_name) != filter_name:
                other_filters += 1
                continue
            names = rec.get("metrics") if isinstance(rec.get("metrics"), list) else []
            metrics = {
                str(k): float(rec[k])
                for k in names
                if isinstance(rec.get(k), (int, float)) and not isinstance(rec.get(k), bool)
            }
            prompt = _prompt_of(rec.get("arguments"))
            doc = _small_doc(rec.get("doc"))
            context, where = _needle_context(prompt, doc)
            samples.append(
                Sample(
                    doc_id=int(rec["doc_id"]) if str(rec.get("doc_id", "")).isdigit() else len(samples),
                    doc=doc,
                    metrics=metrics,
                    prompt_tail=prompt[-PROMPT_TAIL_CHARS:],
                    prompt_chars=len(prompt),
                    needle_context=context,
                    needle_char=where,
                    response=_response_of(rec.get("filtered_resps")),
                    target=str(rec.get("target", "")),
                )
            )
    if bad:
        shown = ", ".join(str(n) for n in bad[:5]) + (" ..." if len(bad) > 5 else "")
        problems.append(
            f"{path}: {len(bad)} line(s) are not valid JSON (truncated file?), skipped: line {shown}; "
            f"the other {len(samples)} sample(s) are used"
        )
    return samples


def _find_samples_file(results_file: Path, task: str, date_id: str) -> Path | None:
    """``samples_<task>_<date_id>.jsonl`` next to the results file; if the results file was renamed, a lone match."""
    folder = results_file.parent
    if date_id:
        exact = folder / f"samples_{task}_{date_id}.jsonl"
        if exact.is_file():
            return exact
        return None
    candidates = [p for p in folder.glob(f"samples_{glob_escape(task)}_*.jsonl") if DATE_ID_RE.search(p.stem)]
    candidates = [p for p in candidates if p.stem[len("samples_") : -len(date_id_of(p)) - 1] == task]
    return candidates[0] if len(candidates) == 1 else None


def glob_escape(text: str) -> str:
    return re.sub(r"([*?\[\]])", r"[\1]", text)


def model_identity(data: dict[str, Any]) -> tuple[str, str, dict[str, str]]:
    """(model name, model type, model args) from a results file: ``model_name`` first, then ``pretrained``."""
    config = data.get("config") if isinstance(data.get("config"), dict) else {}
    model_args = parse_model_args(config.get("model_args"))
    model_type = str(config.get("model") or data.get("model_source") or "model")
    name = data.get("model_name")
    if not isinstance(name, str) or not name:
        for key in ("peft", "delta", "pretrained", "model", "path", "engine"):
            if model_args.get(key):
                name = model_args[key]
                break
        else:
            name = model_type
    return name, model_type, model_args


def _train_length_from(data: dict[str, Any], model_args: dict[str, str]) -> tuple[int | None, str | None]:
    """A ``train_length`` (or ``training_length``) given in model args or in any task's merged metadata."""
    keys = ("train_length", "training_length")
    for key in keys:
        if key in model_args:
            try:
                return parse_length(model_args[key]), f"model_args {key}"
            except ValueError:
                pass
    for task, cfg in (data.get("configs") or {}).items():
        meta = cfg.get("metadata") if isinstance(cfg, dict) else None
        if isinstance(meta, dict):
            for key in keys:
                if key in meta:
                    try:
                        return parse_length(meta[key]), f"metadata {key} of {task}"
                    except ValueError:
                        pass
    return None, None


def collect_results_files(inputs: Iterable[str | Path], problems: list[str]) -> list[Path]:
    """Expand folders (recursively) into lm-eval results JSON files; say clearly what each bad input was."""
    files: list[Path] = []
    for raw in inputs:
        path = Path(raw)
        if not path.exists():
            problems.append(f"{path}: no such file or folder")
            continue
        if path.is_dir():
            found = []
            for candidate in sorted(path.rglob("*.json")):
                if not candidate.is_file():
                    continue
                if candidate.name.startswith("results_") or DATE_ID_RE.search(candidate.stem):
                    found.append(candidate)
            if not found:
                problems.append(f"{path}: no lm-eval results file (results_*.json) in this folder")
            files.extend(found)
        elif path.suffix == ".jsonl" and path.name.startswith("samples_"):
            date_id = date_id_of(path)
            siblings = [p for p in path.parent.glob("*.json") if date_id and date_id_of(p) == date_id]
            if siblings:
                files.extend(siblings)
            else:
                problems.append(f"{path}: a samples log without its results_*.json next to it; pass the results file")
        else:
            files.append(path)
    unique: list[Path] = []
    seen: set[Path] = set()
    for f in files:
        resolved = f.resolve()
        if resolved not in seen:
            seen.add(resolved)
            unique.append(f)
    return unique


def load(inputs: Iterable[str | Path], train_lengths: dict[str, int] | None = None) -> Loaded:
    """Load every results file under ``inputs`` with its samples logs, merged per model.

    The same model evaluated in several lm-eval runs (e.g. one run per context length) becomes one entry; when the
    same task appears in more than one run of a model, the newest run wins and the older one is reported. A label
    given to several inputs (``NAME=PATH NAME=PATH2``) marks seed replicates: each input is one run of NAME, kept
    apart (`ModelRuns.run`), and the report pools them.
    """
    problems: list[str] = []
    files: list[Path] = []
    seen: set[Path] = set()
    given: dict[Path, str] = {}  # results file -> the label its input named
    labelled = [split_label(raw) for raw in inputs]
    repeated = {label for label, count in Counter(lab for lab, _ in labelled if lab).items() if count > 1}
    replicate_of: dict[Path, tuple[str, int]] = {}  # results file -> (label, input index) for seed replicates
    for index, (label, raw) in enumerate(labelled):
        for path in collect_results_files([raw], problems):
            if path.resolve() not in seen:
                seen.add(path.resolve())
                files.append(path)
            if label:
                given[path.resolve()] = label
            if label in repeated:
                replicate_of.setdefault(path.resolve(), (label, index))
    models: dict[tuple, ModelRuns] = {}
    used_files: list[Path] = []
    parsed: list[tuple[str, Path, dict[str, Any]]] = []
    for path in files:
        data = _read_json(path, problems)
        if data is None:
            continue
        if not is_results_json(data):
            problems.append(f"{path}: not an lm-eval results file (no 'results' and 'configs'); skipped")
            continue
        parsed.append((date_id_of(path) or str(data.get("date", "")), path, data))
    # Oldest first, so a newer run of the same task replaces an older one.
    parsed.sort(key=lambda item: item[0])
    for date_id, path, data in parsed:
        used_files.append(path)
        name, model_type, model_args = model_identity(data)
        ident = tuple(sorted((k, v) for k, v in model_args.items() if k not in RUNTIME_ARGS))
        key = (model_type, ident if ident else (("name", name),))
        if path.resolve() in replicate_of:  # one run of a replicated label: never merged with another input's
            key = ("replicate", replicate_of[path.resolve()], key)
        model = models.get(key)
        if model is None:
            model = models[key] = ModelRuns(key=key, name=name, model_type=model_type, model_args=model_args)
        model.results_files.append(path)
        if model.train_length is None:
            model.train_length, model.train_length_source = _train_length_from(data, model_args)
        configs = data["configs"]
        group_names = set((data.get("group_subtasks") or {}).keys())
        n_samples = data.get("n-samples") or {}
        for task, entry in data["results"].items():
            if not isinstance(entry, dict):
                continue
            filt, metrics, stderrs = _metrics_for_filter(entry)
            count = n_samples.get(task, {}).get("effective") if isinstance(n_samples.get(task), dict) else None
            result = TaskResult(
                name=task,
                metrics=metrics,
                stderrs=stderrs,
                filter=filt,
                config=configs.get(task) if isinstance(configs.get(task), dict) else {},
                n_samples=int(count) if isinstance(count, (int, float)) else None,
                results_file=path,
                date_id=date_id_of(path),
            )
            if task in group_names or task not in configs:
                model.groups[task] = result
                continue
            samples_file = _find_samples_file(path, task, result.date_id)
            if samples_file is not None:
                result.samples = read_samples(samples_file, filt, problems)
                result.samples_file = samples_file
            if task in model.tasks:
                old = model.tasks[task]
                problems.append(
                    f"{name}: task {task} appears in {old.results_file} and in the newer {path}; the newer one is used"
                )
            model.tasks[task] = result
    ordered = list(models.values())
    assign_labels(ordered)
    runs = group_replicates(ordered, [str(raw) for _, raw in labelled], problems)
    apply_given_labels([m for m in ordered if id(m) not in runs], given)
    apply_train_lengths(ordered, train_lengths or {}, problems)
    return Loaded(models=ordered, problems=problems, results_files=used_files)


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
        keys = sorted({k for m in same for k in m.model_args if k not in RUNTIME_ARGS and k != "pretrained"})
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
