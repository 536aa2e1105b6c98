"""Context extension (training/extend.py): the recipe's RoPE and length stages, bad input, and a tiny run end to end."""
import numpy as np
import pytest
import torch

from infini_bench.training.extend import StagedText, check_extend_recipe
from infini_bench.training.recipe import RecipeError, load_recipe

EXTEND = ["data.sequence_length=64", "data.length_stages=[16,32,64]"]


def _recipe(*overrides: str):
    return load_recipe(None, [*EXTEND, *overrides])


@pytest.mark.parametrize("rope, message", [
    ("{rope_type: yarnn, factor: 4}", "model.rope_parameters rope_type='yarnn' is unknown: choose one of"),
    ("{rope_type: yarn}", "model.rope_parameters for rope_type='yarn' needs factor"),
    ("{rope_type: linear, factor: 0.5}", "model.rope_parameters factor=0.5 is invalid for rope_type='linear': it must "
                                         "be a number >= 1"),
    ("[yarn, 4]", "model.rope_parameters=['yarn', 4] has the wrong type: expected a mapping"),
])
def test_bad_rope_parameters_are_refused_in_one_sentence(rope, message):
    with pytest.raises(RecipeError) as err:
        _recipe(f"model.rope_parameters={rope}")
    assert str(err.value).startswith(message) and "\n" not in str(err.value)


@pytest.mark.parametrize("stages, message", [
    ("[16,48,64]", "data.length_stages[1]=48 does not divide data.sequence_length=64"),
    ("[32,16,64]", "data.length_stages=[32, 16, 64] must rise stage by stage"),
    ("[16,32]", "data.length_stages ends at 32, not at data.sequence_length=64"),
])
def test_bad_length_stages_are_refused(stages, message):
    with pytest.raises(RecipeError, match=message.replace("[", r"\[").replace("]", r"\]")):
        load_recipe(None, ["data.sequence_length=64", f"data.length_stages={stages}"])


def test_an_extension_needs_rope_parameters_and_reads_no_other_model_key():
    with pytest.raises(RecipeError, match="model.rope_parameters is not set"):
        check_extend_recipe(_recipe())
    with pytest.raises(RecipeError, match="model.hidden_size cannot be set in an extension"):
        check_extend_recipe(_recipe("model.rope_parameters={rope_type: linear, factor: 2}", "model.hidden_size=96"))
    check_extend_recipe(_recipe("model.rope_parameters={rope_type: yarn, factor: 4, original_max_position_embeddings: 16}"))


def test_staged_text_trains_each_stage_on_windows_of_its_length_and_reads_every_window():
    rows = np.arange(4 * 64).reshape(4, 64)
    data = StagedText(rows, seed=0, lengths=[16, 32, 64])
    assert [data.length_at(d) for d in (0.0, 0.32, 0.34, 0.66, 0.67, 1.0)] == [16, 16, 32, 32, 64, 64]
    cursors: dict[str, int] = {}
    seen = [data.global_batch(step, 4, cursors, done=0.1).input_ids for step in range(4)]  # 16 windows of 16
    assert all(batch.shape == (4, 16) for batch in seen)
    starts = sorted(int(window[0]) for batch in seen for window in batch)
    assert starts == list(range(0, 4 * 64, 16))  # one epoch visits every window of every row once
    assert all(torch.equal(w, torch.arange(int(w[0]), int(w[0]) + 16)) for batch in seen for w in batch)
    assert cursors == {"text:16": 16}
    later = data.global_batch(4, 2, cursors, done=0.9)
    assert later.input_ids.shape == (2, 64) and later.source == "text_64" and cursors["text:64"] == 2


def test_extend_trains_a_llama_and_writes_it_back_with_the_scaled_rope(tmp_path, tiny_llama_dir):
    from transformers import LlamaForCausalLM

    from infini_bench.modeling import load_infini
    from infini_bench.training.commands import extend_main

    corpus = tmp_path / "long.txt"
    corpus.write_text("def f(x):\n    return x + 1\n" * 400)
    out = tmp_path / "run"
    code = extend_main(["--from", str(tiny_llama_dir), "model.rope_parameters={rope_type: linear, factor: 4.0}",
                        "data.source=files", f"data.paths=[{corpus}]", "data.sequence_length=64",
                        "data.length_stages=[32,64]", "optim.batch_size=2", "optim.micro_batch_size=2",
                        f"run.output_dir={out}", "run.max_steps=2", "run.save_every=2"])
    assert code == 0
    llama = LlamaForCausalLM.from_pretrained(out / "llama").eval()
    assert llama.config.rope_parameters["rope_type"] == "linear" and llama.config.rope_parameters["factor"] == 4.0
    assert llama.config.max_position_embeddings == 64
    trained = load_infini(out / "latest").eval()
    assert not trained.config.use_memory and trained.config.segment_length == 64
    ids = torch.randint(0, llama.config.vocab_size, (1, 64))
    with torch.no_grad():
        assert torch.allclose(llama(ids).logits, trained(ids).logits, atol=1e-5)
