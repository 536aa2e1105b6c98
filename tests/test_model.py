"""The model against a float64 re-computation of docs/ARCHITECTURE.md §2, streaming, generation, control and conversion."""
import pytest
import torch
from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

from infini_bench import InfiniConfig, InfiniForCausalLM
from infini_bench.modeling import infini_to_llama, llama_to_infini

from model_reference import reference_logits


def tiny_config(**overrides) -> InfiniConfig:
    fields = dict(
        vocab_size=97,
        hidden_size=64,
        intermediate_size=96,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        segment_length=8,
        gate_init="randn",
        rope_theta=10000.0,
    )
    fields.update(overrides)
    return InfiniConfig(**fields)


def tiny_model(seed: int = 0, **overrides) -> InfiniForCausalLM:
    torch.manual_seed(seed)
    model = InfiniForCausalLM(tiny_config(**overrides)).eval()
    with torch.no_grad():  # weights large enough that memory retrieval visibly matters
        for layer in model.model.layers:
            layer.self_attn.gate.normal_(0.0, 1.5)
            if layer.self_attn.memory_conv is not None:  # not the identity it starts as: every tap matters
                layer.self_attn.memory_conv.weight.normal_(0.0, 0.7)
    return model


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).norm() / b.double().norm())


@pytest.mark.parametrize("memory_update", ["linear", "delta", "delta_l2", "gated_delta"])
@pytest.mark.parametrize("gate_activation", ["sigmoid", "hard_sigmoid", "tanh", "orig_tanh", "tanh_abs"])
@pytest.mark.parametrize("memory_eps", [1e-6, 0.0])
def test_logits_match_float64_reference(memory_update, gate_activation, memory_eps):
    model = tiny_model(memory_update=memory_update, gate_activation=gate_activation, memory_eps=memory_eps)
    ids = torch.randint(0, 97, (2, 8 * 3 + 5))  # three full segments and a partial one
    with torch.no_grad():
        logits = model(ids).logits
    ref = reference_logits(model, ids)
    assert relative_error(logits, ref) <= 1e-4
    # the memory really contributes: the same model without memory differs from the reference
    model.config.use_memory = False
    with torch.no_grad():
        assert relative_error(model(ids).logits, ref) > 1e-3


@pytest.mark.parametrize("memory_update", ["delta_l2", "gated_delta"])
def test_delta_l2_long_segments_are_solved_in_chunks_exactly(memory_update):
    """Segments longer than DELTA_CHUNK rows go through several triangular solves; still the token-by-token rule
    (for gated_delta, with the decay carried across the chunk boundary)."""
    from infini_bench.modeling.memory_ops import DELTA_CHUNK

    model = tiny_model(memory_update=memory_update, segment_length=DELTA_CHUNK + 16)
    ids = torch.randint(0, 97, (1, 2 * (DELTA_CHUNK + 16) + 3))
    with torch.no_grad():
        assert relative_error(model(ids).logits, reference_logits(model, ids)) <= 1e-4


def test_delta_l2_memory_stays_bounded_under_repetition():
    """The same filler written over and over: delta_l2's M settles (each write moves it toward a fixed fit), while
    the paper's delta memory and its normaliser z grow with every token, which is what fades a needle like 1/N."""
    filler = torch.randint(0, 97, (1, 8)).repeat(1, 512)

    def growth(update: str) -> float:
        model = tiny_model(memory_update=update)
        with torch.no_grad():
            short, long = (model(filler[:, :n]).cache.layers[-1].memory.norm() for n in (1024, 4096))
        return float(long / short)

    assert growth("delta_l2") < 1.25
    assert growth("gated_delta") < 1.25
    assert growth("delta") > 3.0


