"""The static cache and the compiled decode step (issue 24, item 2) against the dynamic `InfiniCache` path: the
same logits per step and the same tokens (greedy, sampling, beams) across several segment boundaries; the step
compiles as one graph that does not recompile from position to position; CUDA graphs on a GPU."""
from __future__ import annotations

import pytest
import torch
from transformers import CompileConfig

from infini_bench.model_adapters import InfiniLM
from infini_bench.model_adapters.options import InfiniArgumentError
from infini_bench.modeling import InfiniStaticCache
from lm_eval.api.instance import Instance
from test_adapter_support import infini_dir, passkey_prompt  # noqa: F401
from test_model import tiny_model

SEG = 8  # tiny_model's segment_length
GENERATE = dict(max_new_tokens=20, eos_token_id=None, pad_token_id=0)


def _generate(model, prompt, seed: int = 3, **kwargs) -> torch.Tensor:
    torch.manual_seed(seed)
    with torch.no_grad():
        return model.generate(prompt, **GENERATE, **kwargs)


def _cpu_compile(backend: str) -> CompileConfig:
    """A compile config `generate` honours on the CPU; `fullgraph=True` makes any graph break an error."""
    config = CompileConfig(backend=backend, fullgraph=True, mode=None)
    config._compile_all_devices = True
    return config


