"""Passkey and NIAH tasks: greedy generation, two scores per document, per-depth metrics, documents built lazily.

Every document carries its grid cell (`context_length`, `depth_percent`, `seed`, ...). `process_results` returns
both scores, `acc` (strict) and `ruler_match` (RULER's string_match_all; see `tasks.scoring`): lm-eval's table
shows those two rows per task. The per-depth view lives in the samples log (`--log_samples`: each line holds its
document's depth and scores, which is what the report reads). ``--metadata depth_metrics=true`` adds it to the
results too: for each score every depth metric ``<score>_dNNN``, its value under its own depth, NaN under the
others (lm-eval gathers data-parallel ranks by rank 0's metric names, so every document must carry them all),
aggregated with `mean_of_scored`, which skips the NaNs. Off by default: 42 rows per passkey task, most of them NaN
under ``--limit``, buried the two that matter. With the model arg ``non_finite=invalid`` a document the model
could not score (`infini_bench.invalid`) gets NaN scores, left out of the means, and an ``invalid`` metric counts
the share of such documents.

Documents are built when lm-eval asks for them, not when the task is made: ``--limit N`` builds N documents
(``samples=1000000 --limit 1`` builds one), each cached on disk on its own, with a progress bar while building.
The prompt is built for the way the model receives it: with ``--apply_chat_template`` (and
``--system_instruction``) the chat template's text is part of the prompt, its tokens count in the context length,
and the answer prefix opens the assistant turn (lm-eval's ``gen_prefix``); the template's rendering is taken from
lm-eval itself, so the prompt is exactly what lm-eval would send, never truncated.

Options (``--metadata``; see tasks/README.md): ``context_length`` (overrides the task's length), ``depths`` /
``n_depths``, ``samples`` (per depth), ``seed``, ``n_digits``, ``answer_tokens``, ``haystack`` (``noise``,
``essay``, ``needle``) with ``essays`` (where essay text comes from); NIAH adds RULER's ``type_needle_k``,
``type_needle_v``, ``num_needle_k``, ``num_needle_v``, ``num_needle_q``. Any other key is refused by name.
"""
from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from typing import Any, Iterator

from lm_eval.api.metrics import mean
from tqdm import tqdm

from infini_bench.data.assemble import PromptTooShort
from infini_bench.data.docs import DocPlan, PromptFrame
from infini_bench.data.grid import NIAH_DEPTHS, PASSKEY_DEPTHS, Grid, grid_cell, resolve_depths
from infini_bench.data.haystack import HaystackChoice, haystack_text
from infini_bench.data.niah import plan_niah_docs
from infini_bench.data.passkey import plan_passkey_docs
from infini_bench.data.ruler_niah import RULER_SAMPLES, RULER_SEED, RulerDocPlan
from infini_bench.data.tokens import tokenizer_view
from infini_bench.data.seeds import EVAL_SEED_BASE
from infini_bench.tasks.base_task import InfiniBenchTask, LengthSkipError
from infini_bench.tasks.names import SCORES, depth_metric
from infini_bench.invalid import is_invalid, marks_invalid
from infini_bench.lm_eval_compat import LazyDocsHooks, PromptSettings
from infini_bench.tasks.options import (
    as_length,
    check_option_keys,
    haystack_options,
    model_context,
    read_niah_spec,
    read_passkey_spec,
)
from infini_bench.tasks.protocol import check_ruler_essays, read_protocol, warn_protocol_once
from infini_bench.tasks.scoring import ruler_match, strict_match
from infini_bench.validation import true_or_false, whole_number

log = logging.getLogger(__name__)

DEFAULT_SAMPLES = 5
# Placeholders whose rendering through lm-eval's own prompt code gives a chat template's frame.
_USER_MARK, _PREFIX_MARK = "\ue000INFINI-BENCH-USER\ue000", "\ue001INFINI-BENCH-PREFIX\ue001"


def mean_of_scored(items: list[float]) -> float:
    """Mean over the scored documents: NaN marks another depth's document (per-depth metrics) or a document the
    model could not score (`non_finite=invalid`)."""
    scored = [x for x in items if not math.isnan(x)]
    return sum(scored) / len(scored) if scored else math.nan


