"""`passkey_nanotron_<len>`: nanotron's Infini-attention passkey protocol as lm-eval tasks.

Two sources of documents, one scoring:

* built (default): nanotron's ``generate_data.py`` prompt (`infini_bench.data.passkey_nanotron`) made exact in the
  evaluated model's tokens by the same builder as ``passkey_<len>``; options ``num_shots`` (0-3), ``num_digits``
  (default 4, generate_data.py's), ``depths``, ``samples``, ``seed``, ``answer_tokens`` (default 15, their
  ``--max-new-tokens``);
* their published sets (``--metadata dataset=nanotron``, a hub id, or a local parquet / jsonl / save_to_disk path),
  read and filtered as ``run_passkey_eval.py`` does (`infini_bench.data.nanotron_sets`): ``depths`` (their 21),
  ``num_shots`` (default 0), ``num_digits`` (0 = any, their default), ``samples`` (their ``--num_samples``,
  default 50) and ``seed`` (their shuffle seed, default 69, run_1024_passkey_evals.sh's).

Every document gets the project's two scores (strict ``acc``, ``ruler_match``) and nanotron's own,
``nanotron_match`` (the generation contains the key). Per depth as every retrieval task: in the samples log, and
with ``--metadata depth_metrics=true`` also in the results (``acc_d050``, ``nanotron_match_d050``, ...).
"""
from __future__ import annotations

import math
from typing import Any

from lm_eval.api.metrics import mean

from infini_bench.data.docs import DocPlan, PromptFrame
from infini_bench.data.nanotron_sets import (
    NANOTRON_EVAL_SEED,
    load_set,
    resolve_set_name,
    select_rows,
)
from infini_bench.data.passkey import PasskeySpec, plan_passkey_docs
from infini_bench.data.passkey_nanotron import (
    NANOTRON_ANSWER_TOKENS,
    NANOTRON_DIGITS,
    NANOTRON_FAMILY,
    NANOTRON_PREFIX,
    NanotronStyle,
    check_num_shots,
    nanotron_match,
)
from infini_bench.tasks.names import NANOTRON_SCORE, depth_metric
from infini_bench.validation import whole_number
from infini_bench.tasks.retrieval_task import PasskeyTask, mean_of_scored

#: run_passkey_eval.py's ``--num_samples`` in run_1024_passkey_evals.sh: the default `samples` for a published set.
SET_SAMPLES = 50


def _num_shots(value: Any) -> int:
    try:
        return check_num_shots(whole_number(value, "num_shots", minimum=0))
    except ValueError:
        return check_num_shots(value)  # raises nanotron's sentence for anything that is not 0-3


class SetPlan:
    """The documents of a published set: rows in `--limit`-friendly order (sample by sample, depths spread, as
    `DocPlan`), each turned into a document for the current frame when asked for."""

    def __init__(self, cells: list[tuple[int, Any, dict[str, Any]]], build: Any) -> None:
        self.cells, self._build = cells, build

    def __len__(self) -> int:
        return len(self.cells)

    def cell(self, index: int) -> tuple[int, Any]:
        sample_index, depth, _ = self.cells[index]
        return sample_index, depth

    def doc(self, index: int) -> tuple[dict[str, Any], bool]:
        sample_index, depth, row = self.cells[index]
        return self._build(sample_index, depth, row), False


def _set_cells(chosen: dict[Any, list[dict[str, Any]]], depths: list[Any]) -> list[tuple[int, Any, dict[str, Any]]]:
    from infini_bench.data.grid import spread_order

    order = [depths[j] for j in spread_order(len(depths))]
    most = max(len(rows) for rows in chosen.values())
    return [(i, d, chosen[d][i]) for i in range(most) for d in order if i < len(chosen[d])]


