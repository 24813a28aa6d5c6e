"""Tests of xattr_nb.methods.reagent, xattr_nb.attribution.generation and xattr_nb.models.lm_recipes."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from xattr_nb.attribution import Attribution
from xattr_nb.attribution.generation import attribute_generation, attribute_steps, greedy_continue, step_batch
from xattr_nb.checks import InputError
from xattr_nb.methods import reagent as R
from xattr_nb.models import lm_recipes, tiny_gpt2, word_tokenizer


class KeyLM(nn.Module):
    """A fake causal LM over 10 tokens whose next token is (token at position ``key``) + 1 mod 10, confidently."""

    def __init__(self, key: int = 2):
        super().__init__()
        self.key = key
        self.dummy = nn.Parameter(torch.zeros(1))

    def forward(self, input_ids, attention_mask=None):
        b, t = input_ids.shape
        logits = torch.zeros(b, t, 10)
        nxt = (input_ids[:, self.key] + 1) % 10
        logits[torch.arange(b), -1, nxt] = 8.0
        return SimpleNamespace(logits=logits)


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


# ------------------------------------------------------------------------------ steps (analytic)


def test_evidence_signs_and_clip():
    e = R.evidence(torch.tensor([0.5, 1.0]), torch.tensor([[True, False], [True, False]]), eps=1e-3)
    assert torch.allclose(e[0], torch.tensor([0.5, -0.5], dtype=torch.float64))
    assert torch.allclose(e[1], torch.tensor([1 - 1e-3, -(1 - 1e-3)], dtype=torch.float64))


def test_update_logits_is_logit_of_half_shifted_evidence():
    s = torch.zeros(2, 3, dtype=torch.float64)
    e = torch.full((2, 3), 0.5, dtype=torch.float64)
    out = R.update_logits(s, e, torch.tensor([True, False]), torch.tensor([True, True, False]))
    assert torch.allclose(out[0], torch.tensor([math.log(3), math.log(3), 0.0], dtype=torch.float64))
    assert torch.equal(out[1], s[1])  # an inactive (stopped) probe does not move
    assert torch.equal(R.update_logits(s, torch.zeros_like(e), torch.tensor([True, True]), torch.ones(3).bool()), s)


def test_importance_is_softmax_over_candidates():
    pi = R.importance(torch.tensor([[0.0, math.log(3), 5.0]]), torch.tensor([True, True, False]))
    assert torch.allclose(pi, torch.tensor([[0.25, 0.75, 0.0]]))


def test_top_n_keep_breaks_ties_by_position():
    keep = R.top_n_keep(torch.tensor([[0.2, 0.4, 0.4, 0.0]]), torch.tensor([True, True, True, True]), 2)
    assert keep.tolist() == [[False, True, True, False]]


def test_uniform_sampler_touches_only_replaced_positions():
    ids = torch.zeros(4, 6, dtype=torch.long)
    rep = torch.zeros(4, 6, dtype=torch.bool)
    rep[:, ::2] = True
    out = R.UniformSampler([7, 8])(ids, rep, gen())
    assert bool((out[~rep] == 0).all()) and set(out[rep].tolist()) <= {7, 8}
    assert torch.equal(out, R.UniformSampler([7, 8])(ids, rep, gen()))  # seeded: deterministic


def test_category_sampler_keeps_the_class_and_never_copies():
    s = R.CategorySampler([[1, 2, 3], [4, 5], [9]])
    ids = torch.tensor([[1, 4, 9, 6]] * 50)
    out = s(ids, torch.ones_like(ids, dtype=torch.bool), gen())
    assert set(out[:, 0].tolist()) == {2, 3} and set(out[:, 1].tolist()) == {5}
    assert bool((out[:, 2] == 9).all()) and bool((out[:, 3] == 6).all())  # singleton / unknown: kept


def test_mlm_sampler_samples_the_mlm_within_allowed_and_not_the_original():
    class FakeMLM(nn.Module):
        def __init__(self):
            super().__init__()
            self.p = nn.Parameter(torch.zeros(1))

        def forward(self, input_ids):
            logits = torch.zeros(*input_ids.shape, 6)
            logits[..., 3] = 20.0  # the MLM is sure of token 3 everywhere
            logits[..., 5] = 30.0  # ...and surer of 5, which is not allowed
            return SimpleNamespace(logits=logits)

    s = R.MLMSampler(FakeMLM(), mask_id=0, allowed_ids=[1, 2, 3, 4])
    ids = torch.tensor([[1, 3, 2]])
    out = s(ids, torch.tensor([[True, True, False]]), gen())
    assert out[0, 0] == 3 and out[0, 1] != 3 and out[0, 2] == 2


def test_run_probes_finds_the_only_token_that_matters():
    model = KeyLM(key=2)
    ids = torch.tensor([5, 1, 6, 3, 8, 2])
    run = R.run_probes(model, ids, sampler=R.UniformSampler(list(range(10))), keep_top_n=1, max_steps=100, seed=0)
    imp, fallback = R.aggregate(run)
    assert run.target == 7 and not fallback and bool(run.stopped.all())
    assert int(imp.argmax()) == 2
    again = R.run_probes(model, ids, sampler=R.UniformSampler(list(range(10))), keep_top_n=1, max_steps=100, seed=0)
    assert torch.equal(run.pi, again.pi)


def test_aggregate_falls_back_to_all_probes_and_flags_it():
    pi = torch.tensor([[0.2, 0.8], [0.6, 0.4]])
    run = R.ProbeRun(pi=pi, stopped=torch.tensor([False, False]), steps=torch.tensor([5, 5]), p0=1.0, target=0,
                     forwards=1)  # fmt: skip
    imp, fb = R.aggregate(run)
    assert fb and torch.allclose(imp, torch.tensor([0.4, 0.6]))
    run.stopped = torch.tensor([True, False])
    imp, fb = R.aggregate(run)
    assert not fb and torch.allclose(imp, pi[0])


def test_explain_batches_rows_sum_to_one_over_candidates():
    model = KeyLM(key=1)
    ids = torch.tensor([[2, 4, 6, 0], [3, 5, 7, 9]])
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1]])
    cand = torch.tensor([[False, True, True, True], [False, True, True, True]])
    a = R.explain(model, ids, attention_mask=mask, candidates=cand, sampler=R.UniformSampler(list(range(10))),
                  keep_top_n=1, max_steps=60, n_probes=4)  # fmt: skip
    assert a.scores.shape == (2, 4) and a.target.tolist() == [5, 6]
    assert (
        torch.allclose(a.scores.sum(1), torch.ones(2))
        and float(a.scores[0, 3]) == 0.0
        and float(a.scores[:, 0].abs().sum()) == 0
    )
    assert a.scores.argmax(1).tolist() == [1, 1]


def test_run_probes_batch_equals_one_context_at_a_time():
    model = KeyLM(key=2)
    ids = torch.tensor([[5, 1, 6, 3, 8, 2], [4, 4, 0, 1, 2, 3], [9, 8, 7, 6, 5, 4]])
    samp = R.UniformSampler(list(range(10)))
    kw = {"sampler": samp, "keep_top_n": 1, "max_steps": 50, "n_probes": 3}
    runs = R.run_probes_batch(model, ids, seeds=[3, 4, 5], **kw)
    for g in range(3):
        one = R.run_probes(model, ids[g], seed=3 + g, **kw)
        assert torch.equal(runs[g].pi, one.pi) and torch.equal(runs[g].steps, one.steps)
        assert runs[g].forwards == one.forwards and runs[g].target == one.target


def test_stopping_test_is_its_inputs_then_in_top_k():
    model = KeyLM(key=0)
    ids = torch.tensor([3, 1, 2])
    pi = torch.tensor([[0.8, 0.1, 0.1], [0.1, 0.8, 0.1]])
    cand = torch.ones(3, dtype=torch.bool)
    kw = {"sampler": R.UniformSampler([5, 6]), "candidates": cand, "keep_top_n": 1}
    x_hat = R.stopping_inputs(ids, pi, generator=gen(), **kw)
    assert x_hat[0, 0] == 3 and set(x_hat[0, 1:].tolist()) <= {5, 6} and x_hat[1, 1] == 1
    assert R.stopping_test(model, ids, pi, 4, stop_top_k=1, generator=gen(), **kw).tolist() == [True, False]
    assert R.in_top_k(torch.tensor([[0.1, 0.5, 0.4]]), 2, 2).tolist() == [True]
    assert R.in_top_k(torch.tensor([[0.1, 0.5, 0.4]]), 0, 2).tolist() == [False]


def test_stopping_pass_rate_keeps_exactly_the_given_tokens():
    model = KeyLM(key=0)  # the answer is token 0 + 1
    ids = torch.tensor([[3, 1, 2, 0], [3, 1, 2, 9]])
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1]])
    keep0 = torch.zeros(2, 4, dtype=torch.bool)
    keep0[:, 0] = True
    keep1 = torch.zeros(2, 4, dtype=torch.bool)
    keep1[:, 1] = True
    kw = {"attention_mask": mask, "draws": 6, "stop_top_k": 1}
    # keeping the decisive token always passes; replacing it by 5 or 6 never yields 4
    assert R.stopping_pass_rate(model, ids, [4, 4], keep0, sampler=R.UniformSampler([5, 6]), **kw).tolist() == [1, 1]
    assert R.stopping_pass_rate(model, ids, [4, 4], keep1, sampler=R.UniformSampler([5, 6]), **kw).tolist() == [0, 0]
    # a sampler that can only put the original back always passes, whatever is kept
    assert R.stopping_pass_rate(model, ids, [4, 4], keep1, sampler=R.UniformSampler([3]), **kw).tolist() == [1, 1]
    # position 0 is no candidate: it is never replaced, so the test passes
    cand = torch.tensor([[False, True, True, False], [False, True, True, True]])
    rate = R.stopping_pass_rate(model, ids, [4, 4], keep1, sampler=R.UniformSampler([5, 6]), candidates=cand, **kw)
    assert rate.tolist() == [1, 1]


def test_random_other_position_avoids_the_excluded_and_non_candidates():
    cand = torch.tensor([[False, True, True, False], [False, True, False, True]])
    for seed in range(20):
        out = R.random_other_position(cand, [1, 3], seed=seed)
        assert out.sum(1).tolist() == [1, 1] and bool((out <= cand).all())
        assert out[0].nonzero().item() == 2 and out[1].nonzero().item() == 1


def test_explain_meta_has_each_probes_top_token_and_stop():
    model = KeyLM(key=1)
    ids = torch.tensor([[2, 4, 6, 8]])
    cand = torch.tensor([[False, True, True, True]])
    pool = [0, 1, 2, 3, 5, 7, 9]  # never 4: a replaced position 1 never gives the answer 5
    a = R.explain(model, ids, candidates=cand, sampler=R.UniformSampler(pool), keep_top_n=1, max_steps=60, n_probes=4)
    assert len(a.meta["probe_top"][0]) == len(a.meta["probe_stopped"][0]) == 4
    assert sum(a.meta["probe_stopped"][0]) == a.meta["stopped"][0] >= 1
    # a stopped probe kept one token and still got the answer: that token is the decisive one
    assert all(t == 1 for t, st in zip(a.meta["probe_top"][0], a.meta["probe_stopped"][0], strict=True) if st)


def test_bad_keep_shape_for_stopping_pass_rate():
    with pytest.raises(InputError, match="`keep`"):
        R.stopping_pass_rate(KeyLM(), torch.tensor([[1, 2, 3]]), [4], torch.ones(1, 2, dtype=torch.bool),
                             sampler=R.UniformSampler([5]))  # fmt: skip


def test_bad_random_other_position_row_without_other():
    with pytest.raises(InputError, match="no position other than"):
        R.random_other_position(torch.tensor([[False, True, False]]), [1])


def test_explain_restores_the_training_flag():
    model = KeyLM(key=1).train()
    R.explain(model, torch.tensor([[1, 2, 3]]), sampler=R.UniformSampler([4, 5]), max_steps=2, n_probes=2)
    assert model.training


def test_gold_rank_metrics_analytic():
    s = torch.tensor([[0.1, 0.9, 0.3, 0.0], [0.5, 0.2, 0.4, 9.0]])
    m = torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0]])
    g = R.gold_rank_metrics(s, m, torch.tensor([1, 2]), torch.tensor([[2, 3], [0, 1]]))
    assert g["hit"].tolist() == [1.0, 0.0] and g["attractor"].tolist() == [0.0, 1.0]
    assert torch.allclose(g["rr"], torch.tensor([1.0, 0.5]))


def test_log_ratio():
    assert R.log_ratio(math.e, 1.0) == pytest.approx(1.0)


# ------------------------------------------------------------------------------ generation


def test_step_batch_masks_end_before_each_generated_token():
    b = step_batch(torch.tensor([9, 8, 7, 6, 5]), 3)
    assert b["target"].tolist() == [6, 5]
    assert b["attention_mask"].tolist() == [[1, 1, 1, 0, 0], [1, 1, 1, 1, 0]]


def test_attribute_steps_batched_equals_one_at_a_time_and_ignores_the_future():
    model = tiny_gpt2(12, n_layer=1, n_head=2, d_model=8, n_ctx=16, seed=1)
    ids = torch.tensor([1, 5, 6, 7, 8, 9])
    a = attribute_steps(model, ids, 3, "input_x_gradient")
    b = attribute_steps(model, ids, 3, "input_x_gradient", batch_steps=False)
    assert a.scores.shape == (3, 6) and torch.allclose(a.scores, b.scores, atol=1e-6)
    assert float(a.scores[0, 3:].abs().sum()) == 0.0 and float(a.scores[1, 4:].abs().sum()) == 0.0
    # occlusion of step 0 = drop of its logit when a prompt token becomes the baseline
    occ = attribute_steps(model, ids, 3, "occlusion", baseline=0)
    with torch.no_grad():
        full = model(input_ids=ids[None, :3]).logits[0, -1, 7]
        x = ids[:3].clone()
        x[1] = 0
        drop = full - model(input_ids=x[None]).logits[0, -1, 7]
    assert float(occ.scores[0, 1]) == pytest.approx(float(drop), abs=1e-5)


def test_greedy_continue_and_attribute_generation_labels():
    tok = word_tokenizer(["a", "b", "c"])
    model = tiny_gpt2(len(tok), n_layer=1, n_head=2, d_model=8, n_ctx=12, seed=0)
    out = greedy_continue(model, torch.tensor([5, 6]), 3)
    assert out.shape[0] == 5 and out[:2].tolist() == [5, 6]
    a = attribute_generation(model, tok, "a b", "saliency", continuation="c a")
    assert a.labels == [["a", "b"], ["a", "b", "c"]] and a.target.tolist() == [7, 5]


# ------------------------------------------------------------------------------ world, models, full scale


def test_ioi_tokenizer_matches_the_world_encoding():
    tok = lm_recipes.ioi_tokenizer()
    batch = lm_recipes.ioi_lm_batch(3, seed=0)
    text = batch["data"].texts[0]
    assert tok(text)["input_ids"] == batch["ids"][0, 1 : batch["prompt_len"][0]].tolist()
    ev = R.ioi_eval_set(4, seed=1, tokenizer=tok)
    words = ["[BOS]", *ev["data"].words[0]]
    assert words[int(ev["gold"][0])] == ev["data"].answers[0]
    assert words[int(ev["attractors"][0, 0])] == ev["data"].wrong[0]


def test_next_token_loss_ignores_padding():
    logits = torch.zeros(1, 3, 4)
    logits[0, 0, 2] = 100.0  # predicts token 2 after position 0 perfectly
    assert float(lm_recipes.next_token_loss(logits, torch.tensor([[1, 2, 0]]))) == pytest.approx(0.0, abs=1e-6)


def test_load_mlm_sampler_on_a_local_stand_in(tmp_path):
    from transformers import BertConfig, BertForMaskedLM

    from xattr_nb.models import load_lm

    tok = word_tokenizer(["a", "b", "c"])
    tiny_gpt2(len(tok), n_layer=1, n_head=2, d_model=8, n_ctx=8).save_pretrained(tmp_path / "lm")
    tok.save_pretrained(tmp_path / "lm")
    mlm = BertForMaskedLM(BertConfig(vocab_size=len(tok), hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
                                     intermediate_size=8, max_position_embeddings=8))  # fmt: skip
    mlm.save_pretrained(tmp_path / "mlm")
    tok.save_pretrained(tmp_path / "mlm")
    _, ltok = load_lm("full", small="ioi_gpt2", full=str(tmp_path / "lm"))
    assert R.load_mlm_sampler("full", ltok) is None  # no masked LM: the notebook replaces uniformly
    s = R.load_mlm_sampler("full", ltok, full=str(tmp_path / "mlm"))
    assert isinstance(s, R.MLMSampler) and s.mask_id == tok.mask_token_id
    assert s.allowed_ids.tolist() == R.word_ids(ltok) and not set(R.word_ids(ltok)) & set(ltok.all_special_ids)
    other = word_tokenizer(["x", "y", "z"])
    other.save_pretrained(tmp_path / "mlm")
    with pytest.raises(InputError, match="does not share the LM's tokenizer"):
        R.load_mlm_sampler("full", ltok, full=str(tmp_path / "mlm"))


def test_load_mlm_sampler_small_is_the_zoo_mlm_on_the_ioi_tokenizer():
    from xattr_nb.models import load_lm

    _, tok = load_lm("cpu", small="ioi_gpt2")
    s = R.load_mlm_sampler("cpu", tok)
    assert isinstance(s, R.MLMSampler) and s.mask_id == tok.mask_token_id
    assert R.samplers(tok, s)["mlm"] is s and set(R.samplers(tok)) == {"category", "uniform"}


# ------------------------------------------------------------------------------ bad inputs


def test_bad_evidence_rows():
    with pytest.raises(InputError, match="replaced"):
        R.evidence(torch.tensor([0.1]), torch.ones(2, 3, dtype=torch.bool))


def test_bad_ratio():
    with pytest.raises(InputError, match="ratio"):
        R.replace_mask(torch.ones(3, dtype=torch.bool), 2, 1.5, gen())


def test_bad_empty_candidates():
    with pytest.raises(InputError, match="candidates"):
        R.run_probes(KeyLM(), torch.tensor([1, 2, 3]), sampler=R.UniformSampler([1]), candidates=torch.zeros(3).bool())


def test_bad_sampler():
    with pytest.raises(InputError, match="sampler"):
        R.run_probes(KeyLM(), torch.tensor([1, 2, 3]), sampler="uniform")


def test_bad_target_out_of_vocab():
    with pytest.raises(InputError, match="target"):
        R.run_probes(KeyLM(), torch.tensor([1, 2, 3]), 10, sampler=R.UniformSampler([1]))


def test_bad_empty_pool():
    with pytest.raises(InputError, match="vocab_ids"):
        R.UniformSampler([])


def test_bad_category_overlap():
    with pytest.raises(InputError, match="more than one group"):
        R.CategorySampler([[1, 2], [2, 3]])


def test_bad_gold_on_padding():
    with pytest.raises(InputError, match="padding"):
        R.gold_rank_metrics(torch.rand(1, 3), torch.tensor([[1, 1, 0]]), torch.tensor([2]))


def test_bad_nan_scores():
    with pytest.raises(InputError, match="NaN"):
        R.gold_rank_metrics(torch.tensor([[0.1, float("nan")]]), torch.ones(1, 2), torch.tensor([0]))


def test_bad_tokenizer_for_world():
    with pytest.raises(InputError, match="tokenizer"):
        R.ioi_eval_set(2, seed=0, tokenizer=word_tokenizer(["a"]))


def test_bad_log_ratio():
    with pytest.raises(InputError, match="positive"):
        R.log_ratio(0.0, 1.0)


def test_bad_left_padding():
    with pytest.raises(InputError, match="right-padded"):
        R.explain(KeyLM(), torch.tensor([[0, 1, 2]]), attention_mask=torch.tensor([[0, 1, 1]]),
                  sampler=R.UniformSampler([4]))  # fmt: skip


def test_bad_mlm_sampler_for_samplers():
    with pytest.raises(InputError, match="MLMSampler"):
        R.samplers(lm_recipes.ioi_tokenizer(), mlm=nn.Linear(2, 2))


def test_bad_evaluate_without_random():
    with pytest.raises(InputError, match="random"):
        R.evaluate(KeyLM(), {}, {})


def test_bad_prompt_len():
    with pytest.raises(InputError, match="prompt_len"):
        step_batch(torch.tensor([1, 2, 3]), 3)


def test_bad_too_many_new_tokens():
    model = tiny_gpt2(8, n_layer=1, n_head=2, d_model=8, n_ctx=4)
    with pytest.raises(InputError, match="max_new_tokens"):
        greedy_continue(model, torch.tensor([1, 2, 3]), 2)


def test_bad_baseline_for_saliency():
    model = tiny_gpt2(8, n_layer=1, n_head=2, d_model=8, n_ctx=8)
    with pytest.raises(InputError, match="baseline"):
        attribute_steps(model, torch.tensor([1, 2, 3]), 2, "saliency", baseline=0)


def test_bad_empty_continuation():
    tok = word_tokenizer(["a", "b"])
    model = tiny_gpt2(len(tok), n_layer=1, n_head=2, d_model=8, n_ctx=8)
    with pytest.raises(InputError, match="continuation"):
        attribute_generation(model, tok, "a b", continuation=" ")


def test_reagent_through_attribute_registry():
    from xattr_nb.attribution import attribute

    tok_model = tiny_gpt2(10, n_layer=1, n_head=2, d_model=8, n_ctx=8, seed=0)
    a = attribute(tok_model, torch.tensor([[1, 2, 3, 4]]), torch.tensor([5]), "reagent",
                  sampler=R.UniformSampler(list(range(10))), max_steps=5, n_probes=2)  # fmt: skip
    assert isinstance(a, Attribution) and a.method == "reagent" and a.cost.forward > 0