def test_gated_delta_decay_forgets_and_is_a_named_parameterisation():
    """gated_delta's α_t comes from Gated DeltaNet's −exp(A_log)·softplus(a_t + dt_bias): with the decay pushed to
    zero (α = 1) it is delta_l2 exactly; with a strong decay the memory of early segments is gone."""
    torch.manual_seed(0)
    gated = tiny_model(memory_update="gated_delta")
    plain = tiny_model(memory_update="delta_l2")
    missing, unexpected = plain.load_state_dict(gated.state_dict(), strict=False)
    assert not missing
    assert {k.split("self_attn.")[1] for k in unexpected} == {"decay_bias", "decay_log_rate", "decay_proj.weight"}
    ids = torch.randint(0, 97, (1, 8 * 6))
    with torch.no_grad():
        for layer in gated.model.layers:
            layer.self_attn.decay_bias.fill_(-60.0)  # softplus ≈ 0: α = 1
        torch.testing.assert_close(gated(ids).logits, plain(ids).logits, rtol=1e-5, atol=1e-5)
        for layer in gated.model.layers:
            layer.self_attn.decay_bias.fill_(20.0)  # α ≈ e^-20 per token: nothing survives a segment
        memory = gated(ids).cache.layers[0].memory
        last = gated(ids[:, -8:]).cache.layers[0].memory  # layer 0's keys and values depend on the tokens only
    assert float(memory.norm()) > 0
    torch.testing.assert_close(memory, last, rtol=1e-4, atol=1e-6)  # only the last segment's writes remain


@pytest.mark.parametrize("memory_update", ["linear", "delta", "delta_l2", "gated_delta"])
def test_memory_conv_matches_float64_reference(memory_update):
    """The memory's short convolution runs over the whole stream, across segment boundaries; starting as the
    identity, a new model equals the same model without it."""
    model = tiny_model(memory_update=memory_update, memory_conv_size=4)
    ids = torch.randint(0, 97, (2, 8 * 3 + 5))
    with torch.no_grad():
        logits = model(ids).logits
        assert relative_error(logits, reference_logits(model, ids)) <= 1e-4
        fresh = InfiniForCausalLM(model.config).eval()  # the identity convolution
        plain = InfiniForCausalLM(tiny_config(memory_update=memory_update)).eval()
        plain.load_state_dict({k: v for k, v in fresh.state_dict().items() if "memory_conv" not in k})
        torch.testing.assert_close(fresh(ids).logits, plain(ids).logits, rtol=1e-5, atol=1e-6)
        assert relative_error(plain(ids).logits, logits) > 1e-3


def test_reference_without_gqa_and_with_tied_embeddings():
    model = tiny_model(num_key_value_heads=4, tie_word_embeddings=True)
    ids = torch.randint(0, 97, (1, 20))
    with torch.no_grad():
        assert relative_error(model(ids).logits, reference_logits(model, ids)) <= 1e-4


@pytest.mark.parametrize(
    "memory_update, conv", [("linear", 0), ("delta", 0), ("delta_l2", 0), ("gated_delta", 0), ("delta_l2", 4)]
)
@pytest.mark.parametrize("chunks", [[8, 8, 8, 5], [3, 8, 1, 7, 10], [1] * 29, [29]])
def test_streaming_equals_one_call(memory_update, conv, chunks):
    model = tiny_model(memory_update=memory_update, memory_conv_size=conv)
    ids = torch.randint(0, 97, (2, sum(chunks)))
    with torch.no_grad():
        full = model(ids).logits
        state, pieces, start = None, [], 0
        for n in chunks:
            out = model(ids[:, start : start + n], cache=state)
            pieces.append(out.logits)
            state, start = out.cache, start + n
    torch.testing.assert_close(torch.cat(pieces, dim=1), full, rtol=1e-5, atol=1e-5)
    assert state.seen_tokens == sum(chunks)
    assert state.segments == sum(chunks) // 8 and state.position == sum(chunks) % 8


