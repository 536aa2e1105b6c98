"""nanotron's Infini-attention passkey prompt as a `PasskeyStyle`: the `passkey_nanotron_<len>` tasks' text.

Transcribed from huggingface/nanotron, branch ``xrsrke/infini_attention_this_actually_works`` (last commit 0d99cfb),
``examples/infinite-context-length/generate_data.py`` as of commit 8aa0ee59 ("backup before cleaning", 2024-07-29):
the version with ``--num_shots`` / ``--num_digits`` that made ``nanotron/llama3-1024-passkey-retrieval-eval`` (its
``scripts/run_generate_1024_passkey_eval_data.sh``; the set's rows, shown in ``data/exp34/debug_eval_dataset.ipynb``,
carry ``num_shots``, ``num_digits``, ``token_count`` and the shot passages, which no earlier version writes) and that
``scripts/run_passkey_eval.py`` evaluates. The earlier versions (4e18fac5-dcbe86e8, which made the 16k set) have no
shots, no "Passage:" and join the question with ``". \\n\\n"``.

Their prompt is ``PROMPT.format(soft_prompt, context_with_needle, retrieval_question)`` with ``PROMPT = "{} {}. {}"``::

    There is a pass key hidden inside a lot of irrelevant text. Find it and memorize them. I will quiz you about
    what is the pass key later on. \\n[shot passages] \\n Passage:  The grass is green. ... The sky. The pass key is
    4721. Remember it. 4721 is the pass key.  is blue. ... There and back again. What is the pass key? The pass
    key is 

(the soft prompt ends in " \\n", each shot passage starts with "\\n Passage: " and ends in " \\n"; the context is
"\\n Passage: " plus the haystack files, whose text starts with a space: "Passage:  The" with two spaces in their
rows). The needle goes into the context's tokens at the depth: before "\\n Passage: " at depth 0, after the whole
haystack at 100, else inside the haystack, which then continues where it was cut (no restart). Keys are
``np.random.randint(10**(d-1), 10**d - 1)`` (the upper end excluded), never a shot key (312, 415, 34).

What differs (tasks/README.md's anchor table has the full list): the length is exact in the evaluated model's tokens
(theirs: about ``context_length`` Llama-3 tokens minus the question, ~1004 of 1024); the haystack before the needle
ends after a whole word at the depth's share of the haystack tokens (theirs: a token index whose search back to a "."
mixes characters and tokens, so it lands on an arbitrary token); the haystack is this project's filler (the same
sentences as their rows; their ``haystack_txt`` files are not in their repository); keys are drawn per document from
its seed (theirs: one NumPy stream per job, unique within the job).
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from infini_bench.data.assemble import Needle, Part, Span
from infini_bench.data.docs import PromptFrame
from infini_bench.data.haystack import Haystack
from infini_bench.data.passkey import MAX_DIGITS, PasskeyStyle

NANOTRON_FAMILY = "passkey_nanotron"
SOFT_PROMPT = (
    "There is a pass key hidden inside a lot of irrelevant text. Find it and memorize them. "
    "I will quiz you about what is the pass key later on. \n"
)
#: The three shot passages, in order (`num_shots` takes the first N), and their keys.
SHOT_PASSAGES: tuple[str, ...] = (
    "\n Passage: The gatecode is 312. Remember it. 312 is the gatecode. The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again. The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again. What is the gatecode? The gatecode is 312. \n",
    "\n Passage: The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again. The vault key is 415. Remember it. 415 is the vault key. The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again. What is the gatecode? The vault key is 415. \n",
    "\n Passage: The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again. The grass is green. The sky is blue. The sun is yellow. Here we go. The encrypted message is 34. Remember it. 34 is the encrypted message. There and back again. What is the encrypted message? The encrypted message is 34. \n",
)
SHOT_KEYS: tuple[int, ...] = (312, 415, 34)
PASSAGE_HEAD = "\n Passage: "
NANOTRON_NEEDLE = ". The pass key is {key}. Remember it. {key} is the pass key. "
NANOTRON_ASK = "What is the pass key?"
#: The answer prefix with its trailing space: their question is "What is the pass key? The pass key is ".
NANOTRON_PREFIX = "The pass key is "
#: What joins the context to the question (``PROMPT = "{} {}. {}"``).
QUESTION_JOIN = ". "
#: run_passkey_eval.py's ``--max-new-tokens`` default: the answer budget.
NANOTRON_ANSWER_TOKENS = 15
#: generate_data.py's ``--num_digits`` default.
NANOTRON_DIGITS = 4


def check_num_shots(value: Any) -> int:
    """`num_shots` as an int in 0-3, else one sentence naming the value."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= len(SHOT_PASSAGES):
        raise ValueError(
            f"num_shots must be 0, 1, 2 or 3 (nanotron's generate_data.py has three shot passages), got {value!r}"
        )
    return value


