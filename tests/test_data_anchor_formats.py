"""Documents built by each family, on fixed seeds, compared with the anchor's own format: Landmark Attention's
passkey prompt (epfml/landmark-attention llama/run_test.py, generate_prompt) and RULER's NIAH prompt
(NVIDIA/RULER scripts/data/synthetic/niah.py + constants.py + synthetic.yaml, as lm-eval's port sends it with
gen_prefix). The anchors' text below is copied from their code."""
from __future__ import annotations

import re

import pytest

from infini_bench.data import CACHE_ENV, Cell, PasskeySpec, build_niah_sample, build_passkey_sample, niah_spec
from infini_bench.data.corpus import stdlib_prose
from infini_bench.data.haystack import normalise_text
from infini_bench.data.niah import VARIANTS, default_answer_tokens

# -- Landmark Attention, llama/run_test.py ---------------------------------------------------------------------------
LANDMARK_TASK = (
    "There is an important info hidden inside a lot of irrelevant text. Find it and memorize them. "
    "I will quiz you about the important information there."
)
LANDMARK_GARBAGE = "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again."


def landmark_prompt(n_garbage_prefix: int, n_garbage_suffix: int, pass_key: int) -> str:
    """generate_prompt with its two random draws (the prefix length and the key) given."""
    garbage_inf = " ".join([LANDMARK_GARBAGE] * 2000)
    lines = [
        LANDMARK_TASK,
        garbage_inf[:n_garbage_prefix],
        f"The pass key is {pass_key}. Remember it. {pass_key} is the pass key.",
        garbage_inf[:n_garbage_suffix],
        "What is the pass key? The pass key is",
    ]
    return "\n".join(lines)


# -- RULER, scripts/data/synthetic/constants.py and niah.py ----------------------------------------------------------
RULER_TEMPLATE = (
    "Some special magic {type_needle_v} are hidden within the following text. Make sure to memorize it. I will quiz "
    "you about the {type_needle_v} afterwards.\n{context}\nWhat are all the special magic {type_needle_v} for {query} "
    "mentioned in the provided text?"
)
RULER_ANSWER_PREFIX = " The special magic {type_needle_v} for {query} mentioned in the provided text are"
RULER_NEEDLE = "One of the special magic {type_needle_v} for {key} is: {value}."
UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}"
WORD = r"[a-z]+-[a-z]+"


def ruler_input(doc: dict, context: str) -> str:
    """RULER's input_text + answer_prefix for this document's query, type and count of answers (niah.py)."""
    template, type_needle_v = RULER_TEMPLATE + RULER_ANSWER_PREFIX, doc["type_needle_v"]
    if len(doc["answers"]) == 1:  # num_needle_q * num_needle_v == 1
        template = template.replace("Some", "A").replace("are all", "is").replace("are", "is")
        template = template.replace("answers", "answer")
        type_needle_v = type_needle_v[:-1]
    return template.format(type_needle_v=type_needle_v, context=context, query=doc["query"])


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))


@pytest.mark.parametrize("depth", [0, 5, 50, 95, 100])
def test_passkey_is_landmarks_prompt(tiny_tokenizer, depth):
    doc = build_passkey_sample(tiny_tokenizer, PasskeySpec(answer_tokens=16), Cell(700, depth, 11))
    lines = doc["prompt"].split("\n")
    assert len(lines) == 5
    assert doc["prompt"] == landmark_prompt(len(lines[1]), len(lines[3]), int(doc["answer"]))
    assert len(tiny_tokenizer(doc["prompt"])["input_ids"]) == doc["prompt_tokens"] == 700 - 16
    assert (lines[1] == "") == (depth == 0) and (lines[3] == "") == (depth == 100)
    garbage_inf = " ".join([LANDMARK_GARBAGE] * 2000)
    if 0 < depth < 100:
        assert garbage_inf[len(lines[1])] == " "  # the garbage before the key ends after a whole word
        assert abs(doc["needle_depth_percent"] - depth) < 3
    assert doc["gen_prefix"] == "The pass key is" and doc["prompt"].endswith("What is the pass key? The pass key is")