def test_forward_does_not_mutate_the_state_it_is_given():
    model = tiny_model()
    ids = torch.randint(0, 97, (1, 20))
    with torch.no_grad():
        state = model(ids[:, :11]).cache
        a = model(ids[:, 11:], cache=state).logits
        b = model(ids[:, 11:], cache=state).logits
    torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_causality():
    model = tiny_model()
    ids = torch.randint(0, 97, (1, 30))
    changed = ids.clone()
    changed[0, 17:] = (changed[0, 17:] + 1) % 97
    with torch.no_grad():
        a, b = model(ids).logits, model(changed).logits
    torch.testing.assert_close(a[:, :17], b[:, :17], rtol=0, atol=0)
    assert not torch.allclose(a[:, 17:], b[:, 17:])


@pytest.mark.parametrize("use_memory", [True, False])
def test_memory_off_isolates_segments(use_memory):
    """Perturbing the first two segments changes the last segment's logits only when memory is on."""
    model = tiny_model(use_memory=use_memory)
    ids = torch.randint(0, 97, (1, 32))
    changed = ids.clone()
    changed[0, :16] = (changed[0, :16] + 5) % 97
    with torch.no_grad():
        a, b = model(ids).logits[:, 24:], model(changed).logits[:, 24:]
    if use_memory:
        assert (a - b).abs().max() > 1e-4
    else:
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def _first_segment_grad(model, ids, **kwargs) -> torch.Tensor:
    """Gradient of the last segment's logits with respect to the first segment's embeddings."""
    captured = {}

    def keep(_module, _inp, out):
        out.retain_grad()
        captured["emb"] = out

    handle = model.model.embed_tokens.register_forward_hook(keep)
    try:
        model(ids, **kwargs).logits[:, 24:].sum().backward()
    finally:
        handle.remove()
    return captured["emb"].grad[:, :8]


def test_gradients_reach_the_first_segment_through_memory():
    model = tiny_model().train()
    ids = torch.randint(0, 97, (1, 32))
    assert _first_segment_grad(model, ids).abs().sum() > 0
    model.zero_grad()
    assert _first_segment_grad(model, ids, detach_every=1).abs().sum() == 0
    model.zero_grad()
    assert _first_segment_grad(model, ids, detach_every=4).abs().sum() > 0  # detached only after the last segment


def test_detach_every_is_a_forward_argument_and_old_configs_still_load(tmp_path):
    """Truncation is the trainer's setting (optim.detach_every), not the model's: a checkpoint whose config.json
    still carries the key loads, drops it, and saves without it."""
    import json

    model = tiny_model()
    model.save_pretrained(tmp_path / "old")
    config_file = tmp_path / "old" / "config.json"
    config_file.write_text(json.dumps({**json.loads(config_file.read_text()), "detach_every": 2}))
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path / "old")
    assert not hasattr(loaded.config, "detach_every") and "detach_every" not in loaded.config.to_dict()
    ids = torch.randint(0, 97, (1, 32))
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids).logits, model(ids).logits)
    with pytest.raises(ValueError, match="detach_every=-1 is invalid"):
        model(ids, detach_every=-1)


@pytest.mark.parametrize("conv", [0, 4])
def test_cached_generate_equals_recomputed_greedy(conv):
    model = tiny_model(memory_update="delta_l2", memory_conv_size=conv)
    prompt = torch.randint(3, 97, (1, 21))
    with torch.no_grad():
        generated = model.generate(prompt, max_new_tokens=20, do_sample=False, eos_token_id=None, pad_token_id=0)
        seq = prompt
        for _ in range(20):
            nxt = model(seq).logits[:, -1].argmax(-1, keepdim=True)
            seq = torch.cat([seq, nxt], dim=1)
    assert torch.equal(generated, seq)


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(do_sample=False),
        dict(do_sample=False, num_beams=3),
        dict(do_sample=False, num_beams=3, num_return_sequences=2),
        dict(do_sample=True, top_k=20, num_return_sequences=2),
    ],
)
@pytest.mark.parametrize("conv", [0, 3])
def test_generate_through_the_cache_equals_generate_without_one(kwargs, conv):
    """`generate` carries an InfiniCache through transformers' own cache interface (beam reordering, expansion):
    the same as generate recomputing every step from the whole sequence (`use_cache=False`)."""
    model = tiny_model(memory_conv_size=conv)
    prompt = torch.randint(3, 97, (2, 19))  # crosses segment boundaries while decoding
    outs = []
    for use_cache in (True, False):
        torch.manual_seed(3)
        with torch.no_grad():
            outs.append(model.generate(prompt, max_new_tokens=14, eos_token_id=None, pad_token_id=0,
                                       use_cache=use_cache, **kwargs))
    assert torch.equal(outs[0], outs[1])


