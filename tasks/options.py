"""Reading task options from lm-eval metadata (the YAML `metadata`, all of `--model_args`, all of `--metadata`).

The tokenizer comes from the model args (`tokenizer=` wins over `pretrained=`), like lm-eval's `hf` model loads
it; `add_bos_token=` is honoured the same way. The model's maximum length is `max_length=` when given, else what
lm-eval's `resolve_max_length` reads from the checkpoint's config, which is what both `--model hf` and
`--model infini` report.
"""
from __future__ import annotations

import difflib
import functools
import inspect
import logging
from dataclasses import dataclass, replace
from typing import Any

from infini_bench.data.niah import NiahSpec, niah_spec
from infini_bench.data.passkey import PasskeySpec, passkey_answer_tokens
from infini_bench.data.tokens import TokenizerError, load_tokenizer, tokenizer_view, TokenizerView
from infini_bench.validation import true_or_false, whole_number

log = logging.getLogger(__name__)

def as_length(value: Any, key: str) -> int:
    """A token count written as a number or with a k/m suffix ("4k" = 4096)."""
    from infini_bench.tasks.names import parse_length

    if isinstance(value, str) and value.strip().lower()[-1:] in ("k", "m"):
        value = parse_length(value)
    return whole_number(value, key)


def as_list(value: Any) -> list[Any]:
    """A list option given as a list/tuple or a single value."""
    if isinstance(value, (list, tuple)):
        return list(value)
    return [value]


@dataclass(frozen=True)
class ModelContext:
    """What a task needs to know about the model under evaluation."""

    view: TokenizerView
    max_length: int | None  # None: unknown or unbounded; nothing is skipped
    tokenizer: Any = None
    add_bos: bool = True  # add_bos_token (default: as the tokenizer adds special tokens)

    def view_for(self, prompt_start: str) -> TokenizerView:
        """The view for prompts that start with `prompt_start`: like lm-eval's `hf` model, no special tokens are
        added to a prompt that already starts with the BOS token's text (a chat template's)."""
        bos = getattr(self.tokenizer, "bos_token", None)
        if bos and prompt_start.startswith(bos):
            return tokenizer_view(self.tokenizer, False)
        return self.view


def _tokenizer_from(metadata: dict[str, Any], task: str) -> Any:
    given = metadata.get("tokenizer")
    if given is not None and not isinstance(given, str):
        return given  # a tokenizer object passed through the Python API
    name = given or metadata.get("pretrained")
    if not isinstance(name, str) or not name:
        raise TokenizerError(
            f"{task}: cannot resolve a tokenizer: lengths are counted in the model's own tokens, so pass "
            "pretrained=<model dir or hub id> or tokenizer=<dir or hub id> in --model_args, or tokenizer=... in "
            f"--metadata (got pretrained={metadata.get('pretrained')!r}, tokenizer={given!r})"
        )
    return load_tokenizer(
        name,
        revision=metadata.get("revision"),
        subfolder=metadata.get("subfolder"),
        trust_remote_code=true_or_false(metadata.get("trust_remote_code", False), "trust_remote_code"),
    )


@functools.lru_cache(maxsize=8)
def _model_config(pretrained: str, revision: str | None, subfolder: str | None, trust_remote_code: bool) -> Any:
    """The checkpoint's config (None when unreadable: the model load will report it)."""
    try:
        from transformers import AutoConfig

        import infini_bench.modeling  # noqa: F401  (registers the Infini config with AutoConfig)

        return AutoConfig.from_pretrained(
            pretrained, revision=revision, subfolder=subfolder or "", trust_remote_code=trust_remote_code
        )
    except Exception as err:  # unreadable config: the model load will report it; skip nothing here
        log.warning("infini-bench: cannot read the config of %r (%s); no sample is skipped for length", pretrained, err)
        return None


def _config_of(metadata: dict[str, Any]) -> Any:
    pretrained = metadata.get("pretrained")
    if not isinstance(pretrained, str) or not pretrained:
        return None
    return _model_config(
        pretrained,
        metadata.get("revision"),
        metadata.get("subfolder"),
        true_or_false(metadata.get("trust_remote_code", False), "trust_remote_code"),
    )