class LazyDocs(Sequence):
    """The task's documents as lm-eval sees them (``len``, indexing, iteration, ``features``), built on access."""

    def __init__(self, task: "RetrievalTask") -> None:
        self.task = task

    def __len__(self) -> int:
        return self.task.n_docs

    def __getitem__(self, index: int) -> dict[str, Any]:  # type: ignore[override]
        if not 0 <= index < len(self):
            raise IndexError(index)
        return self.task.doc(index)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return (self.task.doc(i) for i in range(len(self)))

    @property
    def features(self) -> dict[str, None]:
        return dict.fromkeys(("prompt", "answer", "answers", "gen_prefix", "context_length", "depth_percent"))


class RetrievalTask(LazyDocsHooks, InfiniBenchTask):
    """Common options, lazy documents, prompt frames and scoring of passkey and NIAH (lm-eval's document and
    request hooks through `LazyDocsHooks`)."""

    default_depths: tuple[int, ...] = PASSKEY_DEPTHS

    def __init__(
        self,
        data_dir: str | None = None,
        cache_dir: str | None = None,
        download_mode: Any = None,
        config: dict[str, Any] | None = None,
    ) -> None:
        self._built: dict[int, dict[str, Any]] = {}
        self._frame = PromptFrame()
        self._plans: dict[str, DocPlan] = {}
        super().__init__(data_dir=data_dir, cache_dir=cache_dir, download_mode=download_mode, config=config)
        self._ensure([0])  # one document now: a prompt that cannot fit fails here, before any model call

    # -- options ------------------------------------------------------------------------------------------------
    def read_options(self, cfg: dict[str, Any]) -> None:
        md = cfg["metadata"]
        check_option_keys(md, self.task_label)
        length = md.get("context_length")
        if length in (None, ""):
            length = md.get("task_context_length")
        if length in (None, ""):
            raise ValueError(f"{self.task_label}: no context length (task_context_length in the YAML or --metadata)")
        self.context_length = as_length(length, "context_length")
        self.depths = resolve_depths(md.get("depths"), md.get("n_depths"), self.default_depths)
        self.samples = whole_number(md.get("samples", DEFAULT_SAMPLES), "samples")
        self.base_seed = whole_number(md.get("seed", EVAL_SEED_BASE), "seed", minimum=0)
        self.haystack_options = haystack_options(md)
        self.depth_metrics = true_or_false(md.get("depth_metrics", False), "depth_metrics")
        self.mark_invalid = marks_invalid(md)
        self.read_family_options(md)
        self.model = model_context(md, self.task_label)
        self.n_docs = self.count_docs()
        self._plan_for(PromptFrame())  # validates every option now, before any model call
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
            skipped_docs=0,
            depth_metrics=self.depth_metrics,
        )
        if self.model.max_length is not None and self.context_length > self.model.max_length:
            raise LengthSkipError(
                f"{self.task_label}: all {self.n_docs} samples need context_length={self.context_length} tokens but "
                f"the model holds max_length={self.model.max_length}; they are skipped, never truncated. Choose tasks "
                "up to the model's length (e.g. a shorter suite), or pass max_length=... in --model_args if the "
                "model really holds more"
            )

    def read_haystack(self, spec: HaystackChoice) -> None:
        """The spec's `haystack` (a kind) and, for essays from files, their text now: a missing or empty path fails
        here, before any model call."""
        self.haystack = spec.haystack
        if spec.source.kind == "essay" and spec.source.paths:
            haystack_text(spec.source, spec.haystack_options)

    def read_family_options(self, md: dict[str, Any]) -> None:
        raise NotImplementedError

    def count_docs(self) -> int:
        """How many documents the task has (the grid's cells; a task reading a fixed set counts its rows)."""
        return len(self.depths) * self.samples

    def make_plan(self, frame: PromptFrame, add_special_tokens: bool) -> DocPlan:
        raise NotImplementedError

    def grid(self) -> Grid:
        """This length's documents: the depths, the samples per depth and the seeds they are drawn from."""
        return Grid(self.context_length, self.depths, self.samples, self.base_seed)

    # -- documents ----------------------------------------------------------------------------------------------
    def _plan_for(self, frame: PromptFrame) -> DocPlan:
        if frame.fingerprint not in self._plans:
            view = self.model.view_for(frame.before) if frame.before else self.model.view
            self._plans[frame.fingerprint] = self.make_plan(frame, view.add_special_tokens)
        return self._plans[frame.fingerprint]

    def lazy_docs(self) -> LazyDocs:
        return LazyDocs(self)

    def docs_at(self, indices: list[int]) -> list[dict[str, Any]]:
        self._ensure(indices)
        return [self._built[i] for i in indices]

    def doc(self, index: int) -> dict[str, Any]:
        """Document `index` for the current frame (while lm-eval builds the task: its grid cell only)."""
        if self.under_construction:
            sample_index, depth = grid_cell(self.depths, index)
            return {"prompt": "", "answer": "", "context_length": self.context_length, "depth_percent": depth,
                    "sample_index": sample_index}
        if index not in self._built:
            self._ensure([index])
        return self._built[index]

    def _ensure(self, indices: list[int]) -> None:
        """Build (or load from the cache) the documents at `indices`, with a progress bar for more than one."""
        missing = [i for i in indices if i not in self._built]
        if not missing:
            return
        plan = self._plan_for(self._frame)
        started, hits = time.monotonic(), 0
        bar = tqdm(missing, desc=f"{self.task_label}: building documents", disable=len(missing) < 2, leave=False)
        for i in bar:
            try:
                doc, hit = plan.doc(i)
            except PromptTooShort as err:
                raise PromptTooShort(self._too_short(err)) from err
            hits += hit
            self._built[i] = doc
        md = self.config.metadata
        md["docs_built"] = md.get("docs_built", 0) + len(missing) - hits
        md["docs_from_cache"] = md.get("docs_from_cache", 0) + hits
        log.info("%s: %d documents (%d from the cache) in %.1f s", self.task_label, len(missing), hits,
                 time.monotonic() - started)

    def _too_short(self, err: Exception) -> str:
        if self._frame.plain:
            return f"{self.task_label}: {err}"
        overhead = len(self.model.view.raw(self._frame.before + self._frame.between + self._frame.after))
        return (f"{self.task_label}: the chat template adds {overhead} tokens around the prompt and leaves no room "
                f"for the haystack at context_length={self.context_length}: {err}")

    # -- prompts ------------------------------------------------------------------------------------------------
    def use_prompt_settings(self, settings: PromptSettings) -> None:
        """Take the frame (plain, or the chat template and system instruction lm-eval will use) before lm-eval
        asks for documents, so every prompt is built, and measured, the way the model will receive it."""
        frame = self._frame_from(settings)
        if frame != self._frame:
            self._frame, self._built = frame, {}
        if not frame.plain:
            self.config.metadata["prompt_frame"] = {"before": frame.before, "between": frame.between, "after": frame.after}

    def check_prompts(self, settings: PromptSettings) -> None:
        if not self._frame.plain and self._built:
            self._check_frame(next(iter(self._built.values())), settings)

    def _frame_from(self, settings: PromptSettings) -> PromptFrame:
        if not (settings.apply_chat_template and settings.chat_template) and not settings.system_instruction:
            return PromptFrame()
        rendered = self.render_prompt({"prompt": _USER_MARK, "answer": ""}, settings, _PREFIX_MARK)
        if not isinstance(rendered, str) or rendered.count(_USER_MARK) != 1 or rendered.count(_PREFIX_MARK) != 1:
            raise ValueError(f"{self.task_label}: cannot locate the prompt inside the chat template's rendering")
        before, rest = rendered.split(_USER_MARK)
        between, after = rest.split(_PREFIX_MARK)
        return PromptFrame(before, between, after)

    def _check_frame(self, doc: dict[str, Any], settings: PromptSettings) -> None:
        """The first document, rendered by lm-eval itself, must be exactly the prompt built (else the template
        depends on the text and the length would be wrong)."""
        frame, prompt = self._frame, doc["prompt"]
        user = prompt[len(frame.before) : len(prompt) - len(frame.between + doc["gen_prefix"] + frame.after)]
        rendered = self.render_prompt({"prompt": user, "answer": ""}, settings, doc["gen_prefix"])
        if rendered != prompt:
            raise ValueError(
                f"{self.task_label}: the chat template renders the prompt differently from the frame it gave for a "
                "placeholder, so its length cannot be made exact; run without --apply_chat_template"
            )

    def fewshot_context(self, doc: dict[str, Any], num_fewshot: int, **kwargs: Any) -> str:
        return doc["prompt"]  # already the whole prompt, frame included

    def doc_to_text(self, doc: dict[str, Any], doc_to_text: Any = None) -> str:
        return doc.get("prompt", "")

    def doc_to_target(self, doc: dict[str, Any], doc_to_target: Any = None) -> str:
        return doc.get("answer", "")

    def doc_to_prefix(self, doc: dict[str, Any]) -> str | None:
        return doc.get("gen_prefix")

    # -- scoring ------------------------------------------------------------------------------------------------
    def process_results(self, doc: dict[str, Any], results: list[Any]) -> dict[str, float]:
        response = results[0]
        if isinstance(response, (list, tuple)):
            response = response[0]
        response = str(response)
        answers = doc.get("answers") or [doc["answer"]]
        invalid = self.mark_invalid and is_invalid(response)
        scores = {s: math.nan for s in SCORES} if invalid else {
            "acc": strict_match(response, answers, doc.get("type_needle_v", "numbers")),
            "ruler_match": ruler_match(response, answers),
        }
        out = dict(scores)
        if self.mark_invalid:
            out["invalid"] = float(invalid)
        if self.depth_metrics:
            own = float(doc["depth_percent"])
            for score in SCORES:
                for d in self.depths:
                    out[depth_metric(d, score)] = scores[score] if float(d) == own else math.nan
        return out

    def aggregation(self) -> dict[str, Any]:
        # lm-eval's own `mean` keeps its stderr; invalid documents' NaN scores need the NaN-skipping mean
        out: dict[str, Any] = {s: mean_of_scored if self.mark_invalid else mean for s in SCORES}
        if self.mark_invalid:
            out["invalid"] = mean
        if self.depth_metrics:
            out.update({depth_metric(d, s): mean_of_scored for s in SCORES for d in self.depths})
        return out

    def higher_is_better(self) -> dict[str, bool]:
        return {name: name != "invalid" for name in self.aggregation()}