def test_generate_continues_a_prefilled_cache():
    """A cache prefilled with all but the last prompt token (what the adapter does) decodes as a fresh call."""
    from infini_bench import InfiniCache

    model = tiny_model()
    prompt = torch.randint(3, 97, (1, 21))
    with torch.no_grad():
        cache = model(prompt[:, :-1]).cache
        assert isinstance(cache, InfiniCache) and cache.get_seq_length() == 20
        continued = model.generate(prompt, cache=cache, max_new_tokens=12, do_sample=False, pad_token_id=0)
        fresh = model.generate(prompt, max_new_tokens=12, do_sample=False, pad_token_id=0)
    assert torch.equal(continued, fresh)


def test_a_foreign_cache_is_refused_by_name():
    from transformers import DynamicCache

    model = tiny_model()
    filled = DynamicCache()
    filled.update(torch.zeros(1, 2, 3, 16), torch.zeros(1, 2, 3, 16), layer_idx=0)
    with pytest.raises(TypeError, match="InfiniCache.*DynamicCache holding 3 tokens"):
        model(torch.ones(1, 2, dtype=torch.long), cache=filled)


def test_sampled_generate_is_reproducible_and_valid():
    model = tiny_model()
    prompt = torch.randint(3, 97, (2, 13))
    outs = []
    for _ in range(2):
        torch.manual_seed(7)
        with torch.no_grad():
            outs.append(model.generate(prompt, max_new_tokens=10, do_sample=True, top_k=20, pad_token_id=0))
    assert outs[0].shape == (2, 23) and torch.equal(outs[0], outs[1])
    assert torch.equal(outs[0][:, :13], prompt)


def test_save_and_load_round_trip(tmp_path, tiny_tokenizer):
    model = tiny_model(vocab_size=len(tiny_tokenizer))
    model.save_pretrained(tmp_path)
    tiny_tokenizer.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").is_file() and (tmp_path / "tokenizer.json").is_file()
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    assert isinstance(loaded, InfiniForCausalLM)
    ids = torch.randint(0, len(tiny_tokenizer), (1, 19))
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids).logits, model(ids).logits, rtol=0, atol=0)
    for a, b in zip(loaded.model.layers, model.model.layers):
        assert torch.equal(a.self_attn.gate, b.self_attn.gate)


@pytest.mark.parametrize("conv", [0, 4])
def test_converted_llama_without_memory_reproduces_llama(conv):
    """The Infini-only parameters (gates, and the memory's convolution, which starts as the identity) are new; the
    rest are the Llama's, so without memory the model is the Llama."""
    torch.manual_seed(1)
    llama = LlamaForCausalLM(
        LlamaConfig(
            vocab_size=97, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2,
        )
    ).eval()
    ids = torch.randint(0, 97, (2, 40))
    model = llama_to_infini(llama, segment_length=40, use_memory=False, memory_conv_size=conv).eval()
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits, llama(ids).logits, rtol=1e-5, atol=1e-5)
    if conv:
        taps = model.model.layers[0].self_attn.memory_conv.weight[:, 0]
        assert torch.equal(taps[:, -1], torch.ones_like(taps[:, -1])) and not taps[:, :-1].any()


