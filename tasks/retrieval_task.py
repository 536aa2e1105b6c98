"""Passkey and NIAH tasks: greedy generation, scored by the numbers in the answer, with per-depth metrics.

Every document carries its grid cell (`context_length`, `depth_percent`, `seed`, ...). `process_results` returns
`acc` and every depth metric `acc_dNNN`: its score under its own depth, NaN under the others. lm-eval gathers
data-parallel ranks by rank 0's metric names, so every document must carry them all; the depth metrics then
aggregate with `mean_of_scored`, which skips the NaNs (lm-eval reports their stderr as N/A; the report computes
Wilson intervals per cell from the samples).

Options (``--metadata``; see tasks/README.md): ``context_length`` (overrides the task's length), ``depths`` /
``n_depths``, ``samples`` (per depth), ``seed``, ``n_digits``, ``answer_tokens``, ``haystack`` and
``haystack_files``; NIAH adds ``num_distractors`` and ``num_values``.
"""
from __future__ import annotations

import logging
import math
from typing import Any

from lm_eval.api.metrics import mean

from infini_bench.data.grid import NIAH_DEPTHS, PASSKEY_DEPTHS, resolve_depths
from infini_bench.data.niah import VARIANTS, build_niah_docs, default_answer_tokens
from infini_bench.data.passkey import build_passkey_docs
from infini_bench.data.seeds import EVAL_SEED_BASE
from infini_bench.tasks.base_task import InfiniBenchTask, LengthSkipError
from infini_bench.tasks.names import depth_metric
from infini_bench.tasks.options import as_int, as_length, haystack_options, model_context
from infini_bench.tasks.scoring import all_values_recalled, first_integer_matches

log = logging.getLogger(__name__)

DEFAULT_SAMPLES = 5


def mean_of_scored(items: list[float]) -> float:
    """Mean over the documents at this depth (the NaNs are the other depths' documents)."""
    scored = [x for x in items if not math.isnan(x)]
    return sum(scored) / len(scored) if scored else math.nan


class RetrievalTask(InfiniBenchTask):
    """Common options, skipping and scoring of passkey and NIAH."""

    default_depths: tuple[int, ...] = PASSKEY_DEPTHS

    def read_options(self, cfg: dict[str, Any]) -> None:
        md = cfg["metadata"]
        length = md.get("context_length")
        if length in (None, ""):
            length = md.get("task_context_length")
        if length in (None, ""):
            raise ValueError(f"{self.task_label}: no context length (task_context_length in the YAML or --metadata)")
        self.context_length = as_length(length, "context_length")
        self.depths = resolve_depths(md.get("depths"), md.get("n_depths"), self.default_depths)
        self.samples = as_int(md.get("samples", DEFAULT_SAMPLES), "samples")
        self.base_seed = as_int(md.get("seed", EVAL_SEED_BASE), "seed", minimum=0)
        self.haystack = str(md.get("haystack", "filler"))
        self.haystack_options = haystack_options(md)
        self.read_family_options(md)
        self.model = model_context(md, self.task_label)
        gen = dict(cfg.get("generation_kwargs") or {})
        gen["max_gen_toks"] = self.answer_tokens
        cfg["generation_kwargs"] = gen
        md.update(
            context_length=self.context_length,
            depths=self.depths,
            samples=self.samples,
            seed=self.base_seed,
            answer_tokens=self.answer_tokens,
            model_max_length=self.model.max_length,
        )
        if self.model.max_length is not None and self.context_length > self.model.max_length:
            raise LengthSkipError(
                f"{self.task_label}: all {len(self.depths) * self.samples} samples need context_length="
                f"{self.context_length} tokens but the model holds max_length={self.model.max_length}; they are "
                "skipped, never truncated. Choose tasks up to the model's length (e.g. a shorter suite), or pass "
                "max_length=... in --model_args if the model really holds more"
            )

    def read_family_options(self, md: dict[str, Any]) -> None:
        raise NotImplementedError

    def after_build(self, docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        limit = self.model.max_length
        kept = [d for d in docs if limit is None or d["context_length"] <= limit]
        skipped = len(docs) - len(kept)
        self.config.metadata["skipped_docs"] = skipped
        if skipped:
            log.warning("%s: skipped %d documents longer than max_length=%s", self.task_label, skipped, limit)
        return kept

    def is_correct(self, doc: dict[str, Any], response: str) -> bool:
        return first_integer_matches(response, doc["answer"])

    def process_results(self, doc: dict[str, Any], results: list[Any]) -> dict[str, float]:
        response = results[0]
        if isinstance(response, (list, tuple)):
            response = response[0]
        score = 1.0 if self.is_correct(doc, str(response)) else 0.0
        own = depth_metric(doc["depth_percent"])
        return {"acc": score, **{name: score if name == own else math.nan for name in map(depth_metric, self.depths)}}

    def aggregation(self) -> dict[str, Any]:
        return {"acc": mean, **{depth_metric(d): mean_of_scored for d in self.depths}}

    def higher_is_better(self) -> dict[str, bool]:
        return {"acc": True, **{depth_metric(d): True for d in self.depths}}


class PasskeyTask(RetrievalTask):
    """`passkey_<len>`: the classic passkey prompt at depths 0-100 % in 5 % steps."""

    default_depths = PASSKEY_DEPTHS

    def read_family_options(self, md: dict[str, Any]) -> None:
        self.n_digits = as_int(md.get("n_digits", 5), "n_digits")
        self.answer_tokens = as_int(md.get("answer_tokens", max(16, self.n_digits + 8)), "answer_tokens")
        md["n_digits"] = self.n_digits

    def build_docs(self) -> tuple[list[dict[str, Any]], bool]:
        return build_passkey_docs(
            self.model.view,
            self.context_length,
            self.depths,
            self.samples,
            self.base_seed,
            self.n_digits,
            self.answer_tokens,
            self.haystack,
            self.haystack_options,
        )


class NiahTask(RetrievalTask):
    """`niah_<len>`, `niah_multikey_<len>`, `niah_multivalue_<len>`: key -> value needles, 11 depths."""

    default_depths = NIAH_DEPTHS

    def read_family_options(self, md: dict[str, Any]) -> None:
        self.variant = str(md.get("task_variant", "single"))
        if self.variant not in VARIANTS:
            raise ValueError(f"{self.task_label}: unknown NIAH variant {self.variant!r}; choose one of {VARIANTS}")
        self.n_digits = as_int(md.get("n_digits", 7), "n_digits")
        self.num_distractors = as_int(md.get("num_distractors", 3), "num_distractors", minimum=0)
        self.num_values = as_int(md.get("num_values", 4), "num_values")
        default_budget = default_answer_tokens(self.variant, self.n_digits, self.num_values)
        self.answer_tokens = as_int(md.get("answer_tokens", default_budget), "answer_tokens")
        md.update(n_digits=self.n_digits, num_distractors=self.num_distractors, num_values=self.num_values)

    def build_docs(self) -> tuple[list[dict[str, Any]], bool]:
        return build_niah_docs(
            self.model.view,
            self.context_length,
            self.depths,
            self.samples,
            self.base_seed,
            self.variant,
            self.n_digits,
            self.num_distractors,
            self.num_values,
            self.answer_tokens,
            self.haystack,
            self.haystack_options,
        )

    def is_correct(self, doc: dict[str, Any], response: str) -> bool:
        if doc["variant"] == "multivalue":
            return all_values_recalled(response, doc["answers"])
        return first_integer_matches(response, doc["answer"])