class PasskeyTask(RetrievalTask):
    """`passkey_<len>`: Landmark Attention's passkey prompt at depths 0-100 % in 5 % steps."""

    default_depths = PASSKEY_DEPTHS

    def read_family_options(self, md: dict[str, Any]) -> None:
        self.spec = read_passkey_spec(md)
        self.n_digits, self.answer_tokens = self.spec.n_digits, self.spec.answer_tokens
        self.read_haystack(self.spec)
        if md.get("protocol") not in (None, "", "grid"):
            warn_protocol_once(self.task_label, md["protocol"])
        md["n_digits"] = self.n_digits

    def make_plan(self, frame: PromptFrame, add_special_tokens: bool) -> DocPlan:
        return plan_passkey_docs(self.model.tokenizer, self.spec, self.grid(), frame, add_special_tokens=add_special_tokens)


class NiahTask(RetrievalTask):
    """`niah_<variant>_<len>`: RULER's NIAH variants over the depth x length grid, 11 depths."""

    default_depths = NIAH_DEPTHS

    def read_family_options(self, md: dict[str, Any]) -> None:
        self.variant = str(md.get("task_variant", "single_1"))
        self.spec = read_niah_spec(md, self.variant, self.context_length)
        self.n_digits, self.answer_tokens = self.spec.n_digits, self.spec.answer_tokens
        self.read_haystack(self.spec)
        self.protocol = read_protocol(md, self.task_label)
        if self.protocol == "ruler":  # RULER's defaults: 500 documents per length, seed 42, RULER's essays
            self.samples = whole_number(md.get("samples", RULER_SAMPLES), "samples")
            self.base_seed = whole_number(md.get("seed", RULER_SEED), "seed", minimum=0)
            check_ruler_essays(self.task_label, self.spec.source)
        md.update(n_digits=self.n_digits, haystack=self.haystack, protocol=self.protocol)

    def count_docs(self) -> int:
        """protocol=ruler: `samples` documents per length (RULER's num_samples), binned by their drawn depth."""
        return self.samples if self.protocol == "ruler" else super().count_docs()

    def make_plan(self, frame: PromptFrame, add_special_tokens: bool) -> DocPlan:
        if self.protocol == "ruler":
            view = tokenizer_view(self.model.tokenizer, add_special_tokens)
            return RulerDocPlan(view, self.spec, self.grid(), frame)  # type: ignore[return-value]
        return plan_niah_docs(self.model.tokenizer, self.spec, self.grid(), frame, add_special_tokens=add_special_tokens)
