"""Write every task YAML of this folder (the way lm-eval's ``tasks/mmlu/_generate_configs.py`` writes its family).

    python tasks/_generate_configs.py            # rewrite the YAMLs (and delete stale ones) under tasks/
    python tasks/_generate_configs.py --check    # exit 1 when a committed YAML differs from what this writes

The tables below are the single source of the task list: lengths from `names.CONTEXT_LENGTH_NAMES`, RULER's NIAH
variants from `names.NIAH_VARIANTS`. ``tests/test_tasks_units.py`` checks that the committed files equal this
script's output.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

try:
    from infini_bench.tasks.names import CONTEXT_LENGTH_NAMES, NIAH_VARIANTS, SCORES, niah_lengths, niah_task, parse_length
except ImportError:  # run as a script from a checkout without the package installed
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from names import CONTEXT_LENGTH_NAMES, NIAH_VARIANTS, SCORES, niah_lengths, niah_task, parse_length  # type: ignore

HERE = Path(__file__).resolve().parent
FOLDERS = ("passkey", "passkey_nanotron", "niah", "ppl", "suites")
HEADER = "# Written by tasks/_generate_configs.py; edit that script, not this file.\n"
VERSION = "2.0"  # passkey and NIAH: Landmark's and RULER's prompts
PPL_VERSION = "1.0"

RETRIEVAL_BASE = """\
class: !function infini_bench.tasks.{cls}
output_type: generate_until
test_split: test
doc_to_text: prompt  # the whole prompt (the task builds it, chat template and answer prefix included)
doc_to_target: answer
num_fewshot: 0
generation_kwargs:
  until: []  # no stop string: an answer that starts with a newline is not cut to "" (RULER: no stop)
  do_sample: false
  temperature: 0.0
  max_gen_toks: {max_gen_toks}  # replaced by the answer budget (answer_tokens) when the task is built
metric_list:  # ruler_match is added by the task class; per-depth <score>_dNNN too with --metadata depth_metrics=true
  - metric: acc
    aggregation: mean
    higher_is_better: true
"""

PPL_BASE = """\
class: !function infini_bench.tasks.perplexity_task.PerplexityTask
output_type: loglikelihood_rolling
test_split: test
doc_to_text: ""
doc_to_target: name  # the samples log's `target`: the document's name (its text is already in `doc` and the requests)
num_fewshot: 0
metric_list:  # token_perplexity and the position buckets are added by the task class
  - metric: word_perplexity
    aggregation: weighted_perplexity
    higher_is_better: false
  - metric: byte_perplexity
    aggregation: weighted_perplexity
    higher_is_better: false
  - metric: bits_per_byte
    aggregation: bits_per_byte
    higher_is_better: false
