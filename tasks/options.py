"""Reading task options from lm-eval metadata (the YAML `metadata`, all of `--model_args`, all of `--metadata`).

The tokenizer comes from the model args (`tokenizer=` wins over `pretrained=`), like lm-eval's `hf` model loads
it; `add_bos_token=` is honoured the same way. The model's maximum length is `max_length=` when given, else what
lm-eval's `resolve_max_length` reads from the checkpoint's config, which is what both `--model hf` and
`--model infini` report.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from infini_bench.data.tokens import TokenizerError, load_tokenizer, tokenizer_view, TokenizerView

log = logging.getLogger(__name__)

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def as_bool(value: Any, key: str) -> bool:
    """A boolean option given as bool or text."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ValueError(f"{key} must be true or false, got {value!r}")


def as_int(value: Any, key: str, minimum: int = 1) -> int:
    """A whole-number option >= minimum, with an error naming the key and value."""
    if isinstance(value, bool):
        raise ValueError(f"{key} must be a whole number >= {minimum}, got {value!r}")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{key} must be a whole number >= {minimum}, got {value!r}") from None
    if not number.is_integer() or number < minimum:
        raise ValueError(f"{key} must be a whole number >= {minimum}, got {value!r}")
    return int(number)


def as_length(value: Any, key: str) -> int:
    """A token count written as a number or with a k/m suffix ("4k" = 4096)."""
    from infini_bench.tasks.names import parse_length

    if isinstance(value, str) and value.strip().lower()[-1:] in ("k", "m"):
        value = parse_length(value)
    return as_int(value, key)


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
        trust_remote_code=as_bool(metadata.get("trust_remote_code", False), "trust_remote_code"),
    )


def model_max_length(metadata: dict[str, Any], tokenizer: Any = None) -> int | None:
    """The model's maximum sequence length as lm-eval's model classes resolve it, or None when unknown."""
    if metadata.get("max_length") not in (None, ""):
        return as_int(metadata["max_length"], "max_length")
    pretrained = metadata.get("pretrained")
    if not isinstance(pretrained, str) or not pretrained:
        return None
    try:
        from transformers import AutoConfig

        import infini_bench  # noqa: F401  (registers the Infini config with AutoConfig)

        config = AutoConfig.from_pretrained(
            pretrained,
            revision=metadata.get("revision"),
            subfolder=metadata.get("subfolder") or "",
            trust_remote_code=as_bool(metadata.get("trust_remote_code", False), "trust_remote_code"),
        )
    except Exception as err:  # unreadable config: the model load will report it; skip nothing here
        log.warning("infini-bench: cannot read the config of %r (%s); no sample is skipped for length", pretrained, err)
        return None
    from lm_eval.models.utils import DEFAULT_MAX_LENGTH, resolve_max_length

    return resolve_max_length(config, tokenizer, default=DEFAULT_MAX_LENGTH)


def model_context(metadata: dict[str, Any], task: str) -> ModelContext:
    """Tokenizer view and maximum length for the model named in `metadata`."""
    tokenizer = _tokenizer_from(metadata, task)
    add_special = metadata.get("add_bos_token")
    view = tokenizer_view(tokenizer, True if add_special in (None, "") else as_bool(add_special, "add_bos_token"))
    return ModelContext(view=view, max_length=model_max_length(metadata, tokenizer))


def haystack_options(metadata: dict[str, Any]) -> dict[str, Any]:
    """The haystack_* options, passed to the haystack loader."""
    return {k: v for k, v in metadata.items() if k.startswith("haystack_")}
