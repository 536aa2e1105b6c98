"""`--model infini`: lm-eval's `TemplateLM` for segment-recurrent Infini-attention checkpoints.

Every request streams through the model one chunk of whole segments at a time (streaming.py), so an evaluation
holds one chunk of activations per row whatever the context length: prompts are never truncated, documents are scored exactly (each
token conditioned on everything before it through memory + local attention), and requests that share a context
read it once.
"""
from __future__ import annotations

import logging
import math
from collections.abc import Iterable
from typing import Any

import torch
from lm_eval.api.instance import Instance
from lm_eval.api.model import TemplateLM
from lm_eval.models.utils import (
    Collator,
    handle_stop_sequences,
    has_bos_prefix,
    normalize_gen_kwargs,
    postprocess_generated_text,
)
from lm_eval.models.utils_hf import stop_sequences_criteria
from tqdm import tqdm
from transformers import AutoTokenizer, LogitsProcessorList, PreTrainedTokenizerBase

from infini_bench.invalid import INVALID_ANSWER, NON_FINITE_MODES
from infini_bench.lm_eval_compat import register_model_once, resolve_max_length
from infini_bench.modeling import InfiniForCausalLM, load_infini
from infini_bench.modeling.fla_ops import KERNELS as MEMORY_KERNELS
from infini_bench.modeling.local_attention import ATTN_IMPLEMENTATIONS

from . import options
from .auto_batch import probe_batch_size
from .decoding import Decoding
from .long_text import encode_long
from .non_finite import FiniteScores, NonFiniteGuard, request_label
from .parallel import setup_data_parallel
from .streaming import DEFAULT_CHUNK_TOKENS, prefill, score

logger = logging.getLogger(__name__)

DEFAULT_MAX_LENGTH = 1_048_576  # reported to tasks only: an Infini model has no hard context limit


def _batches(items: list, size: int) -> Iterable[list]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


