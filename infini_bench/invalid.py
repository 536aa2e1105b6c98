"""The mark of a document the model could not score (its logits were NaN or infinite), shared by the adapter that
sets it and the tasks that count it.

With `--model_args ...,non_finite=invalid`, `--model infini` answers such a document's `generate_until` request
with `INVALID_ANSWER` and its `loglikelihood(_rolling)` requests with NaN instead of stopping the run. The tasks
then leave the document out of their scores and count it in an `invalid` metric (the share of documents marked
invalid), so a broken model shows as "invalid", never as a quiet 0 %. Without that model arg the run stops.
"""
from __future__ import annotations

import math
from typing import Any

NON_FINITE_MODES = ("error", "invalid")
INVALID_ANSWER = "<infini-bench: invalid document, the model's logits were not finite>"


def marks_invalid(metadata: dict[str, Any]) -> bool:
    """Whether the evaluated model was told to mark documents invalid (lm-eval copies model args into the task
    metadata), so the task adds its `invalid` metric and scores only the valid documents."""
    return str(metadata.get("non_finite", "error")).strip().lower() == "invalid"


def is_invalid(result: Any) -> bool:
    """A model answer that marks its document invalid: the answer string, or a NaN log-likelihood."""
    if isinstance(result, (list, tuple)) and result:
        result = result[0]
    if isinstance(result, str):
        return result == INVALID_ANSWER
    return isinstance(result, float) and math.isnan(result)