"""

PPL_TASKS = {
    "ppl_stdlib": {"task_source": "stdlib", "task_min_doc_tokens": 4096},
    "ppl_files": {"task_source": "files", "glob_requires": "files"},
    "ppl_pg19": {"task_source": "pg19", "explicit_only": "true"},
}
PPL_COMMENTS = {
    "glob_requires": "  # a --tasks glob selects this task only when --metadata names files=[...]",
    "explicit_only": "  # needs the hub: only selected by its exact name, never by a --tasks glob",
}


def _task(
    base: str, name: str, metadata: dict[str, object], comment: str, version: str = VERSION,
    comments: dict[str, str] | None = None,
) -> str:
    lines = [f"# {comment}", f"include: {base}", f"task: {name}", "metadata:", f"  version: {version}"]
    for key, value in metadata.items():
        lines.append(f"  {key}: {value}{(comments or {}).get(key, '')}")
    return HEADER + "\n".join(lines) + "\n"


def _group(name: str, members: list[str], metrics: tuple[str, ...], comment: str, version: str = VERSION,
           weighted: bool = True) -> str:
    """A group YAML; `weighted`: the mean over all documents (else the plain mean of the members' scores)."""
    lines = [f"# {comment}", f"group: {name}", "task:", *[f"  - {m}" for m in members], "aggregate_metric_list:"]
    for metric in metrics:
        lines += [f"  - metric: {metric}", "    aggregation: mean", f"    weight_by_size: {str(weighted).lower()}"]
    lines += ["metadata:", f"  version: {version}"]
    return HEADER + "\n".join(lines) + "\n"


def generate() -> dict[str, str]:
    """Relative path -> content of every YAML this folder should hold."""
    files: dict[str, str] = {
        "passkey/_passkey_base.yaml": HEADER
        + "# Shared settings of the passkey_<len> tasks (no `task:` key, so lm-eval does not index this file as a task).\n"
        + RETRIEVAL_BASE.format(cls="retrieval_task.PasskeyTask", max_gen_toks=16),
        "passkey_nanotron/_passkey_nanotron_base.yaml": HEADER
        + "# Shared settings of the passkey_nanotron_<len> tasks (no `task:` key: not a task itself).\n"
        + RETRIEVAL_BASE.format(cls="passkey_nanotron_task.NanotronPasskeyTask", max_gen_toks=15),
        "niah/_niah_base.yaml": HEADER
        + "# Shared settings of the niah_<variant>_<len> tasks (no `task:` key: not a task itself).\n"
        + RETRIEVAL_BASE.format(cls="retrieval_task.NiahTask", max_gen_toks=128),
        "ppl/_ppl_base.yaml": HEADER
        + "# Shared settings of the ppl_* tasks (no `task:` key, so lm-eval does not index this file as a task).\n"
        + PPL_BASE,
    }
    for length in CONTEXT_LENGTH_NAMES:
        tokens = parse_length(length)
        files[f"passkey/passkey_{length}.yaml"] = _task(
            "_passkey_base.yaml", f"passkey_{length}", {"task_context_length": tokens},
            f"Passkey retrieval (Landmark Attention's prompt) at {tokens} tokens.",
        )
        files[f"passkey_nanotron/passkey_nanotron_{length}.yaml"] = _task(
            "_passkey_nanotron_base.yaml", f"passkey_nanotron_{length}",
            {"task_context_length": tokens, "glob_prefix": "passkey_nanotron_"},
            f"nanotron's Infini-attention passkey protocol (generate_data.py's prompt, or their sets) at {tokens} tokens.",
            comments={"glob_prefix": "  # a --tasks glob selects it only when it starts so: passkey_* stays Landmark's"},
        )
        files[f"niah/niah_{length}.yaml"] = _task(
            "_niah_base.yaml", f"niah_{length}",
            {"task_context_length": tokens, "task_variant": "single_1", "explicit_only": "true"},
            f"The older name of niah_single_1_{length}, kept for older commands (same documents).",
            comments={"explicit_only": "  # only by its exact name: a --tasks glob selects niah_single_1_* instead"},
        )
        for variant in (v for v in NIAH_VARIANTS if length in niah_lengths(v)):
            files[f"niah/{niah_task(variant, length)}.yaml"] = _task(
                "_niah_base.yaml", niah_task(variant, length), {"task_context_length": tokens, "task_variant": variant},
                f"RULER's niah_{variant} at {tokens} tokens, over the depth grid.",
            )
    for name, metadata in PPL_TASKS.items():
        files[f"ppl/{name}.yaml"] = _task(
            "_ppl_base.yaml", name, metadata, f"Long-context perplexity: {name}.", PPL_VERSION, PPL_COMMENTS
        )
    for i, length in enumerate(CONTEXT_LENGTH_NAMES):
        upto = CONTEXT_LENGTH_NAMES[: i + 1]
        files[f"suites/infinibench_passkey_upto_{length}.yaml"] = _group(
            f"infinibench_passkey_upto_{length}", [f"passkey_{n}" for n in upto], SCORES,
            f"Passkey at every length up to {length} tokens; scores averaged over all samples.",
        )
        files[f"suites/infinibench_niah_upto_{length}.yaml"] = _group(
            f"infinibench_niah_upto_{length}", [niah_task(v, n) for n in upto for v in NIAH_VARIANTS if n in niah_lengths(v)], SCORES,
            f"Every NIAH variant at every length from 256 up to {length} tokens, pooled over all documents: a "
            f"cross-length summary, not RULER's per-length average (that is infinibench_niah_<len>).",
        )
        if all(length in niah_lengths(v) for v in NIAH_VARIANTS):
            files[f"suites/infinibench_niah_{length}.yaml"] = _group(
                f"infinibench_niah_{length}", [niah_task(v, length) for v in NIAH_VARIANTS], SCORES,
                f"RULER's NIAH average at {length} tokens: the plain mean of the eight variants' scores (what RULER "
                "reports per length).", weighted=False,
            )
    files["suites/infinibench_ppl.yaml"] = _group(
        "infinibench_ppl", ["ppl_stdlib"], ("token_perplexity", "bits_per_byte"),
        "The offline perplexity set (standard-library eval split). Add ppl_files / ppl_pg19 by name.", PPL_VERSION,
    )
    return files


def stale(root: Path = HERE) -> list[Path]:
    """YAML files in the task folders this script does not write."""
    wanted = {root / path for path in generate()}
    return sorted(p for folder in FOLDERS for p in (root / folder).glob("*.yaml") if p not in wanted)


def differences(root: Path = HERE) -> list[str]:
    """Relative paths whose committed content differs from `generate()` (missing, changed or stale)."""
    out = [path for path, text in generate().items() if not (root / path).is_file() or (root / path).read_text() != text]
    return sorted(out + [str(p.relative_to(root)) for p in stale(root)])


def write(root: Path = HERE) -> int:
    """Write every YAML and delete stale ones; returns how many files changed."""
    changed = differences(root)
    for path in stale(root):
        path.unlink()
    for path, text in generate().items():
        target = root / path
        target.parent.mkdir(parents=True, exist_ok=True)
        if not target.is_file() or target.read_text() != text:
            target.write_text(text)
    return len(changed)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="only compare; exit 1 when a file differs")
    args = parser.parse_args(argv)
    if args.check:
        diff = differences()
        for path in diff:
            print(f"differs: {path}")
        return 1 if diff else 0
    print(f"{write()} file(s) changed under {HERE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