def model_max_length(metadata: dict[str, Any], tokenizer: Any = None) -> int | None:
    """The model's maximum sequence length as lm-eval's model classes resolve it, or None when unknown."""
    if metadata.get("max_length") not in (None, ""):
        return whole_number(metadata["max_length"], "max_length")
    config = _config_of(metadata)
    if config is None:
        return None
    from infini_bench.lm_eval_compat import hf_max_length

    return hf_max_length(config, tokenizer)


#: Options of the passkey and NIAH tasks, of NIAH only, and of the perplexity tasks. `--metadata` goes to every
#: selected task, so each task accepts every family's options (and uses its own).
RETRIEVAL_OPTIONS = (
    "context_length", "depths", "n_depths", "samples", "seed", "n_digits", "answer_tokens", "haystack", "essays",
    "haystack_files", "haystack_split", "haystack_field", "haystack_dataset_name", "haystack_max_chars", "protocol",
    "depth_metrics",
)
NIAH_OPTIONS = ("type_needle_k", "type_needle_v", "num_needle_k", "num_needle_v", "num_needle_q")
#: Options of the passkey_nanotron tasks (nanotron's names; `dataset` reads their published sets).
NANOTRON_OPTIONS = ("num_shots", "num_digits", "dataset")
PPL_OPTIONS = ("doc_tokens", "min_doc_tokens", "max_docs", "bucket_edges", "files", "pg19_dataset", "pg19_split")
TASK_OPTIONS = (*RETRIEVAL_OPTIONS, *NIAH_OPTIONS, *NANOTRON_OPTIONS, *PPL_OPTIONS, "tokenizer", "add_bos_token", "max_length",
                "check_options")

#: Keys lm-eval and this project's YAMLs put into a task's metadata, and the ones a task records there.
INTERNAL_KEYS = frozenset({
    "version", "config_source", "config", "_metadata", "task_context_length", "task_variant", "task_source",
    "task_min_doc_tokens", "glob_requires", "explicit_only", "glob_prefix", "model_max_length", "skipped_docs", "docs_from_cache",
    "docs_built", "docs_longer_than_max_length", "prompt_frame", "check_options",
    "max_seq_lengths",  # lm-eval's ruler tasks' lengths: --metadata goes to them and to ours in one run
})
#: Model arguments lm-eval's models and transformers' from_pretrained understand beyond the classes' signatures
#: (lm-eval copies every --model_args key into the metadata, so they must pass the option check).
COMMON_MODEL_ARGS = frozenset({
    "pretrained", "tokenizer", "revision", "subfolder", "trust_remote_code", "dtype", "torch_dtype", "max_length",
    "add_bos_token", "device", "device_map", "batch_size", "max_batch_size", "parallelize", "backend",
    "attn_implementation", "low_cpu_mem_usage", "quantization_config", "load_in_8bit", "load_in_4bit", "max_memory",
    "offload_folder", "use_fast_tokenizer", "peft", "delta", "gguf_file", "model", "base_url", "tokenized_requests",
    "max_gen_toks", "truncation", "logits_cache", "prefix_token_id", "softmax_dtype", "think_end_token",
    "enable_thinking", "chat_template_args", "use_cache", "cache_dir", "local_files_only", "token", "variant",
    "use_safetensors", "weights_only", "convert_llama", "segment_length", "use_memory", "memory_kernel",
    "prefill_chunk_tokens", "tensor_parallel_size",
    "data_parallel_size", "gpu_memory_utilization", "seed", "max_model_len", "pretrained_model_name_or_path",
})


def model_arg_names(metadata: dict[str, Any]) -> set[str]:
    """Names that may be model arguments lm-eval folded into the metadata: `COMMON_MODEL_ARGS`, the constructor
    parameters of lm-eval's `hf` model and of every model class already loaded (the one in use among them), the
    parameters of transformers' ``from_pretrained`` and the fields of the checkpoint's config (from_pretrained
    passes unknown keyword arguments to the config)."""
    from infini_bench.lm_eval_compat import model_constructor_args

    names = set(COMMON_MODEL_ARGS) | model_constructor_args()
    try:
        from transformers import PreTrainedModel

        names |= {p for p in inspect.signature(PreTrainedModel.from_pretrained).parameters if p not in ("cls", "self")}
    except Exception:
        pass
    config = _config_of(metadata)
    if config is not None:
        names |= set(config.to_dict())
    return names


