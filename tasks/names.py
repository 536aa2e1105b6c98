"""The one home of this project's names: context lengths, task names, task families and metric names.

The tasks write these names and the reports read them back, both through this module (it imports nothing beyond
the standard library, so ``infini-bench report`` can use it without lm-eval, torch or transformers).

Lengths are binary: ``1k`` = 1024 tokens, ``1m`` = 1024**2 tokens. Task names: ``passkey_<len>`` and
``niah_<variant>_<len>`` with RULER's variant names (``niah_single_1_4k`` is RULER's ``niah_single_1`` at 4096
tokens); a task's family is its name without the length (``passkey``, ``niah_single_1``). Depth metrics are
``<score>_dNNN`` for both scores (``acc``, ``ruler_match``) with the depth in percent zero-padded to three digits
(``acc_d000``, ``ruler_match_d050``, ``acc_d100``; a fractional depth such as 12.5 is ``acc_d012p5``). Position
buckets are ``token_perplexity_pos_<lo>_<hi>`` with lo/hi written like lengths (``token_perplexity_pos_0_1k``,
``token_perplexity_pos_1k_2k``; a bucket past the last user edge ends in ``end``).
"""
from __future__ import annotations

import re

KILO = 1024
MEGA = 1024 * 1024

CONTEXT_LENGTH_NAMES: tuple[str, ...] = ("256", "512", "1k", "2k", "4k", "8k", "16k", "32k", "64k", "128k", "256k", "512k", "1m")
#: The one table of RULER's NIAH variants (NVIDIA/RULER scripts/synthetic.yaml), in RULER's order, each with its
#: arguments there that differ from `infini_bench.data.niah.NiahSpec`'s defaults (word keys, number values, one
#: needle of each); task ``niah_<variant>_<len>``. It lives here, standard library only, so the reports can read the
#: variant names; the data side builds each variant's spec from it (`infini_bench.data.niah.VARIANTS`).
NIAH_VARIANT_ARGS: dict[str, dict[str, str | int]] = {
    "single_1": {"haystack": "noise"},
    "single_2": {"haystack": "essay"},
    "single_3": {"haystack": "essay", "type_needle_v": "uuids"},
    "multikey_1": {"haystack": "essay", "num_needle_k": 4},
    "multikey_2": {"haystack": "needle"},
    "multikey_3": {"haystack": "needle", "type_needle_k": "uuids", "type_needle_v": "uuids"},
    "multivalue": {"haystack": "essay", "num_needle_v": 4},
    "multiquery": {"haystack": "essay", "num_needle_q": 4},
}
NIAH_VARIANTS: tuple[str, ...] = tuple(NIAH_VARIANT_ARGS)
#: Variants with several needles or UUIDs have no 256-token task: their needles, question and answer budget alone
#: fill 256 tokens of a small tokenizer. The others start at the shortest length.
NIAH_SHORTEST: dict[str, str] = {
    "single_3": "512", "multikey_1": "512", "multikey_3": "512", "multivalue": "512", "multiquery": "512"
}
#: The two scores every passkey and NIAH document gets.
SCORES: tuple[str, ...] = ("acc", "ruler_match")
#: The third score of the passkey_nanotron family: nanotron's rule, the generation contains the key.
NANOTRON_SCORE = "nanotron_match"
SUITE_PREFIX = "infinibench"

#: The primary family: a report's headline starts with it.
PRIMARY_FAMILY = "passkey"
#: The retrieval families in the order a report and a task list show them: passkey, nanotron's passkey protocol,
#: RULER's NIAH variants in RULER's order, then ``niah`` (the older name of ``niah_single_1``).
RETRIEVAL_FAMILIES: tuple[str, ...] = (PRIMARY_FAMILY, "passkey_nanotron", *(f"niah_{v}" for v in NIAH_VARIANTS), "niah")

#: Whole-document perplexity metrics of the perplexity tasks, and all their metrics (plus the position buckets).
WHOLE_DOC_PERPLEXITY: tuple[str, ...] = ("token_perplexity", "word_perplexity", "byte_perplexity")
PERPLEXITY_METRICS: tuple[str, ...] = (*WHOLE_DOC_PERPLEXITY, "bits_per_byte")

_LENGTH_RE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([kKmM]?)\s*")
#: A length written at the end of a task name: a number with k/m, or a bare number of at least three digits (so
#: the ``_1`` of RULER's ``niah_single_1`` is not a length).
_LENGTH_SUFFIX_RE = re.compile(r"^(?P<family>.+?)_(?P<length>\d+(?:\.\d+)?[kKmM]|\d{3,})$")
_DEPTH_METRIC_RE = re.compile(r"^(?P<score>.+)_d(?P<depth>\d{3})(?:p(?P<frac>\d+))?$")
_BUCKET_PART = r"\d+(?:\.\d+)?[kKmM]?"
_BUCKET_RE = re.compile(rf"^token_perplexity_pos_(?P<lo>{_BUCKET_PART})_(?P<hi>{_BUCKET_PART}|end)$")


