"""The parallel form (whole segments layer by layer) against the segment-by-segment form, which stays the reference;
the memory-update op's implementations against each other."""
import pytest
import torch

from infini_bench.modeling import fla_ops
from infini_bench.modeling.memory_features import sigma, unit
from infini_bench.modeling.memory_ops import memory_scan, segment_retrievals

from test_model import relative_error, tiny_model

UPDATES = ["linear", "delta", "delta_l2", "gated_delta"]


def _run(model, ids, parallel, prefix, detach_every):
    """Logits of `ids` after a carried state (the first `prefix` tokens), and the gradients of every parameter."""
    model.zero_grad()
    state = model(ids[:, :prefix], parallel=parallel, detach_every=detach_every).cache if prefix else None
    out = model(ids[:, prefix:], cache=state, parallel=parallel, detach_every=detach_every)
    weights = torch.linspace(-1, 1, out.logits.shape[-1])
    (out.logits * weights).sum().backward()
    grads = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
    return out.logits.detach(), grads, out.cache


@pytest.mark.parametrize("memory_update, conv", [(u, 0) for u in UPDATES] + [("delta_l2", 4), ("linear", 2)])
@pytest.mark.parametrize(
    "prefix, length, detach_every",
    [
        (0, 8 * 5, 0),  # whole segments only
        (3, 8 * 4 + 6, 0),  # a carried state, starting and ending mid-segment
        (11, 8 * 6 + 2, 2),  # truncated backpropagation every 2 segments
        (8, 8 * 3, 1),  # every segment detached
    ],
)
def test_parallel_equals_segment_by_segment(memory_update, conv, prefix, length, detach_every):
    model = tiny_model(memory_update=memory_update, memory_conv_size=conv).train()  # GQA: 4 query heads, 2 kv heads
    ids = torch.randint(0, 97, (2, prefix + length))
    ref_logits, ref_grads, ref_state = _run(model, ids, False, prefix, detach_every)
    logits, grads, state = _run(model, ids, True, prefix, detach_every)
    assert relative_error(logits, ref_logits) <= 1e-5
    assert grads.keys() == ref_grads.keys()
    for name in ref_grads:
        assert relative_error(grads[name], ref_grads[name]) <= 1e-4, name
    assert (state.segments, state.position, state.seen_tokens) == (ref_state.segments, ref_state.position, ref_state.seen_tokens)
    for a, b in zip(state.layers, ref_state.layers):
        assert relative_error(a.memory.detach(), b.memory.detach()) <= 1e-5
        torch.testing.assert_close(a.keys, b.keys, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(a.conv_tail, b.conv_tail, rtol=1e-5, atol=1e-6)


def test_parallel_form_keeps_the_memory_off_control_isolated():
    model = tiny_model(use_memory=False)
    ids = torch.randint(0, 97, (1, 32))
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits, model(ids, parallel=False).logits, rtol=1e-5, atol=1e-5)
        assert float(model(ids).cache.layers[0].memory.abs().sum()) == 0.0


@pytest.mark.parametrize("memory_update", UPDATES)
def test_memory_scan_states_equal_one_segment_at_a_time(memory_update):
    """The scan's state before segment s equals s single-segment scans chained (what decoding folds)."""
    torch.manual_seed(0)
    b, h, s, seg, d = 2, 3, 5, 70, 16  # 70 rows: two delta chunks per segment, the second partial
    keys = torch.randn(b, h, s, seg, d)
    bounded = memory_update in ("delta_l2", "gated_delta")
    keys = unit(keys) * torch.rand(b, h, s, seg, 1).sqrt() if bounded else sigma(keys)
    values = torch.randn(b, h, s, seg, d)
    log_decay = -torch.rand(b, h, s, seg) * 0.05
    memory, norm = torch.randn(b, h, d, d) * 0.1, torch.rand(b, h, d) * 4
    befores, norms, final, final_norm = memory_scan(memory_update, memory, norm, keys, values, 1e-6,
                                                    log_decay=log_decay)
    m, z = memory, norm
    for i in range(s):
        assert relative_error(befores[:, :, i], m) <= 1e-5 and relative_error(norms[:, :, i], z) <= 1e-5
        _, _, m, z = memory_scan(memory_update, m, z, keys[:, :, i : i + 1], values[:, :, i : i + 1], 1e-6,
                                 log_decay=log_decay[:, :, i : i + 1])
    assert relative_error(final, m) <= 1e-5 and relative_error(final_norm, z) <= 1e-5


def delta_rule_kernel(q, k, v, beta, scale, initial_state, output_final_state, g=None):
    """fla's chunk_delta_rule (chunk_gated_delta_rule with `g`) as its documentation defines it, token by token in
    float32 ([B, T, H, d] layout): S_t = α_t S_{t-1} + β_t k_tᵀ(v_t − α_t k_t S_{t-1}) with α_t = exp(g_t) (1 without
    g), o_t = scale · q_t S_t."""
    state, outputs = initial_state.clone(), []
    for t in range(q.shape[1]):
        kt, vt, bt = k[:, t], v[:, t], beta[:, t, :, None]
        if g is not None:
            state = state * g[:, t].exp()[..., None, None]
        state = state + kt.unsqueeze(-1) * (bt * (vt - (kt.unsqueeze(-1) * state).sum(-2))).unsqueeze(-2)
        outputs.append(scale * (q[:, t].unsqueeze(-2) @ state).squeeze(-2))
    return torch.stack(outputs, dim=1), state


