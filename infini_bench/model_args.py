"""Which lm-eval model args name a model and which only say how it runs, in one rule for both places that ask
"is this the same model?": `infini-bench eval`'s ``--use_cache`` check (`harness.model_identity`) and the report's
merging of results files into models and its labels (`reports/labels.py`). Standard library only, so the report
and the plugin hook import it without torch or lm-eval."""
from __future__ import annotations

from collections.abc import Mapping
from typing import TypeVar

#: Model args that change where and how fast a model runs, not its answers: they never split one model into two.
RUNTIME_ARGS = frozenset(
    {"device", "batch_size", "max_batch_size", "parallelize", "trust_remote_code", "device_map", "use_cache"}
)

Value = TypeVar("Value")


def identifying_args(model_args: Mapping[str, Value]) -> dict[str, Value]:
    """The model args that say which model it is (`RUNTIME_ARGS` left out), sorted by name."""
    return {key: value for key, value in sorted(model_args.items()) if key not in RUNTIME_ARGS}