def parse_length(name: str | int | float) -> int:
    """Tokens in a length: "4k" -> 4096, "1m" -> 1048576, "1.5k" -> 1536, "300" or 300 -> 300.

    A length is a positive whole number of tokens; anything else raises ValueError naming the text."""
    if isinstance(name, (int, float)) and not isinstance(name, bool):
        if name != int(name) or name <= 0:
            raise ValueError(f"not a length: {name!r} (a positive whole number of tokens)")
        return int(name)
    m = _LENGTH_RE.fullmatch(str(name))
    if not m:
        raise ValueError(f"not a length: {name!r} (expected e.g. 4k, 1m or a number of tokens)")
    value = float(m.group(1)) * {"": 1, "k": KILO, "m": MEGA}[m.group(2).lower()]
    if value <= 0 or value != int(value):
        raise ValueError(f"not a length: {name!r} (a positive whole number of tokens)")
    return int(value)


def format_length(tokens: int) -> str:
    """A length written the short way: 0 -> "0", 2048 -> "2k", 1048576 -> "1m", 1500 -> "1500"."""
    tokens = int(tokens)
    if tokens and tokens % MEGA == 0:
        return f"{tokens // MEGA}m"
    if tokens and tokens % KILO == 0:
        return f"{tokens // KILO}k"
    return str(tokens)


def split_task_name(task: str) -> tuple[str, int | None]:
    """A task's family and length: "passkey_4k" -> ("passkey", 4096), "niah_single_1_4k" -> ("niah_single_1",
    4096); a name without a length suffix ("ppl_stdlib", RULER's "niah_single_1") is its own family, length None."""
    m = _LENGTH_SUFFIX_RE.match(task)
    if not m:
        return task, None
    try:
        return m.group("family"), parse_length(m.group("length"))
    except ValueError:
        return task, None


def family_sort_key(family: str) -> tuple[int, str]:
    """Order of families in task lists and reports: `RETRIEVAL_FAMILIES` first, in that order, then by name."""
    if family in RETRIEVAL_FAMILIES:
        return RETRIEVAL_FAMILIES.index(family), family
    return len(RETRIEVAL_FAMILIES), family


def depth_metric(depth_percent: float, score: str = "acc") -> str:
    """Per-depth metric name: 50 -> "acc_d050", 12.5 -> "acc_d012p5", (50, "ruler_match") -> "ruler_match_d050"."""
    depth = float(depth_percent)
    if depth.is_integer():
        return f"{score}_d{int(depth):03d}"
    whole, frac = f"{depth:.6f}".rstrip("0").split(".")
    return f"{score}_d{int(whole):03d}p{frac}"


def parse_depth_metric(name: str) -> tuple[str, float] | None:
    """The inverse of `depth_metric`: "acc_d050" -> ("acc", 50.0), "ruler_match_d012p5" -> ("ruler_match", 12.5);
    None for any other metric name ("acc", "acc_stderr")."""
    m = _DEPTH_METRIC_RE.match(name)
    if not m:
        return None
    return m.group("score"), float(f"{int(m.group('depth'))}.{m.group('frac') or 0}")


def niah_lengths(variant: str) -> tuple[str, ...]:
    """The length names a NIAH variant has tasks for."""
    first = CONTEXT_LENGTH_NAMES.index(NIAH_SHORTEST.get(variant, CONTEXT_LENGTH_NAMES[0]))
    return CONTEXT_LENGTH_NAMES[first:]


def niah_task(variant: str, length: str) -> str:
    """Task name of a RULER variant at a length name: ("single_1", "4k") -> "niah_single_1_4k"."""
    return f"niah_{variant}_{length}"


def bucket_metric(lo: int, hi: int | None) -> str:
    """Position-bucket perplexity metric name; `hi=None` means "to the end of the document"."""
    return f"token_perplexity_pos_{format_length(lo)}_{'end' if hi is None else format_length(hi)}"


def parse_bucket_metric(name: str) -> tuple[int, int | None] | None:
    """The inverse of `bucket_metric`: "token_perplexity_pos_1k_2k" -> (1024, 2048), "..._4k_end" -> (4096, None);
    None for any other metric name."""
    m = _BUCKET_RE.match(name)
    if not m:
        return None
    try:
        lo = 0 if m.group("lo") == "0" else parse_length(m.group("lo"))
        hi = None if m.group("hi") == "end" else parse_length(m.group("hi"))
    except ValueError:
        return None
    return lo, hi