class InfiniLM(TemplateLM):
    """lm-eval model for Infini checkpoints: `--model infini --model_args pretrained=DIR[,...]`.

    Model args: `pretrained` (an Infini checkpoint folder, or a Llama one with `convert_llama=true`; from Python
    also a loaded `InfiniForCausalLM`, with its `tokenizer` object or path, as lm-eval's `HFLM` takes), `tokenizer`
    (defaults to `pretrained`), `dtype` (float32 | bfloat16 | float16 | auto), `segment_length`, `use_memory` and
    `memory_kernel` (override the checkpoint's config), `attn_implementation` (sdpa | flash_attention_2 | eager,
    as for `hf`), `prefill_chunk_tokens` (tokens per parallel prefill/scoring step, default 16384 on CUDA and 2048 on
    the CPU: peak memory is set by it, not by the document's length), `max_length` (reported to tasks; default the config's
    `max_position_embeddings`), `max_gen_toks` (default 256), `add_bos_token`, `prefix_token_id`, `non_finite`
    (error | invalid: NaN or infinite logits stop the run, naming the request and segment, or mark the document
    invalid; see non_finite.py), `static_cache` and `compile` (true | false; default true on CUDA, false elsewhere:
    decode through a static cache with the decode step compiled into CUDA graphs; see decoding.py).
    `--device`, `--batch_size` (integer or auto) and `--max_batch_size` come from lm-eval's own flags.
    """

    def __init__(
        self,
        pretrained: str | InfiniForCausalLM | None = None,
        tokenizer: str | PreTrainedTokenizerBase | None = None,
        dtype: str | torch.dtype = "float32",
        segment_length: int | None = None,
        use_memory: bool | None = None,
        memory_kernel: str | None = None,
        attn_implementation: str | None = None,
        prefill_chunk_tokens: int | None = None,
        convert_llama: bool = False,
        max_length: int | None = None,
        max_gen_toks: int = 256,
        add_bos_token: bool | None = None,
        prefix_token_id: int | None = None,
        non_finite: str = "error",
        static_cache: bool | None = None,
        compile: bool | None = None,
        batch_size: int | str | None = 1,
        max_batch_size: int | None = 64,
        device: str | None = "cuda",
        **unknown: Any,
    ) -> None:
        super().__init__()
        if unknown:
            raise options.InfiniArgumentError(
                f"unknown model_args for --model infini: {', '.join(f'{k}={v!r}' for k, v in unknown.items())}. "
                "Accepted: pretrained, tokenizer, dtype, segment_length, use_memory, memory_kernel, "
                "attn_implementation, prefill_chunk_tokens, convert_llama, max_length, max_gen_toks, add_bos_token, "
                "prefix_token_id, non_finite, static_cache, compile"
            )
        loaded = isinstance(pretrained, InfiniForCausalLM)
        if not loaded and (not pretrained or not isinstance(pretrained, str)):
            raise options.InfiniArgumentError(
                f"pretrained={pretrained!r} is invalid: pass pretrained=<checkpoint folder> in --model_args "
                "(or, from Python, a loaded InfiniForCausalLM with its tokenizer)"
            )
        if loaded:
            load_args = dict(dtype=dtype if dtype != "float32" else None, segment_length=segment_length,
                             use_memory=use_memory, memory_kernel=memory_kernel,
                             attn_implementation=attn_implementation, convert_llama=convert_llama or None)
            given = [name for name, value in load_args.items() if value is not None]
            if given:
                raise options.InfiniArgumentError(
                    f"{', '.join(given)} apply when loading a checkpoint; pretrained is an already loaded model: "
                    "set them on the model (its config, .to(dtype), set_attn_implementation) before passing it"
                )
            if tokenizer is None:
                raise options.InfiniArgumentError("pretrained is a loaded model: pass its tokenizer too (tokenizer=...)")
        overrides: dict[str, Any] = {}
        if segment_length is not None:
            overrides["segment_length"] = options.positive_int("segment_length", segment_length)
        if use_memory is not None:
            overrides["use_memory"] = options.boolean("use_memory", use_memory)
        if memory_kernel is not None:
            overrides["memory_kernel"] = options.choice("memory_kernel", memory_kernel, MEMORY_KERNELS)
        self._attn_implementation = (
            None if attn_implementation is None
            else options.choice("attn_implementation", attn_implementation, ATTN_IMPLEMENTATIONS)
        )
        chunk_tokens = None if prefill_chunk_tokens is None else options.positive_int("prefill_chunk_tokens", prefill_chunk_tokens)
        self._dtype = options.dtype_name(dtype)
        self._max_length = options.optional_positive_int("max_length", max_length)
        self._max_gen_toks = options.positive_int("max_gen_toks", max_gen_toks)
        self._batch_size = options.batch_size(1 if batch_size is None else batch_size)
        self._max_batch_size = options.positive_int("max_batch_size", 64 if max_batch_size is None else max_batch_size)
        self.add_bos_token = None if add_bos_token is None else options.boolean("add_bos_token", add_bos_token)
        self.custom_prefix_token_id = None if prefix_token_id is None else options.token_id("prefix_token_id", prefix_token_id)
        self._non_finite_mode = options.choice("non_finite", non_finite, NON_FINITE_MODES)

        self.parallel = setup_data_parallel(options.resolve_device(device))
        self._device = self.parallel.device
        self._decoding = Decoding.resolve(self._device, static_cache, compile)
        self._rank, self._world_size = self.parallel.rank, self.parallel.world_size
        self._chunk_tokens = chunk_tokens or DEFAULT_CHUNK_TOKENS.get(self._device.type, DEFAULT_CHUNK_TOKENS["cpu"])
        if loaded:
            self.pretrained = pretrained.name_or_path
            self._model = pretrained.eval().to(self._device)
        else:
            self.pretrained = pretrained
            self._model = self._load_model(pretrained, options.boolean("convert_llama", convert_llama), overrides)
        tokenizer = tokenizer or pretrained
        self.tokenizer = tokenizer if isinstance(tokenizer, PreTrainedTokenizerBase) else self._load_tokenizer(tokenizer)
        if self.tokenizer.eos_token_id is None and self.tokenizer.bos_token_id is None and prefix_token_id is None:
            raise options.InfiniArgumentError(
                f"the tokenizer {self.tokenizer.name_or_path!r} has neither an EOS nor a BOS token: "
                "pass prefix_token_id=<id> in --model_args"
            )
        self.batch_size_per_device = self._resolve_batch_size()
        self._warned_long_prompt = False
        self.guard = NonFiniteGuard(self._non_finite_mode, self._model.config.segment_length)

    # --- loading -----------------------------------------------------------------------------------------------
    def _load_model(self, path: str, convert_llama: bool, overrides: dict[str, Any]) -> InfiniForCausalLM:
        try:
            model = load_infini(
                path, dtype=self._dtype, convert_llama=convert_llama, attn_implementation=self._attn_implementation,
                **overrides,
            )
        except (FileNotFoundError, ValueError, OSError, ImportError) as err:
            raise options.InfiniArgumentError(f"pretrained={path!r} cannot be evaluated: {err}") from None
        return model.eval().to(self._device)

    @staticmethod
    def _load_tokenizer(path: str):
        try:
            return AutoTokenizer.from_pretrained(path)
        except (OSError, ValueError, TypeError) as err:
            raise options.InfiniArgumentError(f"tokenizer={path!r} cannot be loaded: {err}") from None

    def _resolve_batch_size(self) -> int:
        """Resolved once, at construction, so that every data-parallel rank takes part in the same gather."""
        if self._batch_size != "auto":
            return int(self._batch_size)
        if self._device.type == "cpu":
            logger.info("batch_size=auto on the CPU: using 1 (an out-of-memory probe is unsafe on host memory)")
            found = 1
        else:
            found = probe_batch_size(self._model, self._device, self._max_batch_size, self._chunk_tokens)
        if self.world_size > 1:
            found = int(self.all_gather(torch.tensor([found], device=self._device)).min().item())
        logger.info("batch_size=auto resolved to %d", found)
        return found

    # --- what lm-eval reads ------------------------------------------------------------------------------------
    @property
    def model(self) -> InfiniForCausalLM:
        return self._model

    @property
    def config(self):
        return self._model.config

    @property
    def eot_token_id(self) -> int:
        eos = self.tokenizer.eos_token_id
        return self.tokenizer.bos_token_id if eos is None else eos

    @property
    def prefix_token_id(self) -> int:
        if self.custom_prefix_token_id is not None:
            return self.custom_prefix_token_id
        bos = self.tokenizer.bos_token_id
        return self.tokenizer.eos_token_id if bos is None else bos

    @property
    def max_length(self) -> int:
        if self._max_length:
            return self._max_length
        return resolve_max_length(self._model.config, None, default=DEFAULT_MAX_LENGTH)

    @property
    def max_gen_toks(self) -> int:
        return self._max_gen_toks

    @property
    def batch_size(self) -> int | str:
        return self._batch_size

    @property
    def device(self) -> torch.device:
        return self._device

    @property
    def tokenizer_name(self) -> str:
        return self.tokenizer.name_or_path.replace("/", "__")

    def all_gather(self, tensor: torch.Tensor) -> torch.Tensor:
        return self.parallel.all_gather(tensor)

    def gather_object(self, obj: Any, dst: int = 0) -> list | None:
        return self.parallel.gather_object(obj, dst)

    def barrier(self) -> None:
        self.parallel.barrier()

    def get_model_info(self) -> dict[str, Any]:
        """Lands in the results JSON's `config`, so reports know which model variant produced a run."""
        c = self._model.config
        return {
            "model_num_parameters": self._model.num_parameters(),
            "model_dtype": str(self._model.dtype),
            "segment_length": c.segment_length,
            "use_memory": c.use_memory,
            "attn_implementation": c._attn_implementation,
            "memory_kernel": c.memory_kernel,
            "prefill_chunk_tokens": self._chunk_tokens,
            "memory_update": c.memory_update,
            "gate_activation": c.gate_activation,
            "non_finite": self._non_finite_mode,
            "static_cache": self._decoding.static_cache,
            "compile": self._decoding.compile,
        }

    # --- tokens ------------------------------------------------------------------------------------------------
    def tok_encode(self, string: str, add_special_tokens: bool | None = None, **kwargs: Any) -> list[int]:
        """As lm-eval's `hf` model: the tokenizer's own special tokens unless told otherwise, none when the string
        already starts with the prefix token."""
        special: dict[str, bool] = {}
        if add_special_tokens is not None:
            special["add_special_tokens"] = add_special_tokens
        elif self.add_bos_token is not None:
            special["add_special_tokens"] = self.add_bos_token
        if add_special_tokens is None and has_bos_prefix(string, self.tokenizer.decode([self.prefix_token_id])):
            special["add_special_tokens"] = False
        return encode_long(self.tokenizer, string, special)  # a long document in parallel pieces, same ids

    def tok_decode(self, tokens: list[int], skip_special_tokens: bool = True) -> str:
        return self.tokenizer.decode(tokens, skip_special_tokens=skip_special_tokens)

    def apply_chat_template(self, chat_history: list[dict[str, str]], add_generation_prompt: bool = True) -> str:
        """`--apply_chat_template`: the tokenizer's own template (transformers says so when it has none)."""
        return self.tokenizer.apply_chat_template(
            chat_history,
            tokenize=False,
            add_generation_prompt=add_generation_prompt,
            continue_final_message=not add_generation_prompt,
        )

    def _progress(self, total: int, desc: str, disable: bool) -> tqdm:
        return tqdm(total=total, desc=desc, unit="tok", unit_scale=True, disable=disable or self.rank != 0)

    # --- loglikelihood -----------------------------------------------------------------------------------------
    def _loglikelihood_tokens(
        self, requests: list[tuple[tuple[str, str], list[int], list[int]]], disable_tqdm: bool = False, **kwargs: Any
    ) -> list[tuple[float, bool]]:
        """Each distinct context is read once (all but its last token, batched across contexts); every
        continuation of it then continues that state, fed `context[-1] + continuation[:-1]`."""
        results: list[tuple[float, bool] | None] = [None] * len(requests)
        by_context: dict[tuple[int, ...], list[int]] = {}
        for i, (_, context, continuation) in enumerate(requests):
            if not continuation:
                results[i] = (0.0, True)
                continue
            by_context.setdefault(tuple(context), []).append(i)
        contexts = sorted(by_context, key=lambda c: -(len(c) + max(len(requests[i][2]) for i in by_context[c])))
        total = sum(len(c) - 1 for c in contexts) + sum(len(requests[i][2]) for ids in by_context.values() for i in ids)
        bar = self._progress(total, "Running loglikelihood requests", disable_tqdm)
        try:
            for batch in _batches(contexts, self.batch_size_per_device):
                in_context: dict[int, int] = {}  # batch row -> first non-finite context position
                for ended, state in prefill(
                    self._model, [c[:-1] for c in batch], self._device, bar.update, self._chunk_tokens, in_context
                ):
                    # (row of `state`, request) for every continuation of the contexts that just ended
                    rows = [(row, i) for row, j in enumerate(ended) for i in by_context[batch[j]]]
                    bad_before = {i: in_context[j] for j in ended if j in in_context for i in by_context[batch[j]]}
                    for part in _batches(rows, self.batch_size_per_device):
                        part_state = None if state is None else state.select(torch.tensor([row for row, _ in part]))
                        inputs = [list(requests[i][1][-1:]) + requests[i][2][:-1] for _, i in part]
                        targets = [requests[i][2] for _, i in part]
                        in_answer: dict[int, int] = {}
                        answers = score(
                            self._model, part_state, inputs, targets, self._device, bar.update, self._chunk_tokens,
                            in_answer,
                        )
                        for k, ((_, i), answer) in enumerate(zip(part, answers)):
                            after = None if k not in in_answer else len(requests[i][1]) - 1 + in_answer[k]
                            position = bad_before.get(i, after)
                            if position is not None:  # NaN marks it invalid (mode invalid; mode error raises here)
                                self.guard.found("loglikelihood", f"request {i}", position)
                                results[i] = (math.nan, False)
                                continue
                            results[i] = answer
                            self.cache_hook.add_partial("loglikelihood", requests[i][0], answer)
        finally:  # closed on an error too, so the error line is not glued to the bar
            bar.close()
        return results  # type: ignore[return-value]

    def loglikelihood_rolling(self, requests: list[Instance], disable_tqdm: bool = False) -> list[float]:
        """The exact log-likelihood of each whole document, conditioned on the prefix token: one stream through
        memory + local attention, no windows, logits one segment piece at a time."""
        strings = [req.args[0] for req in requests]
        # int32 tensors: 4 bytes a token, where a list of Python ints costs about 36
        docs = [torch.tensor(self.tok_encode(s), dtype=torch.int32) for s in strings]
        prefix = torch.tensor([self.prefix_token_id], dtype=torch.int32)
        results: list[float] = [0.0] * len(requests)
        order = Collator(list(range(len(docs))), sort_fn=lambda i: -len(docs[i]))
        bar = self._progress(sum(map(len, docs)), "Running loglikelihood_rolling requests", disable_tqdm)
        try:
            for batch in order.get_batched(n=self.batch_size_per_device):
                batch = [i for i in batch if len(docs[i]) > 0]
                if batch:
                    inputs = [torch.cat([prefix, docs[i][:-1]]) for i in batch]
                    bad: dict[int, int] = {}
                    answers = score(
                        self._model, None, inputs, [docs[i] for i in batch], self._device, bar.update,
                        self._chunk_tokens, bad,
                    )
                    for k, (i, (logprob, _)) in enumerate(zip(batch, answers)):
                        if k in bad:  # NaN marks the document invalid (mode invalid; mode error raises here)
                            self.guard.found("loglikelihood_rolling", request_label(requests[i], i), bad[k])
                            logprob = math.nan
                        results[i] = logprob
        finally:  # closed on an error too, so the error line is not glued to the bar
            bar.close()
        for string, logprob in zip(strings, results):
            if not math.isnan(logprob):  # an invalid answer is never cached: a rerun tries again
                self.cache_hook.add_partial("loglikelihood_rolling", (string,), logprob)
        return results

    # --- generation --------------------------------------------------------------------------------------------
    def _prompt_tokens(self, context: str) -> torch.Tensor:
        tokens = self.tok_encode(context) or [self.prefix_token_id]
        if len(tokens) > self.max_length and not self._warned_long_prompt:
            logger.warning(
                "a prompt of %d tokens exceeds max_length=%d: it is evaluated whole (never truncated)",
                len(tokens), self.max_length,
            )
            self._warned_long_prompt = True
        return torch.tensor(tokens, dtype=torch.int32)

    def generate_until(self, requests: list[Instance], disable_tqdm: bool = False) -> list[str]:
        """Prefill every prompt (all but its last token) segment by segment, batched across prompts; prompts of
        equal length then decode together with memory + local KV cache via `model.generate`.

        Prompts are tokenised one batch at a time (longest text first): a passkey_1m task holds ~100 prompts of a
        million tokens each."""
        args = [req.args for req in requests]
        results: list[str | None] = [None] * len(requests)
        groups = Collator(
            list(range(len(args))),
            sort_fn=lambda i: (-len(args[i][0]), args[i][0]),
            group_fn=lambda i: args[i][1],
            group_by="gen_kwargs",
        )
        bar = tqdm(total=len(requests), desc="Running generate_until requests", disable=disable_tqdm or self.rank != 0)
        try:
            eos = self.tok_decode([self.eot_token_id], skip_special_tokens=False)
            for batch in groups.get_batched(n=self.batch_size_per_device):
                gen_kwargs = normalize_gen_kwargs(args[batch[0]][1], self.max_gen_toks)
                until = handle_stop_sequences(gen_kwargs.pop("until", None), eos=eos)
                max_new = gen_kwargs.pop("max_gen_toks")
                if "max_length" in gen_kwargs:
                    logger.warning("`max_length` in generation kwargs is ignored: use `max_gen_toks`")
                    gen_kwargs.pop("max_length")
                prompts = [self._prompt_tokens(args[i][0]) for i in batch]
                in_prompt: dict[int, int] = {}  # batch row -> first non-finite prompt position
                for ended, state in prefill(
                    self._model, [p[:-1] for p in prompts], self._device, chunk_tokens=self._chunk_tokens,
                    non_finite=in_prompt,
                ):
                    for j in ended:  # a broken prompt stops the run before any decoding (mode error)
                        if j in in_prompt:
                            label = request_label(requests[batch[j]], batch[j])
                            self.guard.found("generate_until", label, in_prompt[j])
                    texts, steps = self._generate([prompts[j] for j in ended], state, until, max_new, dict(gen_kwargs))
                    for j, text, step in zip(ended, texts, steps):
                        if j not in in_prompt and step is not None:
                            label = request_label(requests[batch[j]], batch[j])
                            self.guard.found("generate_until", label, len(prompts[j]) - 1 + step)  # while decoding
                        if j in in_prompt or step is not None:
                            results[batch[j]] = INVALID_ANSWER  # never cached: a rerun tries again
                            continue
                        results[batch[j]] = text
                        self.cache_hook.add_partial("generate_until", args[batch[j]], text)
                    bar.update(len(ended))
        finally:  # closed on an error too, so the error line is not glued to the bar
            bar.close()
        return results  # type: ignore[return-value]

    def _generate(
        self, prompts: list[torch.Tensor], state, until: list[str], max_new: int, kwargs: dict
    ) -> tuple[list[str], list[int | None]]:
        """Decode equal-length prompts whose first len-1 tokens are already in `state` (an `InfiniCache`, passed as
        `generate`'s `cache`): `generate` then feeds only the tokens after its `get_seq_length()`. Returns the texts
        and, per row, the first decoding step whose logits were NaN or +inf (None: all finite)."""
        ids = torch.stack([torch.as_tensor(p) for p in prompts]).to(device=self._device, dtype=torch.long)
        if not kwargs.get("do_sample"):
            kwargs.pop("temperature", None)  # greedy: a temperature would only trigger transformers warnings
        kwargs.update(self._decoding.generate_kwargs(self._model, state, ids.shape[0]))
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.eot_token_id
        finite = FiniteScores(len(prompts))
        out = self._model.generate(
            input_ids=ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=max_new,
            stopping_criteria=stop_sequences_criteria(self.tokenizer, until, ids.shape[1], ids.shape[0]),
            pad_token_id=pad,
            eos_token_id=self.eot_token_id,
            logits_processor=LogitsProcessorList([finite]),
            **kwargs,
        )
        texts = [
            postprocess_generated_text(self.tok_decode(row[ids.shape[1] :].tolist()), stop=until, think_end_token=None)
            for row in out
        ]
        return texts, finite.first_bad


register_model_once("infini", InfiniLM)  # after lm-eval's built-ins; the same class already named lazily is kept
