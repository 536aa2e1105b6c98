"""Shared pieces of the adapter tests: a tiny Infini checkpoint on disk, passkey-style prompts, and the direct
computations the adapter is checked against (no tests here)."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from infini_bench import InfiniConfig, InfiniForCausalLM
from model_reference import reference_logits

SEGMENT = 16


def build_infini_checkpoint(path: Path, tokenizer, segment_length: int = SEGMENT, seed: int = 0) -> Path:
    """A random Infini model (random β, so memory weighs in every head) saved with its tokenizer."""
    torch.manual_seed(seed)
    config = InfiniConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        segment_length=segment_length,
        gate_init="randn",
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    InfiniForCausalLM(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def infini_dir(tmp_path_factory, tiny_tokenizer) -> Path:
    return build_infini_checkpoint(tmp_path_factory.mktemp("tiny_infini"), tiny_tokenizer)


def passkey_prompt(passkey: str, filler_repeats: int, depth: float = 0.5) -> str:
    filler = "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again. "
    before = int(filler_repeats * depth)
    return (
        "There is an important info hidden inside a lot of irrelevant text. Find it and memorize it. "
        + filler * before
        + f"The pass key is {passkey}. Remember it. {passkey} is the pass key. "
        + filler * (filler_repeats - before)
        + "What is the pass key? The pass key is"
    )


def direct_logprob(model: InfiniForCausalLM, context: list[int], continuation: list[int]) -> tuple[float, bool]:
    """log p(continuation | context) from one float64 pass over the whole sequence (tests/model_reference.py,
    written from docs/ARCHITECTURE.md §2 and sharing no code with the model)."""
    ids = torch.tensor([context + continuation[:-1]])
    logits = reference_logits(model, ids)[0, -len(continuation) :]
    logprobs = torch.log_softmax(logits, dim=-1)
    wanted = torch.tensor(continuation)
    total = float(logprobs.gather(-1, wanted[:, None]).sum())
    return total, bool((logits.argmax(-1) == wanted).all())


def greedy_by_recomputation(model: InfiniForCausalLM, prompt: list[int], max_new: int, eos: int) -> list[int]:
    """Greedy decoding the slow way: the whole sequence is run again for every new token (no state kept)."""
    ids = list(prompt)
    new: list[int] = []
    with torch.no_grad():
        for _ in range(max_new):
            token = int(model(torch.tensor([ids])).logits[0, -1].argmax())
            new.append(token)
            if token == eos:
                break
            ids.append(token)
    return new
