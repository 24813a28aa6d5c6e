"""Paper 22 helpers: affine calibration, plausibility-masked contrastive logits (analytic cases)."""

import math

import pytest
import torch

from xattr_nb.checks import InputError
from xattr_nb.methods import lvlm_debias as M


def _probs(b=5, k=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, k, generator=g).softmax(-1).double()


@pytest.mark.parametrize("mode", ["diagonal", "identity"])
def test_identity_counterfactual_returns_the_input(mode):
    p = _probs()
    q = M.affine_calibrate(p, torch.full((4,), 0.25), mode, eps=0.0)
    assert torch.allclose(q, p, atol=1e-12)
    # the default ε (added to both, see the docstring) moves p by at most ~ε
    q = M.affine_calibrate(p, torch.full((4,), 0.25), mode)
    assert float((q - p).abs().max()) < 1e-3


@pytest.mark.parametrize("mode", ["diagonal", "identity"])
def test_counterfactual_maps_to_uniform(mode):
    pc = _probs(seed=1)
    q = M.affine_calibrate(pc, pc, mode)
    assert float((q - 0.25).abs().max()) < 1e-6


def test_diagonal_known_answer_and_argmax_flip():
    # p = (0.6, 0.4) under a prior (0.8, 0.2): q ∝ (0.75, 2) → the prior-favoured answer loses
    q = M.affine_calibrate(torch.tensor([0.6, 0.4]), torch.tensor([0.8, 0.2]), eps=0.0)
    assert torch.allclose(q, torch.tensor([0.75, 2.0], dtype=torch.float64) / 2.75)
    qi = M.affine_calibrate(torch.tensor([0.6, 0.4]), torch.tensor([0.8, 0.2]), "identity")
    assert torch.allclose(qi, torch.tensor([0.3, 0.7], dtype=torch.float64))


def test_dataset_mean_counterfactual_broadcasts():
    p = _probs()
    q = M.affine_calibrate(p, p.mean(0))
    assert q.shape == p.shape and torch.allclose(q.sum(1), torch.ones(5, dtype=torch.float64))


def test_contrastive_alpha_zero_is_plain_logits():
    g = torch.Generator().manual_seed(0)
    l, lc = torch.randn(3, 10, generator=g), torch.randn(3, 10, generator=g)
    out = M.contrastive_logits(l, lc, alpha=0.0, beta=0.0)
    assert torch.equal(out, l)


def test_contrastive_known_values_and_mask():
    l = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    lc = torch.zeros(1, 4)
    out = M.contrastive_logits(l, lc, alpha=1.0, beta=0.2)
    # beta*max = 0.1: tokens 0, 1, 2 kept, token 3 (0.05) dropped
    assert torch.isinf(out[0, 3]) and out[0, 3] < 0
    assert torch.allclose(out[0, :3], 2 * l[0, :3])
    # the mask reads the original logits: a huge contrast cannot revive a dropped token
    out2 = M.contrastive_logits(l, torch.tensor([[0.0, 0.0, 0.0, -100.0]]), alpha=1.0, beta=0.2)
    assert torch.isinf(out2[0, 3])
    # beta = 1 keeps only the argmax
    out3 = M.contrastive_logits(l, lc, alpha=0.5, beta=1.0)
    assert torch.isfinite(out3).sum() == 1 and math.isclose(float(out3[0, 0]), 1.5 * float(l[0, 0]), rel_tol=1e-6)


def test_decide_and_table_on_hand_made_scores():
    p = torch.tensor([[0.7, 0.3], [0.6, 0.4]])
    pc = torch.tensor([[0.9, 0.1], [0.5, 0.5]])
    l = torch.log(torch.tensor([[0.7, 0.3, 1e-9], [0.6, 0.4, 1e-9]]))
    lc = torch.log(torch.tensor([[0.9, 0.1, 1e-9], [0.5, 0.5, 1e-9]]))
    s = {"p": p, "p_cf": pc, "p_rand": pc, "l": l, "l_cf": lc, "l_vcd": l, "answer_ids": torch.tensor([0, 1])}
    d = M.decide(s, alpha=1.0, beta=0.1)
    assert d["plain"].tolist() == [0, 0]
    assert d["posthoc"].tolist() == [1, 0]  # 0.7/0.9 < 0.3/0.1
    assert d["vdd"].tolist() == [1, 0]  # 2 log .7 - log .9 < 2 log .3 - log .1
    t = M.arm_table(d, torch.tensor([1, 0]), yes_index=0)
    assert t.loc["posthoc", "accuracy"] == 1.0 and t.loc["plain", "yes_ratio"] == 1.0


def test_image_free_spread_detects_image_information():
    s = {"p_none": torch.tensor([[0.5, 0.5], [0.5, 0.5], [0.9, 0.1]])}
    assert M.image_free_spread(s, ["a", "a", "b"], ["none"]) == 0.0
    assert M.image_free_spread(s, ["a", "a", "a"], ["none"]) == pytest.approx(0.4)


@pytest.mark.parametrize(
    "call, name",
    [
        (lambda: M.affine_calibrate(torch.tensor([0.5, 0.5]), torch.tensor([0.2, 0.3, 0.5])), "p_cf"),
        (lambda: M.affine_calibrate(torch.tensor([-0.1, 1.1]), torch.tensor([0.5, 0.5])), "p"),
        (lambda: M.affine_calibrate(torch.tensor([0.5, 0.5]), torch.tensor([0.5, 0.5]), "bogus"), "mode"),
        (lambda: M.affine_calibrate("x", torch.tensor([0.5, 0.5])), "p"),
        (lambda: M.contrastive_logits(torch.zeros(2, 3), torch.zeros(2, 4)), "cf_logits"),
        (lambda: M.contrastive_logits(torch.zeros(2, 3), torch.zeros(2, 3), alpha=-1.0), "alpha"),
        (lambda: M.contrastive_logits(torch.zeros(2, 3), torch.zeros(2, 3), beta=2.0), "beta"),
        (lambda: M.decide({"p": 1}), "scores"),
        (lambda: M.closed_scores(object(), None, ("yes", "no")), "model"),
    ],
)
def test_bad_input_names_the_argument(call, name):
    with pytest.raises(InputError, match=name):
        call()


def test_caption_hallucination_known_rows():
    from xattr_nb.worlds import captions as W

    shape = W.SHAPES[0]
    prior = W.PRIOR_COLOR[shape]
    other = next(c for c in W.COLORS if c != prior)
    third = next(c for c in W.COLORS if c not in (prior, other))
    a = {"color": other, "shape": shape}
    caps = [f"a {other} {shape}", f"a {prior} {shape}", f"a {third} {shape}", "a shape"]
    t = M.caption_hallucination(caps, [a] * 4)
    assert t.wrong_color.tolist() == [False, True, True, True]
    assert t.prior_consistent.tolist() == [False, True, False, False]
    with pytest.raises(InputError, match="attrs"):
        M.caption_hallucination(caps, [a])
