"""The local attention's backends (SDPA, eager; flash-attn refused off CUDA), the bounded generation cache, and the
offline tokenizer."""
import math

import pytest
import torch
from transformers import AutoTokenizer

from infini_bench import InfiniConfig, InfiniForCausalLM
from infini_bench.modeling import local_attention
from infini_bench.tokenizer import train_bpe_tokenizer


@pytest.mark.parametrize("implementation", ["sdpa", "eager"])
@pytest.mark.parametrize("n, t", [(5, 5), (3, 7), (1, 9)])
def test_backends_match_explicit_softmax_with_cache_prefix(n, t, implementation):
    torch.manual_seed(0)
    q, k, v = torch.randn(2, 4, n, 8), torch.randn(2, 2, t, 8), torch.randn(2, 2, t, 8)
    out = local_attention.local_causal_attention(q, k, v, scale=1 / math.sqrt(8), implementation=implementation)
    k4, v4 = k.repeat_interleave(2, dim=1), v.repeat_interleave(2, dim=1)
    scores = q @ k4.transpose(-1, -2) / math.sqrt(8)
    allowed = torch.arange(t)[None, :] <= (t - n + torch.arange(n))[:, None]
    expected = torch.softmax(scores.masked_fill(~allowed, float("-inf")), dim=-1) @ v4
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)


def test_flash_attention_off_cuda_and_unknown_backends_are_named_errors():
    q = torch.randn(1, 2, 4, 8)
    with pytest.raises(ValueError, match="flash_attention_2.*CUDA"):
        local_attention.local_causal_attention(q, q, q, 1.0, implementation="flash_attention_2")
    with pytest.raises(ValueError, match="attn_implementation='flex'"):
        local_attention.local_causal_attention(q, q, q, 1.0, implementation="flex")


def test_model_follows_attn_implementation():
    """The backend is the model's `config._attn_implementation`, as in transformers: eager and SDPA agree."""
    config = InfiniConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                          num_attention_heads=2, segment_length=8)
    torch.manual_seed(0)
    model = InfiniForCausalLM(config).eval()
    assert model.config._attn_implementation == "sdpa"
    ids = torch.randint(0, 64, (2, 21))
    with torch.no_grad():
        sdpa = model(ids).logits
        model.set_attn_implementation("eager")
        eager = model(ids).logits
    assert model.config._attn_implementation == "eager"
    torch.testing.assert_close(eager, sdpa, rtol=1e-5, atol=1e-5)


def test_generation_state_stays_bounded_by_one_segment():
    """Per-token cost cannot grow with the prompt: the state holds memory + at most one segment of keys."""
    config = InfiniConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                          num_attention_heads=2, segment_length=16)
    model = InfiniForCausalLM(config).eval()
    with torch.no_grad():
        state = model(torch.randint(0, 64, (1, 16 * 20 + 3)), logits_to_keep=1).cache
        sizes = []
        for _ in range(30):
            state = model(torch.randint(0, 64, (1, 1)), cache=state).cache
            sizes.append(state.layers[0].keys.shape[2])
    assert max(sizes) < 16 and state.layers[0].memory.shape == (1, 2, 16, 16)


def test_tokenizer_splits_digits_and_round_trips(tmp_path):
    tok = train_bpe_tokenizer(["The pass key is 12345. Remember it."] * 30, vocab_size=300)
    ids = tok("The pass key is 90541.").input_ids
    assert tok.decode(ids) == "The pass key is 90541."
    digits = [tok.decode([i]) for i in ids if tok.decode([i]).strip().isdigit()]
    assert digits == list("90541")
    tok.save_pretrained(tmp_path)
    again = AutoTokenizer.from_pretrained(tmp_path)
    assert again("key 77").input_ids == tok("key 77").input_ids and again.eos_token == "</s>"


def test_tokenizer_rejects_a_tiny_vocabulary():
    with pytest.raises(ValueError, match="vocab_size=100"):
        train_bpe_tokenizer(["text"], vocab_size=100)
