"""The end-of-finetuning check: held-out examples (the pool's builder, seeds no step uses), the answer loss against a
hand-summed log-likelihood, the verdict and its warning, and the report a real finetune writes."""
from __future__ import annotations

import json
import logging

import pytest
import torch

from infini_bench.data.cache import Store
from infini_bench.data.seeds import is_eval_seed
from infini_bench.modeling import InfiniConfig, InfiniForCausalLM
from infini_bench.training.batches import Batch
from infini_bench.training.commands import main as training_main
from infini_bench.training.held_out import REPORT_FILE, PoolFit, answer_loss, pool_fits, write_report
from infini_bench.training.recipe import NiahTrainConfig, PasskeyConfig
from infini_bench.training.retrieval_data import HELD_OUT_EXAMPLES, niah_example, passkey_example, retrieval_pools

from test_train_retrieval import pretrain_then_finetune_args, private_cache  # noqa: F401  (fixture, helper)
from test_train_runs import corpus  # noqa: F401  (module fixture)


def test_held_out_examples_follow_the_pool_and_are_never_trained_on(tiny_tokenizer, tmp_path):
    passkey = PasskeyConfig(num_examples=6, lengths=[160])
    niah = NiahTrainConfig(variants=["single_1"], num_examples=5, lengths=[256])
    pools = retrieval_pools(passkey, niah, tiny_tokenizer, 0, Store(tmp_path / "data", "test", ""))
    assert set(pools.held_out) == set(pools.pools) == {("passkey", 160), ("niah_single_1", 256)}
    for (family, length), held in pools.held_out.items():
        count = len(pools.pools[(family, length)].input_ids)
        if family == "passkey":
            examples = [passkey_example(tiny_tokenizer, passkey, length, count + i) for i in range(HELD_OUT_EXAMPLES)]
        else:
            examples = [niah_example(tiny_tokenizer, niah, "single_1", length, count + i) for i in range(HELD_OUT_EXAMPLES)]
        # the examples right after the pool's: training seeds, none of them an evaluation document's
        assert all(not is_eval_seed(sample["seed"]) for _, _, sample in examples)
        assert [row.tolist()[: len(ids)] for row, (ids, _, _) in zip(held.input_ids, examples)] == [e[0] for e in examples]
        trained = {tuple(row.tolist()) for row in pools.pools[(family, length)].input_ids}
        assert len(held.input_ids) == HELD_OUT_EXAMPLES and not trained & {tuple(r.tolist()) for r in held.input_ids}
    # a second build reads both from the run's cache
    again = retrieval_pools(passkey, niah, tiny_tokenizer, 0, Store(tmp_path / "data", "test", ""))
    assert all(torch.equal(again.held_out[k].input_ids, v.input_ids) for k, v in pools.held_out.items())


def tiny_model() -> InfiniForCausalLM:
    torch.manual_seed(0)
    config = InfiniConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                          num_attention_heads=2, head_dim=16, segment_length=8, memory_update="delta_l2")
    return InfiniForCausalLM(config).eval()


def test_answer_loss_is_the_hand_summed_log_likelihood_per_answer_token():
    model = tiny_model()
    ids = torch.randint(0, 64, (5, 20))
    labels = torch.full_like(ids, -100)
    labels[:, 14:18] = ids[:, 14:18]
    labels[1, 18:] = ids[1, 18:]  # rows with different answer lengths weigh by their tokens
    with torch.no_grad():
        logp = torch.log_softmax(model(ids).logits.double(), -1)
    total, count = 0.0, 0
    for r in range(5):
        for t in range(1, 20):
            if labels[r, t] != -100:
                total -= logp[r, t - 1, labels[r, t]].item()
                count += 1
    expected = total / count
    for rows_per_call in (1, 2, 5):  # calls of any size give the same mean
        assert answer_loss(model, Batch(ids, labels), rows_per_call, torch.device("cpu")) == pytest.approx(expected, rel=1e-5)