@pytest.mark.parametrize(
    "overrides",
    [dict(memory_update="linear"), dict(memory_update="delta", memory_conv_size=3),
     dict(memory_update="delta_l2", memory_conv_size=4, attn_implementation="eager"),
     dict(memory_update="gated_delta", memory_conv_size=4, memory_eps=0.0), dict(use_memory=False)],
)
def test_each_step_gives_the_dynamic_logits_and_state(overrides):
    """A prompt ending exactly on a segment boundary, then 30 single tokens (almost four more segments): the
    static step's logits within 1e-5 of the dynamic path's at every step, and the same memory at the end."""
    attn = overrides.pop("attn_implementation", None)
    model = tiny_model(**overrides)
    if attn:
        model.config._attn_implementation = attn
    prompt, steps = torch.randint(3, 97, (2, 2 * SEG)), torch.randint(3, 97, (2, 30))
    with torch.no_grad():
        dynamic = model(prompt).cache
        static = InfiniStaticCache.from_cache(model.config, dynamic)
        assert static.position == 0 and static.segments == 2
        for t in range(steps.shape[1]):
            want = model(steps[:, t : t + 1], cache=dynamic)
            got = model(steps[:, t : t + 1], cache=static)
            dynamic = want.cache
            assert got.cache is static and (got.logits - want.logits).abs().max() <= 1e-5, f"step {t}"
    assert (static.segments, static.position, static.seen_tokens) == (dynamic.segments, dynamic.position, 46)
    assert int(static.position_tensor) == dynamic.position
    for mine, theirs in zip(static.layers, dynamic.layers):
        torch.testing.assert_close(mine.memory, theirs.memory, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(mine.keys[:, :, : dynamic.position], theirs.keys, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "prompt_len, kwargs",
    [(2 * SEG, dict(do_sample=False)), (2 * SEG + 3, dict(do_sample=False)),
     (2 * SEG, dict(do_sample=True, top_k=20, num_return_sequences=2)),
     (2 * SEG + 3, dict(do_sample=False, num_beams=3))],
)
def test_generate_with_a_static_cache_equals_the_dynamic_path(prompt_len, kwargs):
    """`cache_implementation="static"`: the same tokens as the dynamic cache, with the prompt ending on a boundary
    or inside a segment and 20 new tokens (prompt + generation: 4-5 segments)."""
    model = tiny_model(memory_update="delta_l2", memory_conv_size=3)
    prompt = torch.randint(3, 97, (2, prompt_len))
    dynamic = _generate(model, prompt, **kwargs)
    static = _generate(model, prompt, cache_implementation="static", **kwargs)
    assert dynamic.shape[1] == prompt_len + 20 and torch.equal(static, dynamic)


def test_a_prefilled_cache_decodes_in_place_and_the_buffers_are_reused():
    """The adapter's route: the prompt but its last token prefilled (in pieces, through the static cache
    itself), then `generate(cache=...)`; and `generate` reuses one set of buffers per batch size."""
    model = tiny_model(memory_update="gated_delta", memory_conv_size=4)
    prompt = torch.randint(3, 97, (1, 2 * SEG + 1))  # the prefilled part ends exactly on a boundary
    fresh = _generate(model, prompt)
    with torch.no_grad():
        dynamic = model(prompt[:, :5]).cache
        static = InfiniStaticCache.from_cache(model.config, dynamic)
        model(prompt[:, 5:-1], cache=static)  # a several-token call continues the static cache in place
        assert (static.seen_tokens, static.position, static.segments) == (2 * SEG, 0, 2)
    assert torch.equal(_generate(model, prompt, cache=static), fresh)
    first = _generate(model, prompt, cache_implementation="static", return_dict_in_generate=True).cache
    address = first.layers[0].keys.data_ptr()
    second = _generate(model, prompt, cache_implementation="static", return_dict_in_generate=True)
    assert second.cache is first and first.layers[0].keys.data_ptr() == address
    assert torch.equal(second.sequences, fresh)


def test_compiled_step_is_one_graph_with_no_recompilation_across_positions():
    """`generate` compiles the decode step (`get_compiled_call`) with fullgraph=True: one graph, captured once
    for every position of every segment (a second generation under `error_on_recompile` passes four segment
    boundaries), and the same tokens as the dynamic path. aot_eager runs AOTAutograd's functionalisation of the
    in-place buffer writes, as inductor does."""
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    model = tiny_model(memory_update="delta_l2", memory_conv_size=4)
    prompt = torch.randint(3, 97, (2, 2 * SEG + 3))
    config = _cpu_compile("aot_eager")
    assert torch.equal(_generate(model, prompt, cache_implementation="static", compile_config=config),
                       _generate(model, prompt))
    assert counters["stats"]["unique_graphs"] == 1
    other = torch.randint(3, 97, (2, 2 * SEG))
    with torch._dynamo.config.patch(error_on_recompile=True):
        compiled = _generate(model, other, cache_implementation="static", compile_config=config)
    assert torch.equal(compiled, _generate(model, other)) and counters["stats"]["unique_graphs"] == 1


def test_compiled_step_searches_beams_as_the_dynamic_path():
    """Beam search reorders the rows of the static buffers in place between compiled steps; sampling seeded
    draws from the same logits (the step is the greedy test's, the sampling happens outside it)."""
    torch._dynamo.reset()
    model = tiny_model(memory_update="gated_delta", memory_conv_size=3)
    prompt = torch.randint(3, 97, (1, 2 * SEG - 1))
    config = _cpu_compile("eager")
    for kwargs in (dict(do_sample=False, num_beams=3), dict(do_sample=True, top_k=20, num_return_sequences=3)):
        compiled = _generate(model, prompt, cache_implementation="static", compile_config=config, **kwargs)
        assert torch.equal(compiled, _generate(model, prompt, **kwargs)), kwargs


def test_static_cache_errors_are_one_sentence():
    model = tiny_model()
    with pytest.raises(ValueError, match="cache_implementation='offloaded_static' is not supported by an Infini"):
        _generate(model, torch.randint(3, 97, (1, 5)), cache_implementation="offloaded_static")
    with pytest.raises(RuntimeError, match="under torch.no_grad"):
        model(torch.randint(3, 97, (1, 1)), cache=InfiniStaticCache(model.config, 1, "cpu", torch.float32))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs (reduce-overhead) need a CUDA device")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_cuda_graphs_decode_as_the_dynamic_path(dtype):
    """transformers' own auto-compilation on CUDA (inductor, reduce-overhead): CUDA graphs are used (no skip),
    the second call neither recompiles nor re-records (same buffers); float32 gives the dynamic path's tokens,
    bf16 its logits to bf16 precision (inductor fuses the same maths in another order)."""
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    model = tiny_model(memory_update="delta_l2", memory_conv_size=4).to("cuda", dtype)
    prompt = torch.randint(3, 97, (2, 2 * SEG + 3), device="cuda")
    kwargs = dict(output_logits=True, return_dict_in_generate=True, do_sample=False)
    dynamic = _generate(model, prompt, **kwargs)
    for call in range(2):  # the second call replays the graphs recorded by the first, in the same buffers
        with torch._dynamo.config.patch(error_on_recompile=call == 1):
            compiled = _generate(model, prompt, cache_implementation="static", **kwargs)
        assert counters["inductor"]["cudagraph_skips"] == 0, dict(counters["inductor"])
        steps = torch.stack(compiled.logits), torch.stack(dynamic.logits)
        if dtype == torch.float32:
            assert torch.equal(compiled.sequences, dynamic.sequences)
            torch.testing.assert_close(*steps, rtol=1e-4, atol=1e-4)
        else:  # compare the first step's logits, before any token may differ
            torch.testing.assert_close(steps[0][0], steps[1][0], rtol=0.05, atol=0.05)


def test_adapter_decodes_through_the_static_cache_when_asked(infini_dir):  # noqa: F811
    prompts = [passkey_prompt("48213", 4), passkey_prompt("7261", 3, depth=0.2)]
    requests = [Instance("generate_until", {}, (p, {"until": [], "max_gen_toks": 20}), i)
                for i, p in enumerate(prompts)]
    default = InfiniLM(pretrained=str(infini_dir), device="cpu", batch_size=2)
    static = InfiniLM(pretrained=str(infini_dir), device="cpu", batch_size=2, static_cache=True)
    assert default.get_model_info()["static_cache"] is False and static.get_model_info()["static_cache"] is True
    assert static.generate_until(requests, disable_tqdm=True) == default.generate_until(requests, disable_tqdm=True)
    with pytest.raises(InfiniArgumentError, match="compile=true needs static_cache=true"):
        InfiniLM(pretrained=str(infini_dir), device="cpu", compile=True)
