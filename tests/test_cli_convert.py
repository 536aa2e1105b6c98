"""`infini-bench convert` end to end, through the installed console script."""
import subprocess
import sys
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

from infini_bench import InfiniForCausalLM


def run(*args):
    script = Path(sys.executable).with_name("infini-bench")  # the console script installed beside this Python
    return subprocess.run([str(script), *args], capture_output=True, text=True)


def test_convert_writes_a_loadable_infini_checkpoint(tiny_llama_dir, tmp_path):
    out = tmp_path / "infini"
    proc = run("convert", "--from", str(tiny_llama_dir), "--to", str(out), "--segment-length", "32",
               "--gate-init", "-1.5", "--memory-update", "delta_l2", "--memory-conv-size", "4")
    assert proc.returncode == 0, proc.stderr
    model = AutoModelForCausalLM.from_pretrained(out).eval()
    assert isinstance(model, InfiniForCausalLM) and model.config.segment_length == 32
    assert model.config.memory_conv_size == 4
    assert model.model.layers[0].self_attn.memory_conv.weight[:, 0, -1].eq(1).all()  # the identity
    assert torch.all(model.model.layers[0].self_attn.gate == -1.5)
    assert AutoTokenizer.from_pretrained(out).get_vocab() == AutoTokenizer.from_pretrained(tiny_llama_dir).get_vocab()
    llama = LlamaForCausalLM.from_pretrained(tiny_llama_dir).eval()
    ids = torch.randint(0, llama.config.vocab_size, (1, 32))
    model.config.use_memory = False
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits, llama(ids).logits, rtol=1e-5, atol=1e-5)


def test_convert_errors_name_the_value(tmp_path, tiny_llama_dir):
    proc = run("convert", "--from", str(tmp_path / "missing"), "--to", str(tmp_path / "o"), "--segment-length", "8")
    assert proc.returncode == 1 and "missing" in proc.stderr and "does not exist" in proc.stderr
    assert "Traceback" not in proc.stderr
    proc = run("convert", "--from", str(tiny_llama_dir), "--to", str(tmp_path / "o"), "--segment-length", "0")
    assert proc.returncode == 1 and "segment_length=0" in proc.stderr
    proc = run("frobnicate")
    assert proc.returncode == 2 and "unknown command 'frobnicate'" in proc.stderr


def test_convert_accepts_every_memory_rule_the_model_knows(tiny_llama_dir, tmp_path, capsys):
    """The choices are InfiniConfig's own list: delta_l2 converts too, with its write-strength projection."""
    import pytest
    from safetensors import safe_open

    from infini_bench.cli import main
    from infini_bench.modeling.configuration_infini import MEMORY_UPDATES

    with pytest.raises(SystemExit):
        main(["convert", "--help"])
    assert f"--memory-update {{{','.join(MEMORY_UPDATES)}}}" in capsys.readouterr().out
    out = tmp_path / "delta_l2"
    proc = run("convert", "--from", str(tiny_llama_dir), "--to", str(out), "--segment-length", "16",
               "--memory-update", "delta_l2", "--gate-activation", "tanh")
    assert proc.returncode == 0, proc.stderr
    with safe_open(out / "model.safetensors", "pt") as weights:
        saved = set(weights.keys())
    model = AutoModelForCausalLM.from_pretrained(out)
    assert len(model.model.layers) == 2
    for i, layer in enumerate(model.model.layers):
        assert {f"model.layers.{i}.self_attn.write_strength.weight", f"model.layers.{i}.self_attn.write_strength.bias"} <= saved
        assert layer.self_attn.write_strength.weight.shape == (2, 64)  # one write strength per key/value head
    assert (model.config.memory_update, model.config.gate_activation) == ("delta_l2", "tanh")
    ids = torch.randint(0, model.config.vocab_size, (1, 40))  # 2.5 segments: the memory is written and read
    with torch.no_grad():
        assert torch.isfinite(model(ids).logits).all()
