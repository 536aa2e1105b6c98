"""Long-context perplexity tasks (`loglikelihood_rolling`), with perplexity by position.

Requests: one rolling request per nested prefix of a document, cut at the bucket edges (1K, 2K, 4K, ... tokens),
plus the whole document. lm-eval groups a document's requests by doc id and passes their results to
`process_results` in request order, so bucket [lo, hi) gets ``LL(prefix_hi) - LL(prefix_lo)`` over ``hi - lo``
tokens. This is exact for models that stream the whole document (`--model infini`) and for lm-eval's `hf` model
whenever the edges are multiples of its window (`max_length`, e.g. 2048 or 4096) or lie inside the first window,
because `hf` scores disjoint windows aligned at the document start. Cost: about twice the document's tokens.
Every prefix is re-tokenised when the documents are built, so a prefix's tokens are the document's first tokens.

Metrics: `token_perplexity`, `word_perplexity`, `byte_perplexity`, `bits_per_byte` and
`token_perplexity_pos_<lo>_<hi>`, all aggregated over tokens/words/bytes (lm-eval's `weighted_perplexity` and
`bits_per_byte`). Documents are never skipped for length: `hf` handles long ones with its windows; the count of
documents longer than the model's `max_length` is recorded as `docs_longer_than_max_length`. With the model arg
`non_finite=invalid`, a document the model could not score (a NaN log-likelihood) weighs nothing in any metric and
`invalid` gives the share of such documents (a metric of only invalid documents is NaN).
"""
from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from lm_eval.api.instance import Instance
from lm_eval.api.metrics import bits_per_byte, mean, weighted_perplexity

from infini_bench.data.perplexity import build_ppl_docs
from infini_bench.invalid import is_invalid, marks_invalid
from infini_bench.tasks.base_task import InfiniBenchTask
from infini_bench.tasks.names import WHOLE_DOC_PERPLEXITY, bucket_metric
from infini_bench.tasks.options import as_length, as_list, check_option_keys, model_context
from infini_bench.validation import whole_number

WHOLE_DOC_METRICS = WHOLE_DOC_PERPLEXITY


def of_valid(aggregate: Callable[[list], float]) -> Callable[[list], float]:
    """`aggregate` over the (value, weight) items of the valid documents: NaN when every document was invalid
    (their items weigh 0, and lm-eval's own aggregations would divide by zero)."""

    def over_valid(items: list) -> float:
        return aggregate(items) if sum(weight for _, weight in items) > 0 else math.nan

    return over_valid


def bucket_names(doc: dict[str, Any], user_edges: bool) -> list[str]:
    """Metric names of a document's position buckets, in order."""
    nominal = [0, *doc["prefix_nominal"]]
    names = []
    for i, lo in enumerate(nominal):
        if i + 1 < len(nominal):
            hi: int | None = nominal[i + 1]
        elif user_edges:
            hi = None
        else:
            hi = max(lo * 2, 1024)
        names.append(bucket_metric(lo, hi))
    return names


class PerplexityTask(InfiniBenchTask):
    """`ppl_stdlib`, `ppl_files`, `ppl_pg19`: the source comes from the YAML's `task_source`."""

    def read_options(self, cfg: dict[str, Any]) -> None:
        md = cfg["metadata"]
        check_option_keys(md, self.task_label)
        self.source = str(md.get("task_source", "stdlib"))
        self.doc_tokens = None if md.get("doc_tokens") in (None, "") else as_length(md["doc_tokens"], "doc_tokens")
        default_min = md.get("task_min_doc_tokens", 0)
        self.min_doc_tokens = whole_number(md.get("min_doc_tokens", default_min), "min_doc_tokens", minimum=0)
        self.max_docs = None if md.get("max_docs") in (None, "") else whole_number(md["max_docs"], "max_docs")
        edges = md.get("bucket_edges")
        self.user_edges = edges not in (None, "")
        self.bucket_edges = [as_length(e, "bucket_edges") for e in as_list(edges)] if self.user_edges else None
        self.source_options = {k: md[k] for k in ("files", "pg19_dataset", "pg19_split") if md.get(k) not in (None, "")}
        self.model = model_context(md, self.task_label)
        self.mark_invalid = marks_invalid(md)
        self.bucket_metric_names: list[str] = []
        md.update(
            doc_tokens=self.doc_tokens,
            min_doc_tokens=self.min_doc_tokens,
            max_docs=self.max_docs,
            model_max_length=self.model.max_length,
        )

    def build_docs(self) -> tuple[list[dict[str, Any]], bool]:
        return build_ppl_docs(
            self.model.view,
            self.source,
            self.source_options,
            self.bucket_edges,
            self.doc_tokens,
            self.min_doc_tokens,
            self.max_docs,
        )

    def after_build(self, docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        names: dict[str, None] = {}
        for doc in docs:
            names.update(dict.fromkeys(bucket_names(doc, self.user_edges)))
        self.bucket_metric_names = list(names)
        limit = self.model.max_length
        self.config.metadata["docs_longer_than_max_length"] = sum(
            1 for d in docs if limit is not None and d["n_tokens"] > limit
        )
        return docs

    def construct_requests(self, doc: dict[str, Any], ctx: Any, **kwargs: Any) -> list[Instance]:
        kwargs.pop("apply_chat_template", None)
        kwargs.pop("chat_template", None)
        text = doc["text"]
        pieces = [text[:cut] for cut in doc["prefix_chars"]] + [text]
        return [
            Instance(request_type="loglikelihood_rolling", doc=doc, arguments=(piece,), idx=i, **kwargs)
            for i, piece in enumerate(pieces)
        ]

    def process_results(self, doc: dict[str, Any], results: list[Any]) -> dict[str, tuple[float, int]]:
        lls = [float(r[0] if isinstance(r, (list, tuple)) else r) for r in results]
        if self.mark_invalid and any(is_invalid(ll) for ll in lls):  # weighs nothing anywhere
            names = [*WHOLE_DOC_METRICS, "bits_per_byte", *bucket_names(doc, self.user_edges)]
            return {**{name: (0.0, 0) for name in names}, "invalid": 1.0}
        total = lls[-1]
        text = doc["text"]
        out: dict[str, tuple[float, int]] = {
            "token_perplexity": (total, int(doc["n_tokens"])),
            "word_perplexity": (total, self.count_words(text)),
            "byte_perplexity": (total, self.count_bytes(text)),
            "bits_per_byte": (total, self.count_bytes(text)),
        }
        edges = [0, *doc["prefix_tokens"], int(doc["n_tokens"])]
        cumulative = [0.0, *lls]
        for i, name in enumerate(bucket_names(doc, self.user_edges)):
            out[name] = (cumulative[i + 1] - cumulative[i], edges[i + 1] - edges[i])
        if self.mark_invalid:
            out["invalid"] = 0.0
        return out

    def aggregation(self) -> dict[str, Any]:
        perplexity, per_byte = weighted_perplexity, bits_per_byte
        if self.mark_invalid:
            perplexity, per_byte = of_valid(weighted_perplexity), of_valid(bits_per_byte)
        out: dict[str, Any] = {
            **{name: perplexity for name in WHOLE_DOC_METRICS},
            "bits_per_byte": per_byte,
            **{name: perplexity for name in self.bucket_metric_names},
        }
        if self.mark_invalid:
            out["invalid"] = mean
        return out

    def higher_is_better(self) -> dict[str, bool]:
        return {name: False for name in self.aggregation()}
