"""`--model infini` request methods against direct computations from the model (issue 4)."""
from __future__ import annotations

from importlib.metadata import entry_points

import pytest
import torch
from lm_eval.api.instance import Instance
from lm_eval.api.registry import get_model

from test_adapter_support import SEGMENT, direct_logprob, greedy_by_recomputation, infini_dir, passkey_prompt  # noqa: F401
from infini_bench.model_adapters import InfiniLM
from infini_bench.model_adapters.options import InfiniArgumentError


@pytest.fixture(scope="module")
def lm(infini_dir) -> InfiniLM:
    return InfiniLM(pretrained=str(infini_dir), device="cpu")


def _rolling(*texts: str) -> list[Instance]:
    return [Instance("loglikelihood_rolling", {}, (t,), i) for i, t in enumerate(texts)]


def _ll(*pairs: tuple[str, str]) -> list[Instance]:
    return [Instance("loglikelihood", {}, pair, i) for i, pair in enumerate(pairs)]


def _gen(*prompts: tuple[str, dict]) -> list[Instance]:
    return [Instance("generate_until", {}, p, i) for i, p in enumerate(prompts)]


def _text_of_tokens(lm: InfiniLM, n: int) -> str:
    """A text that encodes to exactly n tokens (byte-level BPE: decoding a token prefix re-encodes to it)."""
    ids = lm.tok_encode(passkey_prompt("48213", 40))[:n]
    text = lm.tok_decode(ids)
    assert lm.tok_encode(text) == ids
    return text


def test_registered_next_to_builtin_models() -> None:
    assert get_model("infini") is InfiniLM
    assert get_model("hf").__name__ == "HFLM"  # importing the adapter did not hide lm-eval's own models
    from infini_bench.lm_eval_compat import register_model_once

    register_model_once("infini", InfiniLM)  # a second registration (an entry point loading the module again) is harmless
    [entry] = [e for e in entry_points(group="lm_eval.models") if e.name == "infini"]
    assert entry.load() is InfiniLM  # for lm-eval versions that read the entry-point group


def test_chat_template_comes_from_the_tokenizer(lm: InfiniLM) -> None:
    lm.tokenizer.chat_template = "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}{% endfor %}"
    try:
        chat = [{"role": "user", "content": "What is the pass key?"}]
        assert lm.apply_chat_template(chat) == "<user>What is the pass key?"
    finally:
        lm.tokenizer.chat_template = None


@pytest.mark.parametrize("n_tokens", [1, 5, SEGMENT - 1, SEGMENT, SEGMENT + 1, 3 * SEGMENT + 7, 9 * SEGMENT])
def test_rolling_equals_direct_loglikelihood(lm: InfiniLM, n_tokens: int) -> None:
    text = _text_of_tokens(lm, n_tokens)
    doc = lm.tok_encode(text)
    [got] = lm.loglikelihood_rolling(_rolling(text), disable_tqdm=True)
    want, _ = direct_logprob(lm.model, [lm.prefix_token_id], doc)
    assert got == pytest.approx(want, rel=1e-5, abs=1e-4)


@pytest.mark.parametrize("chunk", [1, SEGMENT, 2 * SEGMENT + 5])
def test_rolling_in_small_prefill_chunks_equals_direct(infini_dir, chunk: int) -> None:
    """`prefill_chunk_tokens` bounds each parallel step; the numbers stay the reference's whatever it is (a chunk
    below one segment still advances by the rest of the segment)."""
    lm = InfiniLM(pretrained=str(infini_dir), device="cpu", prefill_chunk_tokens=chunk, batch_size=2)
    texts = [_text_of_tokens(lm, n) for n in (5 * SEGMENT + 3, 2 * SEGMENT)]
    got = lm.loglikelihood_rolling(_rolling(*texts), disable_tqdm=True)
    want = [direct_logprob(lm.model, [lm.prefix_token_id], lm.tok_encode(t))[0] for t in texts]
    assert got == pytest.approx(want, rel=1e-5, abs=1e-4)


