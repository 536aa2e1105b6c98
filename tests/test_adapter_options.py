"""`--model infini` model args, `--device` and `--batch_size`: bad values give one clear error naming the value."""
from __future__ import annotations

import json
import logging

import pytest
import torch
from lm_eval.api.registry import get_model

from test_adapter_support import infini_dir  # noqa: F401
from infini_bench.model_adapters import InfiniLM
from infini_bench.model_adapters.auto_batch import probe_batch_size
from infini_bench.model_adapters.options import InfiniArgumentError


def _build(arg_string: str, device: str | None = "cpu", batch_size: str | None = None) -> InfiniLM:
    """As lm-eval's CLI does: the model_args string parsed by lm-eval, plus its --device / --batch_size."""
    return get_model("infini").create_from_arg_string(arg_string, {"device": device, "batch_size": batch_size})


def test_missing_folder(tmp_path) -> None:
    missing = tmp_path / "no_such_ckpt"
    with pytest.raises(InfiniArgumentError, match="no_such_ckpt.*does not exist"):
        _build(f"pretrained={missing}")


def test_folder_without_a_model(tmp_path) -> None:
    with pytest.raises(InfiniArgumentError, match="has no config.json"):
        _build(f"pretrained={tmp_path}")


def test_folder_with_another_model_type(tmp_path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    with pytest.raises(InfiniArgumentError, match="model_type='gpt2'"):
        _build(f"pretrained={tmp_path}")


def test_pretrained_is_required() -> None:
    with pytest.raises(InfiniArgumentError, match="pretrained=None"):
        _build("dtype=float32")


def test_llama_needs_the_conversion_flag(tiny_llama_dir) -> None:
    with pytest.raises(InfiniArgumentError, match="convert_llama"):
        _build(f"pretrained={tiny_llama_dir}")
    lm = _build(f"pretrained={tiny_llama_dir},convert_llama=true,segment_length=8")
    assert lm.model.config.model_type == "infini" and lm.model.config.segment_length == 8


@pytest.mark.parametrize("value, shown", [("float8", "'float8'"), ("fp64", "'fp64'"), ("16", "16")])
def test_unknown_dtype(infini_dir, value: str, shown: str) -> None:
    with pytest.raises(InfiniArgumentError, match=f"dtype={shown} is unknown"):
        _build(f"pretrained={infini_dir},dtype={value}")


def test_dtypes_load(infini_dir) -> None:
    assert _build(f"pretrained={infini_dir},dtype=bfloat16").model.dtype == torch.bfloat16
    assert _build(f"pretrained={infini_dir},dtype=float16").model.dtype == torch.float16


@pytest.mark.parametrize("value, shown", [("0", "0"), ("-4", "-4"), ("abc", "'abc'"), ("2.5", "2.5"), ("true", "True")])
def test_segment_length_must_be_a_positive_integer(infini_dir, value: str, shown: str) -> None:
    with pytest.raises(InfiniArgumentError, match=f"segment_length={shown} is invalid"):
        _build(f"pretrained={infini_dir},segment_length={value}")


@pytest.mark.parametrize(
    "arg, shown",
    [
        ("prefill_chunk_tokens=0", "prefill_chunk_tokens=0 is invalid"),
        ("attn_implementation=flash", "attn_implementation='flash' is unknown"),
        ("memory_kernel=cuda", "memory_kernel='cuda' is unknown"),
    ],
)
def test_speed_options_are_checked(infini_dir, arg: str, shown: str) -> None:
    with pytest.raises(InfiniArgumentError, match=shown):
        _build(f"pretrained={infini_dir},{arg}")


def test_eager_attention_and_torch_kernel_load(infini_dir) -> None:
    lm = _build(f"pretrained={infini_dir},attn_implementation=eager,memory_kernel=torch,prefill_chunk_tokens=64")
    assert lm.model.config._attn_implementation == "eager" and lm.model.config.memory_kernel == "torch"
    assert lm.get_model_info()["prefill_chunk_tokens"] == 64


def test_unknown_model_arg_is_named(infini_dir) -> None:
    with pytest.raises(InfiniArgumentError, match="segment_lenght=8"):
        _build(f"pretrained={infini_dir},segment_lenght=8")


@pytest.mark.parametrize("value", ["0", "big", "-2"])
def test_bad_batch_size(infini_dir, value: str) -> None:
    with pytest.raises(InfiniArgumentError, match="batch_size="):
        _build(f"pretrained={infini_dir}", batch_size=value)


def test_batch_size_integer_and_auto(infini_dir) -> None:
    assert _build(f"pretrained={infini_dir}", batch_size="3").batch_size_per_device == 3
    auto = _build(f"pretrained={infini_dir}", batch_size="auto")
    assert auto.batch_size == "auto" and auto.batch_size_per_device == 1  # CPU: no out-of-memory probe
    assert probe_batch_size(auto.model, torch.device("cpu"), max_batch_size=4, chunk_tokens=64) == 4


def test_default_cuda_device_falls_back_to_cpu_with_one_warning(infini_dir, caplog) -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with caplog.at_level(logging.WARNING):
        lm = _build(f"pretrained={infini_dir}", device="cuda:0")
    assert lm.device == torch.device("cpu")
    warnings = [r for r in caplog.records if "CUDA is not available" in r.getMessage()]
    assert len(warnings) == 1 and "cuda:0" in warnings[0].getMessage()


def test_bad_device_is_named(infini_dir) -> None:
    with pytest.raises(InfiniArgumentError, match="device='gpu7'"):
        _build(f"pretrained={infini_dir}", device="gpu7")
