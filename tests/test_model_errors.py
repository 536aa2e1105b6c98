"""Bad input to the model gives a clear error that names the value."""
import pytest
import torch

from infini_bench import InfiniConfig, InfiniForCausalLM, load_infini


def small(**kw):
    base = dict(vocab_size=50, hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                segment_length=4)
    base.update(kw)
    return InfiniConfig(**base)


@pytest.mark.parametrize(
    "field, value, pattern",
    [
        ("memory_update", "quadratic", "memory_update='quadratic'"),
        ("gate_activation", "relu", "gate_activation='relu'"),
        ("segment_length", 0, "segment_length=0"),
        ("segment_length", 2.5, "segment_length=2.5"),
        ("gate_init", "ones", "gate_init='ones'"),
        ("num_key_value_heads", 3, "num_key_value_heads=3"),
        ("memory_conv_size", 1, "memory_conv_size=1 is invalid: use 0 .none. or a width >= 2"),
        ("memory_conv_size", -4, "memory_conv_size=-4"),
        ("memory_conv_size", True, "memory_conv_size=True"),
    ],
)
def test_bad_config_values(field, value, pattern):
    with pytest.raises(ValueError, match=pattern):
        small(**{field: value})


@pytest.mark.parametrize(
    "ids, error, pattern",
    [
        (torch.rand(1, 5), TypeError, "dtype torch.float32"),
        (torch.ones(5, dtype=torch.long), ValueError, r"shape \[batch, seq_len\].*\(5,\)"),
        (torch.ones(1, 0, dtype=torch.long), ValueError, r"\(1, 0\)"),
        (torch.full((1, 3), 50), ValueError, "token id 50"),
        ([[1, 2, 3]], TypeError, "list"),
    ],
)
def test_bad_input_ids(ids, error, pattern):
    model = InfiniForCausalLM(small())
    with pytest.raises(error, match=pattern):
        model(ids)


def test_padding_is_refused():
    model = InfiniForCausalLM(small())
    with pytest.raises(ValueError, match="padding"):
        model(torch.ones(1, 3, dtype=torch.long), attention_mask=torch.tensor([[0, 1, 1]]))


def test_decoded_token_on_an_accelerator_is_not_read():
    """One token on a non-CPU device skips the value checks (a host sync per generated token on CUDA); a prompt
    there, and everything on the CPU, is still checked (the tests above)."""
    from infini_bench.modeling.modeling_infini import reads_values

    assert not reads_values(torch.empty(2, 1, dtype=torch.long, device="meta"))
    assert reads_values(torch.empty(2, 5, dtype=torch.long, device="meta"))
    assert reads_values(torch.ones(2, 1, dtype=torch.long))


def test_memory_batch_mismatch():
    model = InfiniForCausalLM(small())
    state = model(torch.ones(2, 3, dtype=torch.long)).cache
    with pytest.raises(ValueError, match="batch of 2"):
        model(torch.ones(1, 3, dtype=torch.long), cache=state)


def test_missing_checkpoint_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_infini(tmp_path / "nope")


def test_checkpoint_without_weights(tmp_path):
    small().save_pretrained(tmp_path)
    with pytest.raises(FileNotFoundError, match="has no weights"):
        load_infini(tmp_path)


def test_folder_without_config(tmp_path):
    with pytest.raises(FileNotFoundError, match="no config.json"):
        load_infini(tmp_path)


def test_unknown_dtype(tmp_path):
    with pytest.raises(ValueError, match="dtype='float8'"):
        load_infini(tmp_path, dtype="float8")


def test_llama_needs_explicit_conversion(tiny_llama_dir):
    with pytest.raises(ValueError, match="convert_llama=True"):
        load_infini(tiny_llama_dir)
    model = load_infini(tiny_llama_dir, convert_llama=True, segment_length=16)
    assert model.config.segment_length == 16