@pytest.mark.parametrize("update", ["delta_l2", "gated_delta"])
@pytest.mark.parametrize("groups", [1, 2])
def test_fla_layout_reads_each_segment_before_its_writes(groups, update):
    """The single-call layout (each segment's reads as β = 0 tokens ahead of its writes) gives the torch path's
    retrievals and final memory, with gradients, when the kernel is exact (float32 here; fla's is bf16)."""
    from infini_bench.modeling.fla_ops import fla_delta_l2_read

    torch.manual_seed(0)
    b, h, s, seg, d = 2, 2, 3, 5, 8
    keys = (unit(torch.randn(b, h, s, seg, d)) * torch.rand(b, h, s, seg, 1).sqrt()).requires_grad_()
    values = torch.randn(b, h, s, seg, d, requires_grad=True)
    queries = torch.randn(b, h, groups, s, seg, d, requires_grad=True)
    memory, norm = torch.randn(b, h, d, d) * 0.1, torch.zeros(b, h, d)
    log_decay = (-torch.rand(b, h, s, seg) * 0.3) if update == "gated_delta" else None
    ref, ref_memory, _ = segment_retrievals(update, memory, norm, keys, values, queries, 1e-6, log_decay=log_decay)
    got, got_memory = fla_delta_l2_read(memory, keys, values, queries, kernel=delta_rule_kernel, dtype=torch.float32,
                                        log_decay=log_decay)
    assert relative_error(got.detach(), ref.detach()) <= 1e-5
    assert relative_error(got_memory.detach(), ref_memory.detach()) <= 1e-5
    weights = torch.randn_like(ref)
    ref_grads = torch.autograd.grad((ref * weights).sum() + ref_memory.sum(), (keys, values, queries))
    got_grads = torch.autograd.grad((got * weights).sum() + got_memory.sum(), (keys, values, queries))
    for a, b_ in zip(got_grads, ref_grads):
        assert relative_error(a, b_) <= 1e-4


def test_fla_kernel_is_refused_where_it_cannot_run():
    with pytest.raises(ValueError, match="memory_kernel='fla' needs fla-core"):
        fla_ops.resolve_kernel("fla", "delta_l2", torch.device("cpu"), torch.float32)
    assert fla_ops.resolve_kernel("auto", "delta_l2", torch.device("cpu"), torch.bfloat16) == "torch"
    assert fla_ops.resolve_kernel("fla", "linear", torch.device("cpu"), torch.float32) == "torch"  # no kernel to pick
    with pytest.raises(ValueError, match="memory_kernel='triton' is unknown"):
        tiny_model(memory_kernel="triton")


needs_fla = pytest.mark.skipif(
    not (torch.cuda.is_available() and fla_ops.HAS_FLA), reason="fla-core's Triton kernel needs CUDA and fla-core"
)


@needs_fla
def test_fla_scan_matches_the_torch_reference_on_cuda():
    torch.manual_seed(0)
    b, h, s, seg, d = 2, 4, 6, 128, 64
    keys = (unit(torch.randn(b, h, s, seg, d)) * torch.rand(b, h, s, seg, 1).sqrt()).cuda().requires_grad_()
    values = torch.randn(b, h, s, seg, d).cuda().requires_grad_()
    memory, norm = torch.zeros(b, h, d, d).cuda(), torch.zeros(b, h, d).cuda()
    ref = memory_scan("delta_l2", memory, norm, keys, values, 1e-6, kernel="torch")
    fla = memory_scan("delta_l2", memory, norm, keys, values, 1e-6, kernel="fla")
    assert relative_error(fla[0], ref[0]) <= 2e-2 and relative_error(fla[2], ref[2]) <= 2e-2  # bf16 inputs
    queries = torch.randn(b, h, 1, s, seg, d, device="cuda", requires_grad=True)
    read_ref = segment_retrievals("delta_l2", memory, norm, keys, values, queries, 1e-6, kernel="torch")
    read_fla = segment_retrievals("delta_l2", memory, norm, keys, values, queries, 1e-6, kernel="fla")
    assert relative_error(read_fla[0].detach(), read_ref[0].detach()) <= 2e-2
    assert relative_error(read_fla[1].detach(), read_ref[1].detach()) <= 2e-2
    grads = [torch.autograd.grad(out[0].sum() + out[1].sum(), (keys, values, queries)) for out in (read_ref, read_fla)]
    for a, b_ in zip(grads[1], grads[0]):
        assert relative_error(a, b_) <= 5e-2
    (ref_grads, fla_grads) = (torch.autograd.grad(out[0].sum() + out[2].sum(), (keys, values)) for out in (ref, fla))
    for a, b_ in zip(fla_grads, ref_grads):
        assert relative_error(a, b_) <= 5e-2


@needs_fla
def test_bf16_model_on_cuda_uses_fla_and_stays_close_to_float32():
    model = tiny_model(memory_update="delta_l2", head_dim=64, num_attention_heads=2, num_key_value_heads=2,
                       segment_length=64).cuda()
    ids = torch.randint(0, 97, (2, 64 * 6 + 5), device="cuda")
    with torch.no_grad():
        exact = model(ids).logits
        with torch.autocast("cuda", dtype=torch.bfloat16):
            assert fla_ops.resolve_kernel("auto", "delta_l2", ids.device, torch.float32) == "fla"
            mixed = model(ids).logits
    assert relative_error(mixed.float(), exact) <= 3e-2
