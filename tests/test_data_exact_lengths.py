"""Prompts are exactly the requested length in the model's own tokens, for every common tokenizer family.

Each tokenizer is trained here, offline, in the shape of a real family: byte-level BPE (GPT-2 / Llama-3 style),
the same with a BOS template, SentencePiece-style Metaspace BPE, the Llama-2 fast tokenizer's normaliser (a "▁"
prepended to every input, no pre-tokenizer), and a BPE with no pre-tokenisation at all whose tokens cross spaces.
"""
from __future__ import annotations

import pytest
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

from conftest import TOKENIZER_CORPUS
from infini_bench.data import CACHE_ENV, Cell, PasskeySpec, build_niah_sample, build_passkey_sample, niah_spec, tokenizer_view
from infini_bench.data.haystack import FILLER
from infini_bench.data.niah import NIAH_NEEDLE, VARIANTS
from infini_bench.data.passkey import PASSKEY_NEEDLE

SPECIALS = ["<s>", "</s>", "<pad>", "<unk>"]


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
CORPUS = TOKENIZER_CORPUS * 20 + [FILLER * 3, " ".join("0123456789" * 3)]


def _wrap(tok: Tokenizer, bos_template: bool) -> PreTrainedTokenizerFast:
    if bos_template:
        tok.post_processor = processors.TemplateProcessing(
            single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", tok.token_to_id("<s>"))]
        )
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>")


def _byte_level(bos_template: bool) -> PreTrainedTokenizerFast:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400, special_tokens=SPECIALS, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False
    )
    tok.train_from_iterator(CORPUS, trainer=trainer)
    return _wrap(tok, bos_template)


def _metaspace(llama2_normaliser: bool) -> PreTrainedTokenizerFast:
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first")
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="first")
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=SPECIALS, show_progress=False)
    tok.train_from_iterator(CORPUS, trainer=trainer)
    if llama2_normaliser:  # the Llama-2 tokenizer.json shape: normaliser does the "▁" work, no pre-tokenizer
        tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
        tok.pre_tokenizer = None
        tok.decoder = decoders.Sequence(
            [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(" ", 1, 0)]
        )
    return _wrap(tok, bos_template=True)


def _no_pretokenizer() -> PreTrainedTokenizerFast:
    tok = Tokenizer(models.BPE())
    tok.decoder = decoders.ByteLevel()
    tok.normalizer = normalizers.NFC()
    trainer = trainers.BpeTrainer(vocab_size=500, special_tokens=SPECIALS, show_progress=False)
    tok.train_from_iterator(CORPUS, trainer=trainer)
    return _wrap(tok, bos_template=False)


@pytest.fixture(scope="module")
def tokenizers_by_family(tiny_tokenizer):
    return {
        "tiny-bytelevel-digits": tiny_tokenizer,
        "bytelevel": _byte_level(bos_template=False),
        "bytelevel+bos": _byte_level(bos_template=True),
        "metaspace+bos": _metaspace(llama2_normaliser=False),
        "llama2-normaliser": _metaspace(llama2_normaliser=True),
        "no-pretokenizer": _no_pretokenizer(),
    }


FAMILIES = ["tiny-bytelevel-digits", "bytelevel", "bytelevel+bos", "metaspace+bos", "llama2-normaliser", "no-pretokenizer"]


@pytest.mark.parametrize("family", FAMILIES)
def test_passkey_prompt_is_exactly_the_requested_length(family, tokenizers_by_family):
    tok = tokenizers_by_family[family]
    for length in (300, 1024, 3000):
        for depth in (0, 25, 50, 100):
            sample = build_passkey_sample(tok, PasskeySpec(answer_tokens=16), Cell(length, depth, length + depth))
            ids = tok(sample["prompt"])["input_ids"]
            assert ids == sample["input_ids"], (family, length, depth, sample["build_method"])
            assert len(ids) + 16 == length == sample["context_length"]
            assert sample["prompt_tokens"] == len(ids)
            needle = PASSKEY_NEEDLE.format(key=sample["answer"])
            assert sample["prompt"].split("\n")[2] == needle, "the needle is Landmark's third line"


