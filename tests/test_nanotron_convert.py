"""nanotron Infini-attention checkpoints in: tiny checkpoints written in nanotron's on-disk layout (tp 1 and 2, every
balance_act_type, GQA), converted, and their logits over several segments compared with a float64 transcription of
nanotron's forward (tests/nanotron_reference.py), run per tensor-parallel rank on the shards as written."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from infini_bench import InfiniForCausalLM
from infini_bench.modeling import load_infini
from infini_bench.modeling.nanotron import NanotronCheckpointError, convert_nanotron_checkpoint, load_nanotron

from nanotron_fixture import infini_args, model_config, random_weights, write_checkpoint
from nanotron_reference import nanotron_logits

ACT_TYPES = ["orig_sigmoid", "orig_tanh", "hard_sigmoid", "tanh_abs"]
TOLERANCE = 1e-5  # relative error of float32 logits against the float64 reference


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).norm() / b.double().norm())


def ids_for(mc: dict, length: int = 8 * 3 + 5) -> torch.Tensor:
    """Two rows of three whole segments of 8 and a partial one."""
    return torch.randint(0, mc["vocab_size"], (2, length), generator=torch.Generator().manual_seed(7))


def converted(tmp_path: Path, mc: dict, infini: dict, tp: int, **write) -> tuple[InfiniForCausalLM, list[dict]]:
    ranks = write_checkpoint(tmp_path / "nanotron", random_weights(mc, seed=tp), mc, infini, tp=tp, **write)
    out, _ = convert_nanotron_checkpoint(tmp_path / "nanotron", tmp_path / "infini")
    return AutoModelForCausalLM.from_pretrained(out).eval(), ranks


@pytest.mark.parametrize("tp", [1, 2])
@pytest.mark.parametrize("act_type", ACT_TYPES)
def test_converted_checkpoint_computes_nanotrons_forward(tmp_path, act_type, tp):
    """GQA (4 query heads on 2 kv heads), interleaved RoPE (nanotron's default), memory on, 3.6 segments."""
    mc, infini = model_config(), infini_args(balance_act_type=act_type)
    model, ranks = converted(tmp_path, mc, infini, tp)
    assert isinstance(model, InfiniForCausalLM)
    c = model.config
    assert (c.memory_update, c.memory_eps, c.use_memory, c.segment_length) == ("delta", 0.0, True, 8)
    ids = ids_for(mc)
    reference = nanotron_logits(ranks, mc, infini, ids)
    with torch.no_grad():
        error = relative_error(model(ids).logits, reference)
    print(f"nanotron exactness: balance_act_type={act_type} tp={tp} GQA 4/2 interleaved: relative error {error:.2e}")
    assert error <= TOLERANCE
    # the memory is really part of what is compared: nanotron without it computes something else
    assert relative_error(nanotron_logits(ranks, mc, dict(infini, turn_on_memory=False), ids), reference) > 1e-2


@pytest.mark.parametrize("interleaved", [True, False])
def test_rope_layouts_without_gqa_and_tied_embeddings(tmp_path, interleaved):
    """nanotron's other qkv path (H = H_kv: one view of [q | k | v]), tied embeddings (one vocabulary-parallel
    table), both RoPE layouts; the layout really matters (the other one is far off)."""
    mc = model_config(num_key_value_heads=4, rope_interleaved=interleaved, tie_word_embeddings=True)
    infini = infini_args(balance_act_type="hard_sigmoid")
    model, ranks = converted(tmp_path, mc, infini, tp=2)
    ids = ids_for(mc)
    with torch.no_grad():
        logits = model(ids).logits
    error = relative_error(logits, nanotron_logits(ranks, mc, infini, ids))
    print(f"nanotron exactness: H = H_kv, tied, rope_interleaved={interleaved}, tp=2: relative error {error:.2e}")
    assert error <= TOLERANCE
    other = nanotron_logits(ranks, dict(mc, rope_interleaved=not interleaved), infini, ids)
    assert relative_error(logits, other) > 1e-3


def test_turn_on_memory_false_is_the_memory_off_model(tmp_path):
    mc, infini = model_config(), infini_args(turn_on_memory=False, balance_act_type="orig_tanh")
    model, ranks = converted(tmp_path, mc, infini, tp=1)
    assert model.config.use_memory is False
    ids = ids_for(mc)
    with torch.no_grad():
        error = relative_error(model(ids).logits, nanotron_logits(ranks, mc, infini, ids))
    print(f"nanotron exactness: turn_on_memory=false: relative error {error:.2e}")
    assert error <= TOLERANCE


def test_streaming_the_converted_model_equals_one_call(tmp_path):
    """Pieces that cross segment boundaries, carried in the cache, give the logits of one call (and nanotron's)."""
    mc, infini = model_config(), infini_args(balance_act_type="orig_tanh")
    model, ranks = converted(tmp_path, mc, infini, tp=2)
    ids = ids_for(mc, 8 * 4 + 3)
    with torch.no_grad():
        whole = model(ids).logits
        pieces, cache, start = [], None, 0
        for n in (5, 3, 11, 8, 1, 7):
            out = model(ids[:, start : start + n], cache=cache)
            pieces.append(out.logits)
            cache, start = out.cache, start + n
    assert start == ids.shape[1]
    assert relative_error(torch.cat(pieces, dim=1), whole) <= TOLERANCE
    assert relative_error(whole, nanotron_logits(ranks, mc, infini, ids)) <= TOLERANCE


def run(*args):
    script = Path(sys.executable).with_name("infini-bench")  # the console script installed beside this Python
    return subprocess.run([str(script), *args], capture_output=True, text=True)


def test_cli_converts_a_tp2_checkpoint_with_its_tokenizer(tmp_path, tiny_llama_dir):
    """`infini-bench convert --from-nanotron`: weights, config and the tokenizer config.yaml names (on disk)."""
    tokenizer = AutoTokenizer.from_pretrained(tiny_llama_dir)
    mc = model_config(vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    infini = infini_args(balance_act_type="tanh_abs")
    ranks = write_checkpoint(tmp_path / "nt", random_weights(mc), mc, infini, tp=2, tokenizer=str(tiny_llama_dir),
                             dtype=torch.bfloat16)
    proc = run("convert", "--from-nanotron", str(tmp_path / "nt"), "--to", str(tmp_path / "out"))
    assert proc.returncode == 0, proc.stderr
    assert "wrote Infini checkpoint" in proc.stdout and "note:" not in proc.stderr
    model = load_infini(tmp_path / "out")
    assert model.config.gate_activation == "tanh_abs"
    assert AutoTokenizer.from_pretrained(tmp_path / "out").get_vocab() == tokenizer.get_vocab()
    assert json.loads((tmp_path / "out" / "nanotron_source.json").read_text())["converted_from"].endswith("nt")
    ids = ids_for(mc)
    with torch.no_grad():  # bf16 weights, exactly widened to float32
        assert relative_error(model(ids).logits, nanotron_logits(ranks, mc, infini, ids)) <= TOLERANCE


def test_llama_options_are_refused_with_from_nanotron(tmp_path, capsys):
    from infini_bench.cli import main

    with pytest.raises(SystemExit) as exit_:
        main(["convert", "--from-nanotron", str(tmp_path), "--to", str(tmp_path / "o"), "--segment-length", "8"])
    assert exit_.value.code == 2
    assert "--segment-length cannot be used with --from-nanotron: the checkpoint's config.yaml sets the model" in capsys.readouterr().err


def test_a_tokenizer_not_on_disk_is_a_note_not_a_failure(tmp_path, tiny_llama_dir):
    mc, infini = model_config(), infini_args()
    write_checkpoint(tmp_path / "nt", random_weights(mc), mc, infini, tokenizer="nobody/no-such-tokenizer")
    with pytest.raises(FileNotFoundError, match=r"--tokenizer '.*none' cannot be loaded"):
        convert_nanotron_checkpoint(tmp_path / "nt", tmp_path / "bad", tokenizer=str(tmp_path / "none"))
    assert not (tmp_path / "bad").exists() and not (tmp_path / "bad.partial").exists()
    given, note = convert_nanotron_checkpoint(tmp_path / "nt", tmp_path / "given", tokenizer=str(tiny_llama_dir))
    assert note is None and (given / "tokenizer_config.json").is_file()
    out, note = convert_nanotron_checkpoint(tmp_path / "nt", tmp_path / "out")
    assert "names the tokenizer 'nobody/no-such-tokenizer', which is not on disk" in note and "--tokenizer PATH" in note
    assert (out / "config.json").is_file() and not (out / "tokenizer_config.json").exists()


def test_loading_a_nanotron_folder_directly_names_the_convert_command(tmp_path):
    """`load_infini` (and so `--model infini,pretrained=DIR`) fails at once with the exact command to run."""
    from infini_bench.model_adapters import InfiniLM
    from infini_bench.model_adapters.options import InfiniArgumentError

    mc, infini = model_config(), infini_args()
    write_checkpoint(tmp_path / "step100", random_weights(mc), mc, infini)
    command = f"infini-bench convert --from-nanotron {tmp_path / 'step100'} --to {tmp_path / 'step100-infini'}"
    with pytest.raises(ValueError, match="is a nanotron checkpoint: convert it first with") as err:
        load_infini(tmp_path / "step100")
    assert command in str(err.value)
    with pytest.raises(InfiniArgumentError) as err:
        InfiniLM(pretrained=str(tmp_path / "step100"), device="cpu")
    assert command in str(err.value)


# --- bad input: one sentence each ------------------------------------------------------------------------------


def test_a_folder_that_is_not_a_nanotron_checkpoint(tmp_path, tiny_llama_dir, capsys):
    from infini_bench.cli import main

    assert main(["convert", "--from-nanotron", str(tiny_llama_dir), "--to", str(tmp_path / "o")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("infini-bench convert: error: ") and err.count("\n") == 1
    assert f"'{tiny_llama_dir}' is not a nanotron checkpoint: it needs config.yaml and a model/ folder" in err
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_nanotron(tmp_path / "missing")


def test_a_missing_shard_is_named(tmp_path):
    mc, infini = model_config(), infini_args()
    write_checkpoint(tmp_path / "nt", random_weights(mc), mc, infini, tp=2)
    shard = tmp_path / "nt/model/model/decoder/1/pp_block/attn/qkv_proj/model_weight_pp-rank-0-of-1_tp-rank-1-of-2.safetensors"
    shard.unlink()
    with pytest.raises(NanotronCheckpointError) as err:
        load_nanotron(tmp_path / "nt")
    assert str(err.value) == (
        f"the shard {str(shard)!r} of model.decoder.1.pp_block.attn.qkv_proj.weight is missing (tensor parallel size 2): "
        "copy the checkpoint again"
    )


def test_an_unknown_balance_act_type_is_refused(tmp_path):
    mc = model_config()
    write_checkpoint(tmp_path / "nt", random_weights(mc), mc, infini_args(balance_act_type="swish"))
    with pytest.raises(NanotronCheckpointError, match=r"infini_attention.balance_act_type='swish' is unknown: nanotron's "
                       r"Infini-attention knows orig_sigmoid, orig_tanh, hard_sigmoid, tanh_abs"):
        load_nanotron(tmp_path / "nt")


def test_settings_the_model_cannot_reproduce_are_refused_by_name(tmp_path):
    mc, infini = model_config(), infini_args()
    write_checkpoint(tmp_path / "mup", random_weights(mc), mc, infini, init_method={"use_mup": True})
    with pytest.raises(NanotronCheckpointError, match=r"use_mup=true \(is_using_mup\) is not supported: .* 1/d"):
        load_nanotron(tmp_path / "mup")
    write_checkpoint(tmp_path / "gelu", random_weights(mc), dict(mc, hidden_act="gelu"), infini)
    with pytest.raises(NanotronCheckpointError, match=r"hidden_act='gelu' is not supported"):
        load_nanotron(tmp_path / "gelu")
    write_checkpoint(tmp_path / "bias", random_weights(mc), mc, infini)
    extra = tmp_path / "bias/model/model/decoder/0/pp_block/attn/qkv_proj/model_bias_pp-rank-0-of-1_tp-rank-0-of-1.safetensors"
    extra.write_bytes((tmp_path / "bias/model/model/decoder/0/pp_block/attn/model_balance_factors_pp-rank-0-of-1_tp-rank-0-of-1.safetensors").read_bytes())
    with pytest.raises(NanotronCheckpointError, match="model_bias_pp-rank-0-of-1_tp-rank-0-of-1.safetensors' is not a weight"):
        load_nanotron(tmp_path / "bias")