def _context(doc: dict) -> str:
    head_end = doc["prompt"].index("afterwards.\n") + len("afterwards.\n")
    return doc["prompt"][head_end : doc["prompt"].rindex("\nWhat ")]


@pytest.mark.parametrize("variant", ["single_1", "single_2", "single_3", "multikey_1", "multikey_2", "multikey_3",
                                     "multivalue", "multiquery"])
@pytest.mark.parametrize("depth", [0, 40, 100])
def test_niah_is_rulers_prompt(tiny_tokenizer, variant, depth):
    doc = build_niah_sample(tiny_tokenizer, niah_spec(variant), Cell(2000, depth, 7))
    context = _context(doc)
    assert doc["prompt"] == ruler_input(doc, context)  # RULER's wording, newlines, singular/plural, answer prefix
    assert doc["prompt"].endswith("mentioned in the provided text? " + doc["gen_prefix"])
    singular = len(doc["answers"]) == 1
    type_v = doc["type_needle_v"][:-1] if singular else doc["type_needle_v"]
    assert doc["gen_prefix"] == (  # lm-eval's port (lm_eval/tasks/ruler/prepare_niah.py) sends this as gen_prefix
        f"The special magic {type_v} for {doc['query']} mentioned in the provided text {'is' if singular else 'are'}"
    )
    needles = [RULER_NEEDLE.format(type_needle_v=doc["type_needle_v"], key=k, value=v)
               for k, v in zip(doc["needle_keys"], doc["needle_values"])]
    kinds = {"single_1": "noise", "multikey_2": "needle", "multikey_3": "needle"}
    kind = kinds.get(variant, "essay")
    if kind == "essay":  # one paragraph: " ".join(sentences with the needles between them)
        assert "\n" not in context
        rest = context
        for needle in needles:
            assert re.search(rf"(^| ){re.escape(needle)}( |$)", context), needle
            rest = rest.replace(needle + " ", "", 1) if needle + " " in rest else rest.replace(" " + needle, "", 1)
        essay = normalise_text(stdlib_prose())[1:]
        rest = re.sub("  +", " ", rest)  # two needles at one sentence boundary leave RULER's empty group between
        assert essay.startswith(rest.strip())  # the essay text from its beginning, as RULER's haystack[:n] is
    else:  # one filler (or distractor needle) per line, each needle a line of its own
        lines = context.split("\n")
        assert all(needle in lines for needle in needles)
        others = [line for line in lines if line not in needles]
        if kind == "noise":
            assert all(line == LANDMARK_GARBAGE for line in others[:-1]) and LANDMARK_GARBAGE.startswith(others[-1])
        else:
            key, value = (UUID, UUID) if variant == "multikey_3" else (WORD, r"\d{7}")
            pattern = re.compile(RULER_NEEDLE.format(type_needle_v=doc["type_needle_v"], key=key, value=value)
                                 .replace(".", r"\.").replace(r"\d{7}\.", r"\d{7}\."))
            assert all(pattern.fullmatch(line) for line in others[:-1]) and others[-1].startswith("One of the")
            assert not {k for k in doc["needle_keys"]} & {line.split(" for ")[1].split(" is:")[0] for line in others[:-1]}
    value = UUID if doc["type_needle_v"] == "uuids" else r"\d{7}"
    assert all(re.fullmatch(value, v) for v in doc["needle_values"])
    expected = {"single_1": (1, 1, 1), "single_2": (1, 1, 1), "single_3": (1, 1, 1), "multikey_1": (4, 1, 1),
                "multikey_2": (1, 1, 1), "multikey_3": (1, 1, 1), "multivalue": (1, 4, 1), "multiquery": (4, 1, 4)}
    k, v, q = expected[variant]
    assert len(set(doc["needle_keys"])) == k and len(doc["needle_values"]) == k * v and len(doc["queries"]) == q
    if q > 1:
        assert doc["query"] == ", ".join(doc["queries"][:-1]) + ", and " + doc["queries"][-1]
    assert len(tiny_tokenizer(doc["prompt"])["input_ids"]) + doc["answer_tokens"] == 2000
    assert doc["answer_tokens"] == default_answer_tokens(2000, VARIANTS[variant])  # RULER's 128 from 4K on