@pytest.mark.parametrize("family", FAMILIES)
def test_trainer_sample_prompt_plus_answer_fills_the_context(family, tokenizers_by_family):
    tok = tokenizers_by_family[family]
    sample = build_passkey_sample(tok, PasskeySpec(), Cell(2048, 40, 99))
    assert len(sample["input_ids"]) + len(sample["answer_ids"]) == 2048
    assert tok(sample["prompt"])["input_ids"] == sample["input_ids"]
    if family != "no-pretokenizer":  # there the answer's first token may merge with the question's last
        full = tok(sample["prompt"] + " " + sample["answer"])["input_ids"]
        assert full == sample["input_ids"] + sample["answer_ids"], "answer tokens are not the in-context tokens"
        assert tok.decode(sample["answer_ids"]).strip() == sample["answer"]


@pytest.mark.parametrize("family", ["bytelevel+bos", "llama2-normaliser", "no-pretokenizer"])
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_niah_prompt_is_exactly_the_requested_length(family, variant, tokenizers_by_family):
    tok = tokenizers_by_family[family]
    for depth in (0, 70, 100):
        sample = build_niah_sample(tok, niah_spec(variant), Cell(1500, depth, 5))
        ids = tok(sample["prompt"])["input_ids"]
        assert ids == sample["input_ids"], (family, variant, depth, sample["build_method"])
        assert len(ids) + sample["answer_tokens"] == 1500
        for key, value in zip(sample["needle_keys"], sample["needle_values"]):
            needle = NIAH_NEEDLE.format(type_needle_v=sample["type_needle_v"], key=key, value=value)
            position = sample["prompt"].index(needle)
            assert sample["prompt"][position - 1] in " \n" and sample["prompt"][position + len(needle)] in " \n"


def test_bos_template_is_counted(tokenizers_by_family):
    view = tokenizer_view(tokenizers_by_family["bytelevel+bos"])
    assert view.lead == [view.backend.token_to_id("<s>")] and view.trail == []
    sample = build_passkey_sample(tokenizers_by_family["bytelevel+bos"], PasskeySpec(answer_tokens=10), Cell(500, 50, 1))
    assert sample["input_ids"][0] == view.lead[0] and len(sample["input_ids"]) == 490


def test_add_bos_token_false_counts_without_bos(tokenizers_by_family):
    tok = tokenizers_by_family["bytelevel+bos"]
    sample = build_passkey_sample(tok, PasskeySpec(answer_tokens=10), Cell(500, 50, 1), add_special_tokens=False)
    assert tok(sample["prompt"], add_special_tokens=False)["input_ids"] == sample["input_ids"]
    assert len(sample["input_ids"]) == 490


def test_tokenizer_merging_across_spaces_takes_the_retokenised_path(tokenizers_by_family):
    sample = build_passkey_sample(tokenizers_by_family["no-pretokenizer"], PasskeySpec(answer_tokens=16), Cell(2000, 60, 8))
    assert sample["build_method"] == "retokenised"
    assert len(tokenizers_by_family["no-pretokenizer"](sample["prompt"])["input_ids"]) == 2000 - 16


def test_million_token_prompt_is_exact_and_stitched(tiny_tokenizer):
    sample = build_passkey_sample(tiny_tokenizer, PasskeySpec(answer_tokens=16), Cell(1 << 20, 37, 3))
    assert sample["build_method"] == "stitched"
    assert len(sample["input_ids"]) == (1 << 20) - 16
    assert len(tiny_tokenizer(sample["prompt"])["input_ids"]) == (1 << 20) - 16
    assert abs(sample["needle_depth_percent"] - 37) < 0.01