def check_option_keys(metadata: dict[str, Any], task: str) -> None:
    """Refuse a --metadata key that is neither a task option of this project (`TASK_OPTIONS`: --metadata goes to
    every selected task, so any family's option is accepted), nor lm-eval's or this project's own key, nor a
    possible model argument; the error names the key and lists the accepted options. ``check_options=false``
    turns the check off (for a model argument this check does not know)."""
    if not true_or_false(metadata.get("check_options", True), "check_options"):
        return
    options = set(TASK_OPTIONS)
    unknown = sorted(k for k in metadata if k not in options | INTERNAL_KEYS)
    if unknown:
        unknown = sorted(set(unknown) - model_arg_names(metadata))
    if not unknown:
        return
    hints = []
    for key in unknown:
        close = difflib.get_close_matches(key, sorted(options), n=1)
        hints.append(f"{key!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
    raise ValueError(
        f"{task}: unknown option{'s' if len(unknown) > 1 else ''} {', '.join(hints)} in --metadata. Task options: "
        f"{', '.join(sorted(options))}. (Model arguments lm-eval copies into the metadata, such as pretrained=, "
        "are accepted too; pass check_options=false to skip this check.)"
    )


def model_context(metadata: dict[str, Any], task: str) -> ModelContext:
    """Tokenizer view and maximum length for the model named in `metadata`."""
    tokenizer = _tokenizer_from(metadata, task)
    add_special = metadata.get("add_bos_token")
    add_bos = True if add_special in (None, "") else true_or_false(add_special, "add_bos_token")
    view = tokenizer_view(tokenizer, add_bos)
    return ModelContext(view=view, max_length=model_max_length(metadata, tokenizer), tokenizer=tokenizer, add_bos=add_bos)


#: Options naming where essay text comes from, passed to the haystack loader.
HAYSTACK_OPTIONS = ("essays", "haystack_files", "haystack_split", "haystack_field", "haystack_dataset_name",
                    "haystack_max_chars")


def haystack_options(metadata: dict[str, Any]) -> dict[str, Any]:
    """The essay source options (`HAYSTACK_OPTIONS`), passed to the haystack loader."""
    return {k: metadata[k] for k in HAYSTACK_OPTIONS if metadata.get(k) not in (None, "")}


def read_passkey_spec(metadata: dict[str, Any]) -> PasskeySpec:
    """A passkey task's spec from its options, validated once (by `PasskeySpec`): `n_digits` (5), `answer_tokens`
    (the task's default, `passkey_answer_tokens`), `haystack` (noise) and the essay source options."""
    spec = PasskeySpec(
        n_digits=metadata.get("n_digits", 5),
        answer_tokens=metadata.get("answer_tokens"),
        haystack=metadata.get("haystack") or "noise",
        haystack_options=haystack_options(metadata),
    )
    return spec if spec.answer_tokens is not None else replace(spec, answer_tokens=passkey_answer_tokens(spec.n_digits))


def read_niah_spec(metadata: dict[str, Any], variant: str, context_length: int) -> NiahSpec:
    """A NIAH task's spec from its options, validated once (by `NiahSpec`): the variant's RULER arguments with
    any of `NIAH_OPTIONS`, `haystack`, `n_digits` and `answer_tokens` (default: `default_answer_tokens` at
    `context_length`) overridden, and the essay source options."""
    spec = niah_spec(
        variant,
        haystack=metadata.get("haystack"),
        haystack_options=haystack_options(metadata),
        n_digits=metadata.get("n_digits"),
        answer_tokens=metadata.get("answer_tokens"),
        **{k: metadata.get(k) for k in NIAH_OPTIONS},
    )
    return replace(spec, answer_tokens=spec.answer_budget(context_length))