def test_a_loaded_model_answers_as_its_checkpoint_path(infini_dir, lm: InfiniLM) -> None:
    """Train-then-evaluate in one process: `InfiniLM(pretrained=<model>, tokenizer=<tokenizer>)` as lm-eval's HFLM."""
    from transformers import AutoTokenizer

    from infini_bench import InfiniForCausalLM

    model = InfiniForCausalLM.from_pretrained(infini_dir)
    given = InfiniLM(pretrained=model, tokenizer=AutoTokenizer.from_pretrained(infini_dir), device="cpu")
    texts = [_text_of_tokens(lm, n) for n in (3 * SEGMENT + 7, 5)]
    assert given.loglikelihood_rolling(_rolling(*texts), disable_tqdm=True) == lm.loglikelihood_rolling(
        _rolling(*texts), disable_tqdm=True
    )
    prompt = (passkey_prompt("48213", 6), {"until": ["\n"], "max_gen_toks": 8})
    assert given.generate_until(_gen(prompt), disable_tqdm=True) == lm.generate_until(_gen(prompt), disable_tqdm=True)
    with pytest.raises(InfiniArgumentError, match="pass its tokenizer"):
        InfiniLM(pretrained=model, device="cpu")
    with pytest.raises(InfiniArgumentError, match="segment_length, dtype apply when loading|dtype, segment_length apply"):
        InfiniLM(pretrained=model, tokenizer=given.tokenizer, dtype="bfloat16", segment_length=4, device="cpu")


def test_rolling_batched_rows_of_different_lengths_match_one_by_one(infini_dir, lm: InfiniLM) -> None:
    texts = [_text_of_tokens(lm, n) for n in (70, 3, SEGMENT * 2, 41, 70)]
    one_by_one = lm.loglikelihood_rolling(_rolling(*texts), disable_tqdm=True)
    batched = InfiniLM(pretrained=str(infini_dir), device="cpu", batch_size=4)
    assert batched.loglikelihood_rolling(_rolling(*texts), disable_tqdm=True) == pytest.approx(one_by_one, rel=1e-6)
    assert one_by_one[0] == pytest.approx(one_by_one[4], rel=1e-9)
    assert lm.loglikelihood_rolling(_rolling(""), disable_tqdm=True) == [0.0]


@pytest.mark.parametrize("context_tokens", [SEGMENT - 3, 2 * SEGMENT - 1, 2 * SEGMENT, 3 * SEGMENT + 5])
def test_loglikelihood_across_segment_boundary_equals_direct(lm: InfiniLM, context_tokens: int) -> None:
    full = lm.tok_encode(passkey_prompt("48213", 40))
    context, continuation = full[:context_tokens], full[context_tokens : context_tokens + 7]
    ctx_text, cont_text = lm.tok_decode(context), lm.tok_decode(continuation)
    [(got, greedy)] = lm.loglikelihood(_ll((ctx_text, cont_text)), disable_tqdm=True)
    ctx_enc, cont_enc = lm._encode_pair(ctx_text, cont_text)
    want, want_greedy = direct_logprob(lm.model, ctx_enc, cont_enc)
    assert got == pytest.approx(want, rel=1e-5, abs=1e-4)
    assert greedy == want_greedy


def test_loglikelihood_reports_greedy_continuations(lm: InfiniLM) -> None:
    context = lm.tok_encode(passkey_prompt("48213", 6))
    greedy_tokens = greedy_by_recomputation(lm.model, context, SEGMENT + 4, eos=-1)  # crosses a boundary
    other = list(greedy_tokens)
    other[-1] = (other[-1] + 1) % len(lm.tokenizer)
    answers = lm._loglikelihood_tokens([(("a", "b"), context, greedy_tokens), (("a", "c"), context, other)], disable_tqdm=True)
    assert [flag for _, flag in answers] == [True, False]
    assert answers[0][0] > answers[1][0]


def test_shared_context_reads_the_context_once_and_answers_as_unshared(lm: InfiniLM) -> None:
    ctx_a, ctx_b = passkey_prompt("48213", 5), passkey_prompt("90210", 3, depth=0.0)
    pairs = [(ctx_a, " 48213."), (ctx_b, " 90210"), (ctx_a, " 11111."), (ctx_a, " 4"), (ctx_b, " Remember it."), ("", "The sky")]
    unshared = [lm.loglikelihood(_ll(pair), disable_tqdm=True)[0] for pair in pairs]

    fed = []
    hook = lm.model.model.embed_tokens.register_forward_hook(lambda _m, args, _o: fed.append(args[0].numel()))
    try:
        shared = lm.loglikelihood(_ll(*pairs), disable_tqdm=True)
    finally:
        hook.remove()
    for (got, got_greedy), (want, want_greedy) in zip(shared, unshared):
        assert got == pytest.approx(want, rel=1e-5, abs=1e-5)
        assert got_greedy == want_greedy
    encoded = [lm._encode_pair(c, x) if c else ([lm.prefix_token_id], lm.tok_encode(x, add_special_tokens=False)) for c, x in pairs]
    contexts = {tuple(c) for c, _ in encoded}
    assert sum(fed) == sum(len(c) - 1 for c in contexts) + sum(len(x) for _, x in encoded)  # each context read once


