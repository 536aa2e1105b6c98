"""Names shared by the task YAMLs, the metrics and the reports: context lengths, depth and position metrics.

Lengths are binary: ``1k`` = 1024 tokens, ``1m`` = 1024**2 tokens. Task names: ``passkey_<len>`` and
``niah_<variant>_<len>`` with RULER's variant names (``niah_single_1_4k`` is RULER's ``niah_single_1`` at 4096
tokens). Depth metrics are ``<score>_dNNN`` for both scores (``acc``, ``ruler_match``) with the depth in percent
zero-padded to three digits (``acc_d000``, ``ruler_match_d050``, ``acc_d100``; a fractional depth such as 12.5 is
``acc_d012p5``). Position buckets are ``token_perplexity_pos_<lo>_<hi>`` with lo/hi written like lengths
(``token_perplexity_pos_0_1k``, ``token_perplexity_pos_1k_2k``; a bucket past the last user edge ends in ``end``).
"""
from __future__ import annotations

KILO = 1024
MEGA = 1024 * 1024

CONTEXT_LENGTH_NAMES: tuple[str, ...] = ("256", "512", "1k", "2k", "4k", "8k", "16k", "32k", "64k", "128k", "256k", "512k", "1m")
#: RULER's NIAH variants (NVIDIA/RULER scripts/synthetic.yaml), in RULER's order; task ``niah_<variant>_<len>``.
NIAH_VARIANTS: tuple[str, ...] = (
    "single_1", "single_2", "single_3", "multikey_1", "multikey_2", "multikey_3", "multivalue", "multiquery"
)
#: Variants with several needles or UUIDs have no 256-token task: their needles, question and answer budget alone
#: fill 256 tokens of a small tokenizer. The others start at the shortest length.
NIAH_SHORTEST: dict[str, str] = {
    "single_3": "512", "multikey_1": "512", "multikey_3": "512", "multivalue": "512", "multiquery": "512"
}
#: The two scores every passkey and NIAH document gets.
SCORES: tuple[str, ...] = ("acc", "ruler_match")
SUITE_PREFIX = "infinibench"


def parse_length(name: str) -> int:
    """Tokens in a length name: "4k" -> 4096, "1m" -> 1048576, "300" -> 300."""
    text = str(name).strip().lower()
    try:
        if text.endswith("k"):
            return int(text[:-1]) * KILO
        if text.endswith("m"):
            return int(text[:-1]) * MEGA
        return int(text)
    except ValueError:
        raise ValueError(f"not a length: {name!r} (expected e.g. 4k, 1m or a number of tokens)") from None


def format_length(tokens: int) -> str:
    """A length written the short way: 0 -> "0", 2048 -> "2k", 1048576 -> "1m", 1500 -> "1500"."""
    tokens = int(tokens)
    if tokens and tokens % MEGA == 0:
        return f"{tokens // MEGA}m"
    if tokens and tokens % KILO == 0:
        return f"{tokens // KILO}k"
    return str(tokens)


def depth_metric(depth_percent: float, score: str = "acc") -> str:
    """Per-depth metric name: 50 -> "acc_d050", 12.5 -> "acc_d012p5", (50, "ruler_match") -> "ruler_match_d050"."""
    depth = float(depth_percent)
    if depth.is_integer():
        return f"{score}_d{int(depth):03d}"
    whole, frac = f"{depth:.6f}".rstrip("0").split(".")
    return f"{score}_d{int(whole):03d}p{frac}"


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
