"""Read what lm-eval wrote: ``results_*.json`` files and their ``samples_<task>_<date>.jsonl`` logs.

Only files are read here; the model and the tasks are never imported (only the tasks' naming module), so a report
can be built on a machine that has neither. Every problem with the input (missing folder, a file that is not lm-eval output, a truncated JSONL
line) becomes a human-readable line in ``Loaded.problems`` and the rest of the input is still used. Which model a
file belongs to and what to call it is `labels.py`'s to decide; the records filled here are in `records.py`.
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Iterable

from infini_bench.tasks.names import parse_length

from .labels import ModelKey, label_models, model_key, replicated_labels, split_label
from .records import Loaded, ModelRuns, Sample, TaskResult

#: lm-eval names output files with ``datetime.now().isoformat().replace(":", "-")``.
DATE_ID_RE = re.compile(r"(\d{4}-\d{2}-\d{2}T\d{2}-\d{2}-\d{2}(?:\.\d+)?)$")

#: Characters of the prompt kept per sample (the tail is what the question and the needle context look like).
PROMPT_TAIL_CHARS = 600
NEEDLE_CONTEXT_CHARS = 160


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
    repeated = replicated_labels(label for label, _ in labelled)
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
    models: dict[ModelKey, ModelRuns] = {}
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
        key = model_key(model_type, name, model_args)
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
    label_models(ordered, [str(raw) for _, raw in labelled], given, train_lengths or {}, problems)
    return Loaded(models=ordered, problems=problems, results_files=used_files)