def test_generate_until_equals_greedy_recomputation(lm: InfiniLM) -> None:
    prompts = [passkey_prompt("48213", 4), passkey_prompt("7261", 9, depth=0.2), passkey_prompt("55", 1)]
    got = lm.generate_until(_gen(*[(p, {"until": [], "max_gen_toks": 12}) for p in prompts]), disable_tqdm=True)
    for prompt, text in zip(prompts, got):
        tokens = greedy_by_recomputation(lm.model, lm.tok_encode(prompt), 12, eos=lm.eot_token_id)
        assert text == lm.tok_decode(tokens)


def test_generate_until_batched_equals_one_by_one(infini_dir, lm: InfiniLM) -> None:
    prompts = [passkey_prompt(k, 4) for k in ("48213", "90210", "11111")] + [passkey_prompt("7", 7), passkey_prompt("8", 2)]
    requests = _gen(*[(p, {"until": ["\n"], "max_gen_toks": 6}) for p in prompts])
    batched = InfiniLM(pretrained=str(infini_dir), device="cpu", batch_size=4)
    assert batched.generate_until(requests, disable_tqdm=True) == lm.generate_until(requests, disable_tqdm=True)


def test_generate_until_cuts_at_stop_sequences(lm: InfiniLM) -> None:
    prompt = passkey_prompt("48213", 4)
    [free] = lm.generate_until(_gen((prompt, {"until": [], "max_gen_toks": 12})), disable_tqdm=True)
    stop = free[len(free) // 2 : len(free) // 2 + 1]
    [cut] = lm.generate_until(_gen((prompt, {"until": [stop], "max_gen_toks": 12})), disable_tqdm=True)
    assert cut == free.split(stop)[0]


def test_generate_until_stops_at_eos(infini_dir) -> None:
    lm = InfiniLM(pretrained=str(infini_dir), device="cpu")
    prompt = passkey_prompt("48213", 4)
    [free] = lm.generate_until(_gen((prompt, {"until": [], "max_gen_toks": 8})), disable_tqdm=True)
    first = greedy_by_recomputation(lm.model, lm.tok_encode(prompt), 1, eos=-1)[0]
    with torch.no_grad():  # make EOS outscore the first greedy token wherever that token wins
        lm.model.lm_head.weight[lm.eot_token_id] = 2 * lm.model.lm_head.weight[first]
    [stopped] = lm.generate_until(_gen((prompt, {"until": [], "max_gen_toks": 8})), disable_tqdm=True)
    assert free != "" and stopped == ""


def test_generate_until_samples_when_asked(lm: InfiniLM) -> None:
    prompt = passkey_prompt("48213", 4)
    kwargs = {"until": [], "max_gen_toks": 10, "do_sample": True, "temperature": 1.5}
    torch.manual_seed(123)
    [sampled] = lm.generate_until(_gen((prompt, kwargs)), disable_tqdm=True)
    ids = torch.tensor([lm.tok_encode(prompt)])
    torch.manual_seed(123)
    direct = lm.model.generate(ids, max_new_tokens=10, do_sample=True, temperature=1.5, pad_token_id=lm.eot_token_id)
    assert sampled == lm.tok_decode(direct[0, ids.shape[1] :].tolist())
    greedy = lm.generate_until(_gen((prompt, {"until": [], "max_gen_toks": 10})), disable_tqdm=True)[0]
    assert sampled != greedy


def test_reports_a_large_max_length_and_honours_overrides(infini_dir, lm: InfiniLM) -> None:
    assert lm.max_length == 1_048_576
    assert lm.max_gen_toks == 256
    other = InfiniLM(pretrained=str(infini_dir), device="cpu", max_length=5000, max_gen_toks=7, segment_length=8)
    assert (other.max_length, other.max_gen_toks, other.model.config.segment_length) == (5000, 7, 8)
    info = other.get_model_info()
    assert info["segment_length"] == 8 and info["use_memory"] is True


def test_prompts_longer_than_max_length_are_evaluated_whole(infini_dir, caplog) -> None:
    short = InfiniLM(pretrained=str(infini_dir), device="cpu", max_length=40)
    prompts = [passkey_prompt("48213", 6), passkey_prompt("90210", 6)]
    with caplog.at_level("WARNING"):
        got = short.generate_until(_gen(*[(p, {"until": [], "max_gen_toks": 5}) for p in prompts]), disable_tqdm=True)
    for prompt, text in zip(prompts, got):
        assert len(short.tok_encode(prompt)) > 40
        assert text == short.tok_decode(greedy_by_recomputation(short.model, short.tok_encode(prompt), 5, short.eot_token_id))
    assert sum("exceeds max_length=40" in r.getMessage() for r in caplog.records) == 1