def test_pool_fits_compare_the_rows_the_run_drew_with_the_held_out_ones():
    from test_train_retrieval import fake_pools

    model = tiny_model()
    pools = fake_pools({("passkey", 12): 6, ("niah_single_1", 12): 6}, [12])
    pools.pools = {key: Batch(pool.input_ids, pool.input_ids.clone()) for key, pool in pools.pools.items()}
    pools.held_out = {("passkey", 12): Batch(torch.full((3, 12), 7), torch.full((3, 12), 7))}
    cursors = {"12": 4}
    (fit,) = pool_fits(model, pools, cursors, 2, torch.device("cpu"))  # the NIAH pool has no held-out rows
    drawn = torch.tensor(pools.drawn_rows(("passkey", 12), 3))
    assert drawn.tolist() == [pools.global_batch(0, 3, {}, 0.0).input_ids[i, 0].item() for i in range(3)]
    pool = pools.pools[("passkey", 12)]
    cpu = torch.device("cpu")
    assert (fit.family, fit.length, fit.passes) == ("passkey", 12, 4 / 6)
    assert fit.seen_loss == pytest.approx(answer_loss(model, Batch(pool.input_ids[drawn], pool.labels[drawn]), 3, cpu))
    assert fit.held_out_loss == pytest.approx(answer_loss(model, pools.held_out[("passkey", 12)], 3, cpu))
    assert pool_fits(model, pools, {}, 2, cpu) == []  # a pool the run never reached is not judged


@pytest.mark.parametrize("passes, seen, held, memorised", [
    (8.8, 0.013, 0.924, True),  # the 30-minute multikey_2 model at 256 tokens
    (26.8, 0.001, 0.030, False),  # the same model at 192 tokens, which answers new examples too
    (1.0, 0.013, 0.924, False),  # one pass: nothing seen twice
    (3.3, 0.400, 0.323, False),  # the quickstart's model
])
def test_a_pool_is_learnt_by_heart_when_new_examples_fare_far_worse(passes, seen, held, memorised):
    assert PoolFit("niah_multikey_2", 256, passes, seen, held).memorised is memorised


def test_the_report_names_the_pool_and_the_key_to_raise(tmp_path, caplog):
    fits = [PoolFit("niah_multikey_2", 256, 8.8, 0.013, 0.924), PoolFit("passkey", 192, 0.8, 0.0, 0.003)]
    with caplog.at_level(logging.INFO, logger="infini_bench.training.held_out"):
        write_report(fits, tmp_path, 1234)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "niah_multikey_2 at 256 tokens" in warnings[0]
    assert "raise finetune.niah.num_examples" in warnings[0]
    saved = json.loads((tmp_path / REPORT_FILE).read_text())
    assert saved["step"] == 1234 and [p["memorised"] for p in saved["pools"]] == [True, False]
    assert saved["pools"][1] == {"family": "passkey", "length": 192, "passes": 0.8, "seen_loss": 0.0,
                                 "held_out_loss": 0.003, "memorised": False}


def test_a_finetune_ends_with_the_held_out_report(tmp_path, corpus):  # noqa: F811
    """4 steps of 2 rows over a pool of 8 examples: one pass; the report covers the pool the run drew from."""
    args = pretrain_then_finetune_args(tmp_path, corpus, "[160]")
    assert training_main(args) == 0
    saved = json.loads((tmp_path / "ft" / REPORT_FILE).read_text())
    (pool,) = saved["pools"]
    assert saved["step"] == 4 and (pool["family"], pool["length"], pool["passes"]) == ("passkey", 160, 1.0)
    assert 0 < pool["seen_loss"] < 50 and 0 < pool["held_out_loss"] < 50 and pool["memorised"] is False


def test_a_report_that_cannot_be_written_is_a_warning_not_a_failed_run(tmp_path, caplog, monkeypatch):
    from pathlib import Path

    def full(self, *args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Path, "write_text", full)
    with caplog.at_level(logging.WARNING, logger="infini_bench.training.held_out"):
        write_report([PoolFit("passkey", 192, 0.8, 0.0, 0.003)], tmp_path, 4)
    assert any("could not write" in r.getMessage() and "No space left" in r.getMessage() for r in caplog.records)
    assert list(tmp_path.iterdir()) == []