def nanotron_key(seed: int, num_digits: int = NANOTRON_DIGITS) -> str:
    """A key as generate_data.py's ``generate_random_number`` draws it (``randint(10**(d-1), 10**d - 1)``, the
    upper end excluded), redrawn while it is a shot key; driven by the document's seed."""
    if isinstance(num_digits, bool) or not isinstance(num_digits, int) or not 1 <= num_digits <= MAX_DIGITS:
        raise ValueError(f"num_digits must be a whole number from 1 to {MAX_DIGITS}, got {num_digits!r}")
    rng = random.Random(int(seed))
    low, high = 10 ** (num_digits - 1), 10**num_digits - 2  # NumPy's randint excludes its upper bound
    while True:
        key = rng.randint(low, high)
        if key not in SHOT_KEYS:
            return str(key)


def nanotron_match(response: str, answer: str) -> float:
    """nanotron's score: 1.0 when the key's digits occur anywhere in the generation (``str(answer) in response``:
    their ``hope.ipynb`` and RRaAy-H/nanotron-infini's ``run_passkey_eval.py``), else 0.0."""
    return float(str(answer) in (response or ""))


@dataclass(frozen=True)
class NanotronStyle(PasskeyStyle):
    """nanotron's passkey prompt with `num_shots` shot passages (see the module docstring)."""

    family: str = NANOTRON_FAMILY
    prefix: str = NANOTRON_PREFIX
    num_shots: int = 0

    def __post_init__(self) -> None:
        check_num_shots(self.num_shots)

    @property
    def soft_prompt(self) -> str:
        return SOFT_PROMPT + "".join(SHOT_PASSAGES[: self.num_shots])

    def key(self, seed: int, n_digits: int) -> str:
        return nanotron_key(seed, n_digits)

    def needle(self, key: str) -> str:
        return NANOTRON_NEEDLE.format(key=key)

    def answer(self, key: str) -> tuple[str, str]:
        return NANOTRON_ASK + " " + NANOTRON_PREFIX, key  # the prefix ends in a space: the key follows directly

    def fixed_text(self, frame: PromptFrame, needle: str) -> str:
        head, tail = self._ends(frame)
        return head + PASSAGE_HEAD + needle + tail

    def _ends(self, frame: PromptFrame) -> tuple[str, str]:
        return frame.before + self.soft_prompt + " ", QUESTION_JOIN + NANOTRON_ASK + frame.between + self.prefix + frame.after

    def parts(self, frame: PromptFrame, hay: Haystack, needle: str, cut: int | None) -> list[Part]:
        """The context is "\\n Passage: " and the haystack from its leading space (their files' text); the needle
        comes before the context at depth 0, after it at 100, else at the cut with the haystack going on from there."""
        head, tail = self._ends(frame)
        if cut is None:
            return [head + PASSAGE_HEAD, Span(hay, 0), Needle(needle), tail]
        if cut <= hay.start:
            return [head, Needle(needle), PASSAGE_HEAD, Span(hay, 0), tail]
        return [head + PASSAGE_HEAD, Span(hay, 0, cut), Needle(needle), Span(hay, cut), tail]

    def cache_fields(self) -> dict[str, Any]:
        return {"style": NANOTRON_FAMILY, "num_shots": self.num_shots}

    def doc_fields(self) -> dict[str, Any]:
        return {"num_shots": self.num_shots}