class NanotronPasskeyTask(PasskeyTask):
    """nanotron's passkey prompt (built exact-length, or read from their published sets), three scores per depth."""

    def read_options(self, cfg: dict[str, Any]) -> None:
        self._set_plan: SetPlan | None = None
        super().read_options(cfg)
        md = cfg["metadata"]
        md.update(num_shots=self.num_shots, num_digits=self.num_digits)
        if self.set_name is not None:
            md.update(nanotron_set=self.set_name, set_rows=self.n_docs)

    def count_docs(self) -> int:
        return len(self._set_cells) if self.set_name is not None else super().count_docs()

    def read_family_options(self, md: dict[str, Any]) -> None:
        self.num_shots = _num_shots(md.get("num_shots", 0))
        self.answer_tokens = whole_number(md.get("answer_tokens", NANOTRON_ANSWER_TOKENS), "answer_tokens")
        dataset = md.get("dataset")
        self.set_name = None if dataset in (None, "") else resolve_set_name(str(dataset), self.context_length)
        if self.set_name is None:
            self.num_digits = whole_number(md.get("num_digits", NANOTRON_DIGITS), "num_digits")
            self.spec = PasskeySpec(
                n_digits=self.num_digits, answer_tokens=self.answer_tokens, haystack=md.get("haystack") or "noise",
                haystack_options=self.haystack_options, style=NanotronStyle(num_shots=self.num_shots),
            )
            self.read_haystack(self.spec)
            return
        self.num_digits = whole_number(md.get("num_digits", 0), "num_digits", minimum=0)  # 0: any, as run_passkey_eval.py
        if md.get("seed") in (None, ""):
            self.base_seed = NANOTRON_EVAL_SEED
        if md.get("samples") in (None, ""):
            self.samples = SET_SAMPLES
        chosen = select_rows(load_set(self.set_name), self.depths, self.num_shots, self.num_digits, self.base_seed,
                             self.samples, self.context_length, self.set_name)
        self._set_cells = _set_cells(chosen, self.depths)

    def make_plan(self, frame: PromptFrame, add_special_tokens: bool) -> "DocPlan | SetPlan":
        if self.set_name is None:
            return plan_passkey_docs(self.model.tokenizer, self.spec, self.grid(), frame,
                                     add_special_tokens=add_special_tokens)
        view = self.model.view_for(frame.before) if frame.before else self.model.view
        return SetPlan(self._set_cells, lambda i, depth, row: self._set_doc(frame, view, i, depth, row))

    def doc(self, index: int) -> dict[str, Any]:
        if self.under_construction and self.set_name is not None:  # the grid cell only, as RetrievalTask.doc
            sample_index, depth, _ = self._set_cells[index]
            return {"prompt": "", "answer": "", "context_length": self.context_length, "depth_percent": depth,
                    "sample_index": sample_index}
        return super().doc(index)

    def _set_doc(self, frame: PromptFrame, view: Any, sample_index: int, depth: Any, row: dict[str, Any]) -> dict[str, Any]:
        """One published row as a document: their prompt as it is (plain), or its question part inside the chat
        template with their answer prefix opening the assistant turn."""
        prompt, answer = str(row["prompt"]), str(row["answer"])
        tail = " " + NANOTRON_PREFIX
        if not frame.plain:
            if not prompt.endswith(tail):
                raise ValueError(
                    f"{self.task_label}: row {row.get('id', sample_index)!r} of {self.set_name} does not end with "
                    f"{tail!r}, so its answer prefix cannot open a chat template's assistant turn; run without "
                    "--apply_chat_template"
                )
            prompt = frame.wrap(prompt[: -len(tail)], NANOTRON_PREFIX)
        n_tokens = view.count(prompt)
        limit = self.model.max_length
        if limit is not None and n_tokens + self.answer_tokens > limit:
            raise ValueError(
                f"{self.task_label}: row {row.get('id', sample_index)!r} of {self.set_name} is {n_tokens} tokens in "
                f"this model's tokenizer, plus answer_tokens={self.answer_tokens} over max_length={limit}; it would "
                "be truncated, so it is refused (their prompts are counted in Llama-3 tokens)"
            )
        return {
            "prompt": prompt,
            "answer": answer,
            "answers": [answer],
            "gen_prefix": NANOTRON_PREFIX,
            "context_length": self.context_length,
            "depth_percent": depth,
            "seed": self.base_seed,
            "base_seed": self.base_seed,
            "sample_index": sample_index,
            "prompt_tokens": n_tokens,
            "answer_tokens": self.answer_tokens,
            "num_shots": row.get("num_shots", self.num_shots),
            "num_digits": row.get("num_digits", len(answer)),
            "set_id": row.get("id"),
            "set_token_count": row.get("token_count"),
            "set_context_length": row.get("context_length"),
            "nanotron_set": self.set_name,
            "haystack": "published set",
            "build_method": "published set",
            "task_family": NANOTRON_FAMILY,
        }

    # -- scoring ------------------------------------------------------------------------------------------------
    def process_results(self, doc: dict[str, Any], results: list[Any]) -> dict[str, float]:
        out = super().process_results(doc, results)
        response = results[0][0] if isinstance(results[0], (list, tuple)) else results[0]
        invalid = bool(out.get("invalid"))  # non_finite=invalid: a document the model could not score
        score = math.nan if invalid else nanotron_match(str(response), doc["answer"])
        out[NANOTRON_SCORE] = score
        if self.depth_metrics:
            own = float(doc["depth_percent"])
            for d in self.depths:
                out[depth_metric(d, NANOTRON_SCORE)] = score if float(d) == own else math.nan
        return out

    def aggregation(self) -> dict[str, Any]:
        out = {**super().aggregation(), NANOTRON_SCORE: mean_of_scored if self.mark_invalid else mean}
        if self.depth_metrics:
            out.update({depth_metric(d, NANOTRON_SCORE): mean_of_scored for d in self.depths})
        return out