def test_gate_init_schemes():
    assert torch.all(InfiniForCausalLM(tiny_config(gate_init="zeros")).model.layers[0].self_attn.gate == 0)
    assert torch.all(InfiniForCausalLM(tiny_config(gate_init=-2.5)).model.layers[1].self_attn.gate == -2.5)
    gate = InfiniForCausalLM(tiny_config(gate_init="randn")).model.layers[0].self_attn.gate
    assert gate.shape == (4,) and gate.std() > 0


@pytest.mark.parametrize("conv", [0, 4])
def test_single_segment_model_without_memory_exports_as_llama(conv):
    """The quickstart's full-attention baseline is trained as a one-segment, memory-off Infini model, by the same
    recipe (so with the memory's convolution, unused, which the export drops)."""
    model = tiny_model(use_memory=False, segment_length=64, memory_conv_size=conv)
    llama = infini_to_llama(model, max_position_embeddings=4096).eval()
    ids = torch.randint(0, 97, (2, 64))
    with torch.no_grad():
        torch.testing.assert_close(llama(ids).logits, model(ids).logits, rtol=1e-5, atol=1e-5)
    assert llama.config.max_position_embeddings == 4096


@pytest.mark.parametrize("memory_update", ["linear", "delta", "delta_l2", "gated_delta"])
def test_memory_write_is_float32_even_under_bf16_autocast(memory_update):
    """Training on CUDA runs under bf16 autocast; the memory write opts out of it, so folding a segment under
    autocast gives exactly the float32 result (bf16 matmuls would not)."""
    from infini_bench.modeling.memory import LayerState
    from infini_bench.modeling.memory_features import sigma, unit

    torch.manual_seed(0)
    keys, values = torch.randn(2, 2, 8, 16), torch.randn(2, 2, 8, 16)
    memory, norm = torch.randn(2, 2, 16, 16), torch.rand(2, 2, 16) * 8
    bounded = memory_update in ("delta_l2", "gated_delta")
    features = unit(keys) * torch.rand(2, 2, 8, 1).sqrt() if bounded else sigma(keys)
    log_decay = -torch.rand(2, 2, 8) * 0.1

    def folded(autocast: bool) -> LayerState:
        state = LayerState(memory, norm, keys, values, features, log_decay, torch.zeros(2, 0, 96))
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            state.fold(memory_update, 1e-6, detach=False)
        return state

    exact, mixed = folded(False), folded(True)
    assert mixed.memory.dtype == torch.float32 and mixed.norm.dtype == torch.float32
    torch.testing.assert_close(mixed.memory, exact.memory, rtol=0, atol=0)
    torch.testing.assert_close(mixed.norm, exact.norm, rtol=0, atol=0)


@pytest.mark.parametrize("rows", [1, 7, 300])
def test_causal_depthwise_conv_both_forms_equal_the_formula(rows):
    """y_t = Σ_j w_j x_{t+j} per channel, summed by hand in float64: evaluation's multiply-add form and training's
    Conv1d form (taken when a gradient is needed, and gradients reach both inputs) both equal it."""
    from infini_bench.modeling.attention import causal_depthwise_conv

    stream = torch.randn(3, 3 + rows, 12, dtype=torch.float64)
    weight = torch.randn(12, 1, 4, dtype=torch.float64)
    want = torch.zeros(3, rows, 12, dtype=torch.float64)
    for t in range(rows):
        for j in range(4):
            want[:, t] += weight[:, 0, j] * stream[:, t + j]
    with torch.no_grad():
        torch.testing.assert_close(causal_depthwise_conv(stream, weight), want, rtol=1e-12, atol=1e-12)
    trained = causal_depthwise_conv(stream.requires_grad_(), weight.requires_grad_())
    assert trained.grad_fn is not None
    torch.testing.assert_close(trained, want, rtol=1e-12, atol=1e-12)
    trained.sum().backward()
    torch.testing.assert_close(weight.grad[:, 0, 0], stream[:, :rows].detach().sum(dim=(0, 1)))
