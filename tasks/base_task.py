"""Shared lm-eval task plumbing: YAML `class:` tasks whose documents come from `infini_bench.data` builders.

lm-eval hands a `class: !function ...` task the raw YAML dict (the `class` key included) with the merged metadata
(YAML `metadata`, all of `--model_args`, all of `--metadata`). The task reads its options from that metadata,
builds (or loads from the cache) its documents in `download`, and records in `metadata` how many documents were
skipped and why, so the results JSON keeps the count. (The passkey and NIAH tasks build their documents one at a
time as lm-eval asks for them, through `infini_bench.lm_eval_compat.LazyDocsHooks`; see `retrieval_task`.) What
lm-eval expects of an overridden hook is stated in `infini_bench.lm_eval_compat`.
"""
from __future__ import annotations

import logging
from typing import Any

import datasets
from lm_eval.api.task import ConfigurableTask

from infini_bench.lm_eval_compat import set_test_docs

log = logging.getLogger(__name__)


class LengthSkipError(ValueError):
    """Every document of a task is longer than the model can hold."""


class InfiniBenchTask(ConfigurableTask):
    """A ConfigurableTask whose dataset is built by `build_docs` from options read in `read_options`."""

    def __init__(
        self,
        data_dir: str | None = None,
        cache_dir: str | None = None,
        download_mode: Any = None,
        config: dict[str, Any] | None = None,
    ) -> None:
        cfg = {k: v for k, v in dict(config or {}).items() if k != "class"}
        cfg["metadata"] = dict(cfg.get("metadata") or {})
        self.task_label = str(cfg.get("task", type(self).__name__))
        self.read_options(cfg)
        super().__init__(data_dir=data_dir, cache_dir=cache_dir, download_mode=download_mode, config=cfg)

    # -- to override --------------------------------------------------------------------------------------------
    def read_options(self, cfg: dict[str, Any]) -> None:
        """Validate options from cfg["metadata"] (raising early, naming the value) and adjust cfg."""
        raise NotImplementedError

    def build_docs(self) -> tuple[list[dict[str, Any]], bool]:
        """(documents, whether they came from the on-disk cache)."""
        raise NotImplementedError

    def after_build(self, docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Hook to filter or inspect documents once built; returns the documents to evaluate."""
        return docs

    # -- lm-eval hooks ------------------------------------------------------------------------------------------
    def download(self, dataset_kwargs: dict[str, Any] | None = None, **kwargs: Any) -> None:
        """Build (or read from the cache) every document: lm-eval's constructor calls this (`set_test_docs`)."""
        docs, from_cache = self.build_docs()
        log.info("%s: %d documents (%s)", self.task_label, len(docs), "from cache" if from_cache else "built")
        docs = self.after_build(docs)
        self.config.metadata["docs_from_cache"] = bool(from_cache)
        set_test_docs(self, datasets.Dataset.from_list(docs))
