"""RoPE from transformers: every rope_type its Llama supports gives, memory off and one segment over the input, the
Llama's own logits; the type survives the export back; bad RoPE settings fail on construction, by name."""
import json

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from infini_bench import InfiniConfig, InfiniForCausalLM
from infini_bench.modeling import infini_to_llama, llama_to_infini

HEAD_DIM = 16
LENGTH = 48  # longer than the original lengths below, so every scaled type is in its scaled regime
ROPES = {
    "default": {"rope_type": "default", "rope_theta": 10000.0},
    "linear": {"rope_type": "linear", "rope_theta": 10000.0, "factor": 2.0},
    "dynamic": {"rope_type": "dynamic", "rope_theta": 10000.0, "factor": 2.0},
    "yarn": {"rope_type": "yarn", "rope_theta": 10000.0, "factor": 4.0, "original_max_position_embeddings": 16},
    "longrope": {
        "rope_type": "longrope", "rope_theta": 10000.0, "original_max_position_embeddings": 16,
        "short_factor": [1.0 + 0.1 * i for i in range(HEAD_DIM // 2)],
        "long_factor": [1.5 + 0.5 * i for i in range(HEAD_DIM // 2)],
    },
    # Llama 3.x's own settings (Llama 3.1 8B's config.json), with a short original length
    "llama3": {
        "rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0, "low_freq_factor": 1.0,
        "high_freq_factor": 4.0, "original_max_position_embeddings": 16,
    },
}


def tiny_llama(rope: dict) -> LlamaForCausalLM:
    torch.manual_seed(3)
    config = LlamaConfig(
        vocab_size=97, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=32, rope_parameters=dict(rope),
    )
    return LlamaForCausalLM(config).eval()


@pytest.mark.parametrize("rope_type", list(ROPES))
def test_converted_llama_of_every_rope_type_reproduces_llama_and_exports_back(rope_type):
    llama = tiny_llama(ROPES[rope_type])
    model = llama_to_infini(llama, segment_length=LENGTH, use_memory=False).eval()
    assert model.config.rope_parameters["rope_type"] == rope_type
    ids = torch.randint(0, 97, (2, LENGTH))
    with torch.no_grad():
        expected = llama(ids).logits
        torch.testing.assert_close(model(ids).logits, expected, rtol=1e-5, atol=1e-5)
        back = infini_to_llama(model).eval()
        assert back.config.rope_parameters == llama.config.rope_parameters
        torch.testing.assert_close(back(ids).logits, expected, rtol=1e-5, atol=1e-5)


def test_a_scaled_rope_really_changes_the_model():
    """The comparison above would pass vacuously if every type computed the default frequencies."""
    ids = torch.randint(0, 97, (1, LENGTH))
    with torch.no_grad():
        logits = {t: llama_to_infini(tiny_llama(ROPES[t]), segment_length=LENGTH, use_memory=False)(ids).logits
                  for t in ROPES}
    for rope_type in ROPES:
        if rope_type not in ("default", "llama3"):  # llama3 changes theta too: compared with its own default below
            assert not torch.allclose(logits["default"], logits[rope_type], atol=1e-4), rope_type
    llama3_default = {"rope_type": "default", "rope_theta": ROPES["llama3"]["rope_theta"]}
    with torch.no_grad():
        plain = llama_to_infini(tiny_llama(llama3_default), segment_length=LENGTH, use_memory=False)(ids).logits
    assert not torch.allclose(plain, logits["llama3"], atol=1e-4)


def test_a_scaled_rope_streams_segment_by_segment_as_one_call():
    """Positions restart in every segment: a YaRN model streamed in pieces equals one call over many segments."""
    model = llama_to_infini(tiny_llama(ROPES["yarn"]), segment_length=8, gate_init="randn").eval()
    ids = torch.randint(0, 97, (1, 8 * 4 + 3))
    with torch.no_grad():
        whole = model(ids).logits
        cache, pieces = None, []
        for a, b in [(0, 5), (5, 21), (21, 35)]:
            out = model(ids[:, a:b], cache=cache)
            cache, pieces = out.cache, pieces + [out.logits]
    torch.testing.assert_close(torch.cat(pieces, dim=1), whole, rtol=1e-5, atol=1e-5)


def test_an_older_config_with_rope_theta_is_the_default_rope(tmp_path):
    config = InfiniConfig(vocab_size=97, hidden_size=64, intermediate_size=96, num_hidden_layers=1,
                          num_attention_heads=4, rope_theta=500000.0, segment_length=8)
    assert config.rope_parameters == {"rope_type": "default", "rope_theta": 500000.0}
    InfiniForCausalLM(config).save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    saved.pop("rope_parameters")
    saved["rope_theta"] = 250000.0  # as an older checkpoint wrote it
    (tmp_path / "config.json").write_text(json.dumps(saved))
    assert InfiniConfig.from_pretrained(tmp_path).rope_parameters == {"rope_type": "default", "rope_theta": 250000.0}


@pytest.mark.parametrize(
    "rope, message",
    [
        ({"rope_type": "ntk_by_parts"}, "rope_type='ntk_by_parts' is unknown: choose one of"),
        ({"rope_type": "yarn", "original_max_position_embeddings": 2048}, "rope_type='yarn' needs factor"),
        ({"rope_type": "linear", "factor": 0.5}, "factor=0.5 is invalid for rope_type='linear': it must be a number >= 1"),
        ({"rope_type": "default", "partial_rotary_factor": 0.5}, "partial_rotary_factor=0.5 is not supported"),
        ("yarn", "rope_parameters='yarn' is invalid: it must be a dict"),
    ],
)
def test_bad_rope_parameters_fail_on_construction_by_name(rope, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        InfiniConfig(hidden_size=64, num_attention_heads=4, rope_parameters=rope)
