"""Checking `--model_args` / `--device` / `--batch_size` values for `--model infini` before anything is loaded.

lm-eval hands model args over as strings already cast by `simple_parse_args_string` ("16" -> 16, "true" -> True),
so every check here names the offending value and says what would be accepted: a user meets these messages
instead of a traceback from deep inside torch or transformers.
"""
from __future__ import annotations

import logging

import torch

from infini_bench.modeling.checkpoint import DTYPES
from infini_bench.validation import as_truth, as_whole

logger = logging.getLogger(__name__)


class InfiniArgumentError(ValueError):
    """A bad `--model_args` (or `--device` / `--batch_size`) value for `--model infini`."""


def positive_int(name: str, value: object) -> int:
    """A whole number >= 1 by the project's one rule (`infini_bench.validation.as_whole`)."""
    number = as_whole(value, 1)
    if number is None:
        raise InfiniArgumentError(f"{name}={value!r} is invalid: it must be a positive integer")
    return number


def token_id(name: str, value: object) -> int:
    number = as_whole(value, 0)
    if number is None:
        raise InfiniArgumentError(f"{name}={value!r} is invalid: it must be a token id (an integer >= 0)")
    return number


def optional_positive_int(name: str, value: object) -> int | None:
    return None if value is None else positive_int(name, value)


def choice(name: str, value: object, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise InfiniArgumentError(f"{name}={value!r} is unknown: choose one of {', '.join(allowed)}")
    return value  # type: ignore[return-value]


def boolean(name: str, value: object) -> bool:
    """True or false as task options read them (`infini_bench.validation.as_truth`: "yes" and "on" too)."""
    truth = as_truth(value)
    if truth is None:
        raise InfiniArgumentError(f"{name}={value!r} is invalid: use true or false")
    return truth


def dtype_name(value: object) -> str:
    """One of the names `load_infini` accepts (checked here so the message names the model arg)."""
    if isinstance(value, torch.dtype):
        for name, dtype in DTYPES.items():
            if dtype == value:
                return name
    if not isinstance(value, str) or value not in DTYPES:
        raise InfiniArgumentError(f"dtype={value!r} is unknown: choose one of {', '.join(DTYPES)}")
    return value


def batch_size(value: object) -> int | str:
    """An integer >= 1, or "auto" ("auto:N" is read as "auto": one probe suffices because an Infini model's
    memory per request does not depend on its length)."""
    if isinstance(value, str):
        text = value.strip()
        if text == "auto" or text.startswith("auto:"):
            return "auto"
    number = as_whole(value, 1)
    if number is None:
        raise InfiniArgumentError(f"batch_size={value!r} is invalid: use a positive integer or 'auto'")
    return number


def resolve_device(requested: str | None) -> torch.device:
    """The device to run on. lm-eval's CLI passes `cuda:0` by default even on machines without CUDA: then the
    adapter runs on the CPU after one warning instead of failing."""
    if requested is None or str(requested).strip() == "":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(str(requested).strip())
    except (RuntimeError, ValueError):
        raise InfiniArgumentError(f"device={requested!r} is not a device: use cpu, cuda or cuda:N") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            logger.warning("device=%r was requested but CUDA is not available here: running on the CPU", requested)
            return torch.device("cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise InfiniArgumentError(
                f"device={requested!r} does not exist: this machine has {torch.cuda.device_count()} CUDA device(s)"
            )
    elif device.type == "mps" and not torch.backends.mps.is_available():
        logger.warning("device=%r was requested but MPS is not available here: running on the CPU", requested)
        return torch.device("cpu")
    return device
