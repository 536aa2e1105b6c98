"""Haystacks, needles and corpora: one set of builders serves the lm-eval tasks and the trainer.

This package knows nothing of lm-eval. Lengths are exact in the model's own tokens (special tokens included, as
the tokenizer adds them by default); builds are deterministic in (tokenizer, parameters, seed) and cached on disk
(``$INFINI_BENCH_CACHE``, see `cache`).

Seed rule (see `seeds`): evaluation documents use seeds with bit 62 set (``is_eval_seed(seed)``), derived from the
base seed ``EVAL_SEED_BASE`` = 1234 and the grid cell; training must use seeds below 2**62
(``check_training_seed``), so it can never generate an evaluation document.

Corpus split (see `corpus`): ``stdlib_files("train")`` for training, ``stdlib_files("eval")`` for ``ppl_stdlib``,
by a hash of each file's path relative to the standard library.
"""
from infini_bench.data.assemble import AssembledPrompt, Needle, PromptTooShort, Span
from infini_bench.data.cache import CACHE_ENV, cache_root
from infini_bench.data.corpus import stdlib_files, stdlib_prose, stdlib_split_of
from infini_bench.data.docs import DocPlan, PromptFrame
from infini_bench.data.grid import NIAH_DEPTHS, PASSKEY_DEPTHS, Cell, Grid, grid_order, resolve_depths, spread_order
from infini_bench.data.haystack import FILLER, HAYSTACK_KINDS, Haystack, HaystackError, haystack_spec, load_haystack
from infini_bench.data.niah import VARIANTS as NIAH_VARIANTS
from infini_bench.data.niah import NiahSpec, build_niah_docs, build_niah_sample, niah_spec, plan_niah_docs
from infini_bench.data.passkey import (
    PasskeySpec,
    build_passkey_docs,
    build_passkey_sample,
    passkey_for_seed,
    plan_passkey_docs,
)
from infini_bench.data.perplexity import PerplexitySourceError, build_ppl_doc, build_ppl_docs, default_edges
from infini_bench.data.seeds import EVAL_SEED_BASE, EVAL_SEED_FLAG, check_training_seed, eval_doc_seed, is_eval_seed
from infini_bench.data.tokens import TokenizerError, TokenizerView, load_tokenizer, tokenizer_view

__all__ = [
    "AssembledPrompt",
    "DocPlan",
    "CACHE_ENV",
    "Cell",
    "EVAL_SEED_BASE",
    "EVAL_SEED_FLAG",
    "FILLER",
    "Grid",
    "HAYSTACK_KINDS",
    "Haystack",
    "HaystackError",
    "NIAH_DEPTHS",
    "NIAH_VARIANTS",
    "Needle",
    "NiahSpec",
    "PASSKEY_DEPTHS",
    "PasskeySpec",
    "PerplexitySourceError",
    "PromptFrame",
    "PromptTooShort",
    "Span",
    "TokenizerError",
    "TokenizerView",
    "build_niah_docs",
    "build_niah_sample",
    "build_passkey_docs",
    "build_passkey_sample",
    "build_ppl_doc",
    "build_ppl_docs",
    "cache_root",
    "check_training_seed",
    "default_edges",
    "eval_doc_seed",
    "grid_order",
    "haystack_spec",
    "is_eval_seed",
    "load_haystack",
    "load_tokenizer",
    "niah_spec",
    "passkey_for_seed",
    "plan_niah_docs",
    "plan_passkey_docs",
    "resolve_depths",
    "spread_order",
    "stdlib_files",
    "stdlib_prose",
    "stdlib_split_of",
    "tokenizer_view",
]
