"""Long documents tokenised in parallel pieces give exactly the ids of one call, for byte-level BPE (the project's
tokenizers), a SentencePiece-style Metaspace tokenizer with BOS, and a tokenizer whose tokens cross spaces (there
the cut check must fail and the one-call encoding is used)."""
from __future__ import annotations

import sysconfig
from pathlib import Path

import pytest
from tokenizers import Tokenizer, models, pre_tokenizers, decoders, processors, trainers
from transformers import PreTrainedTokenizerFast

from infini_bench.model_adapters import long_text
from infini_bench.model_adapters.long_text import cut_points, encode_long

STDLIB = Path(sysconfig.get_paths()["stdlib"])


@pytest.fixture(scope="module")
def text() -> str:
    """About 300K characters of real text: code, docstrings, unicode, runs of spaces and newlines."""
    parts = [(STDLIB / name).read_text() for name in ("argparse.py", "dataclasses.py", "textwrap.py", "pathlib.py")]
    return "\n".join(parts) + " naïve café — 東京 " * 50


def _fast(tok: Tokenizer, **special) -> PreTrainedTokenizerFast:
    return PreTrainedTokenizerFast(tokenizer_object=tok, **special)


def _trained(model, pre_tokenizer, text: str, trainer) -> Tokenizer:
    tok = Tokenizer(model)
    if pre_tokenizer is not None:
        tok.pre_tokenizer = pre_tokenizer
    tok.train_from_iterator([text[i : i + 2000] for i in range(0, 60000, 2000)], trainer)
    return tok


def test_byte_level_bpe_pieces_equal_one_call(tiny_tokenizer, text):
    cuts = cut_points(text, 4096)
    assert len(cuts) > 40 and all(text[c] == " " and not text[c - 1].isspace() for c in cuts)
    for special in ({}, {"add_special_tokens": False}):
        assert encode_long(tiny_tokenizer, text, special, piece_chars=4096) == tiny_tokenizer.encode(text, **special)


def test_metaspace_tokenizer_with_bos_pieces_equal_one_call(text):
    tok = _trained(models.BPE(unk_token="<unk>"), pre_tokenizers.Metaspace(), text,
                   trainers.BpeTrainer(vocab_size=400, special_tokens=["<unk>", "<s>"]))
    tok.decoder = decoders.Metaspace()
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    fast = _fast(tok, bos_token="<s>", unk_token="<unk>")
    ids = encode_long(fast, text, {}, piece_chars=4096)
    assert ids[0] == 1 and ids == fast.encode(text)


def test_tokens_that_cross_spaces_fall_back_to_one_call(text, monkeypatch):
    """No pre-tokenizer: BPE merges across spaces, so some cut disagrees with the window and is caught."""
    tok = _fast(_trained(models.BPE(unk_token="<unk>"), None, text,
                         trainers.BpeTrainer(vocab_size=600, special_tokens=["<unk>"])), unk_token="<unk>")
    verdicts = []
    check = long_text._cut_agrees
    monkeypatch.setattr(long_text, "_cut_agrees", lambda *a: verdicts.append(check(*a)) or verdicts[-1])
    assert encode_long(tok, text, {}, piece_chars=4096) == tok.encode(text)
    assert False in verdicts


def test_short_texts_are_one_call(tiny_tokenizer):
    assert cut_points("short text " * 10, 4096) == []
    assert encode_long(tiny_tokenizer, "The pass key is 12345.", {}) == tiny_tokenizer.encode("The pass key is 12345.")
