"""Preference-training pieces (paper 25): DPO with soft labels, Kendall consistency, best/worst pairs,
implicit rewards, and the tiny policy's sequence log-probabilities and sampling."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.stats import kendalltau

from xattr_nb.checks import InputError
from xattr_nb.models.policy import (
    char_tokenizer,
    decode_responses,
    encode_prompts,
    encode_responses,
    greedy,
    sample,
    sequence_logprob,
    tiny_gpt2,
)
from xattr_nb.training import best_worst_pairs, dpo_loss, implicit_reward, kendall_consistency


def _t(*v):
    return torch.tensor(v, dtype=torch.float32)


# ------------------------------------------------------------------ dpo_loss


def test_dpo_loss_closed_form_hand_numbers():
    # h = (−1 − (−2)) − (−3 − (−2)) = 2, β h = 0.2
    args = (_t(-1.0), _t(-3.0), _t(-2.0), _t(-2.0))
    plain = math.log1p(math.exp(-0.2))  # −log σ(0.2)
    assert float(dpo_loss(*args, beta=0.1)) == pytest.approx(plain, abs=1e-6)
    assert float(dpo_loss(*args, beta=0.1, soft_label=1.0)) == pytest.approx(plain, abs=1e-6)
    soft = 0.7 * plain + 0.3 * math.log1p(math.exp(0.2))
    assert float(dpo_loss(*args, beta=0.1, soft_label=0.7)) == pytest.approx(soft, abs=1e-6)
    sym = 0.5 * (math.log1p(math.exp(-0.2)) + math.log1p(math.exp(0.2)))
    assert float(dpo_loss(*args, beta=0.1, soft_label=0.5)) == pytest.approx(sym, abs=1e-6)
    # C = 0.5 is symmetric in h: swapping chosen and rejected gives the same value
    swapped = (_t(-3.0), _t(-1.0), _t(-2.0), _t(-2.0))
    assert float(dpo_loss(*swapped, soft_label=0.5)) == pytest.approx(sym, abs=1e-6)


def test_dpo_loss_soft_half_is_flat_at_zero_and_tensor_labels():
    h = torch.zeros(3, requires_grad=True)
    z = torch.zeros(3)
    (g,) = torch.autograd.grad(dpo_loss(h, z, z, z, soft_label=0.5).sum(), h)
    assert torch.allclose(g, torch.zeros(3))
    # optimum of the soft loss: σ(β h) = C
    hs = torch.linspace(-40, 40, 8001)
    zz = torch.zeros_like(hs)
    best = hs[dpo_loss(hs, zz, zz, zz, beta=0.1, soft_label=0.8).argmin()]
    assert float(torch.sigmoid(0.1 * best)) == pytest.approx(0.8, abs=2e-3)
    c = _t(1.0, 0.5)
    out = dpo_loss(_t(0.0, 0.0), _t(-1.0, -1.0), _t(0.0, 0.0), _t(0.0, 0.0), soft_label=c)
    assert out.shape == (2,) and float(out[0]) == pytest.approx(math.log1p(math.exp(-0.1)), abs=1e-6)


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [({"soft_label": 1.5}, "soft_label"), ({"soft_label": torch.ones(3)}, "soft_label"), ({"beta": -1.0}, "beta")],
)
def test_dpo_loss_bad_input(kwargs, name):
    with pytest.raises(InputError, match=f"`{name}`"):
        dpo_loss(_t(0.0, 0.0), _t(0.0, 0.0), _t(0.0, 0.0), _t(0.0, 0.0), **kwargs)


def test_dpo_loss_length_mismatch():
    with pytest.raises(InputError, match="same length"):
        dpo_loss(_t(0.0, 0.0), _t(0.0), _t(0.0, 0.0), _t(0.0, 0.0))


# ------------------------------------------------------------------ kendall_consistency, best_worst_pairs


def test_kendall_consistency_known_values():
    a = _t(1.0, 2.0, 3.0, 4.0)[None]
    assert float(kendall_consistency(a, a)) == 1.0
    assert float(kendall_consistency(a, -a)) == 0.0
    # one discordant pair of six: τ = (5 − 1) / 6 = 2/3, C = 5/6
    assert float(kendall_consistency(a, _t(1.0, 3.0, 2.0, 4.0)[None])) == pytest.approx(5 / 6, abs=1e-6)
    # ties are broken by position (ordinal ranks): [1, 1, 2] ranks as [0, 1, 2]
    assert float(kendall_consistency(_t(1.0, 1.0, 2.0)[None], _t(0.0, 1.0, 2.0)[None])) == 1.0


def test_kendall_consistency_matches_scipy_without_ties():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(20, 5, generator=g), torch.randn(20, 5, generator=g)
    ours = kendall_consistency(a, b).numpy()
    ref = np.array([(kendalltau(x, y).statistic + 1) / 2 for x, y in zip(a.numpy(), b.numpy(), strict=True)])
    assert np.allclose(ours, ref, atol=1e-6)


def test_kendall_consistency_bad_input():
    with pytest.raises(InputError, match="same shape"):
        kendall_consistency(torch.zeros(2, 3), torch.zeros(2, 4))
    with pytest.raises(InputError, match="`r_a`"):
        kendall_consistency(torch.zeros(2, 1), torch.zeros(2, 1))


def test_best_worst_pairs():
    best, worst, valid = best_worst_pairs(torch.tensor([[1.0, 3.0, 2.0], [5.0, 5.0, 5.0], [0.0, -1.0, 2.0]]))
    assert best.tolist() == [1, 0, 2] and worst.tolist() == [0, 0, 1] and valid.tolist() == [True, False, True]
    with pytest.raises(InputError, match="`rewards`"):
        best_worst_pairs(torch.zeros(3))


# ------------------------------------------------------------------ policy: tokenizer, log-probs, sampling


@pytest.fixture(scope="module")
def tiny():
    tok = char_tokenizer("0123456789=")
    return tok, tiny_gpt2(len(tok), n_layer=1, n_embd=16, n_head=2, seed=0)


def test_char_tokenizer_round_trip(tiny):
    tok, _ = tiny
    ids = tok("529=", add_special_tokens=False)["input_ids"]
    assert ids == [7, 4, 11, 12] and tok.pad_token_id == 0 and tok.eos_token_id == 1
    assert decode_responses(tok, torch.tensor([[7, 4, 1, 5, 0]])) == ["52"]
    with pytest.raises(InputError, match="`alphabet`"):
        char_tokenizer("0012")


def test_sequence_logprob_equals_hand_sum(tiny):
    tok, m = tiny
    p = encode_prompts(tok, ["52=", "91="])
    r = encode_responses(tok, ["25", "1"])  # "1" + EOS + pad
    assert r.tolist()[1] == [3, 1, 0]
    with torch.no_grad():
        got = sequence_logprob(m, p, r)
        got_norm = sequence_logprob(m, p, r, length_norm=True)
        want = []
        for i in range(2):
            ids = torch.cat([p[i], r[i]])[None]
            logp = torch.log_softmax(m(ids).logits[0], -1)
            n_real = 3 if i == 0 else 2  # response tokens up to and including EOS
            want.append(sum(float(logp[p.shape[1] - 1 + k, r[i, k]]) for k in range(n_real)))
    assert got.tolist() == pytest.approx(want, abs=1e-5)
    assert got_norm.tolist() == pytest.approx([want[0] / 3, want[1] / 2], abs=1e-5)


def test_sequence_logprob_left_padding_is_invisible(tiny):
    tok, m = tiny
    p = encode_prompts(tok, ["5=", "123="])  # different lengths: left-padded
    assert p.tolist()[0][:2] == [0, 0]
    r = encode_responses(tok, ["5", "123"])
    with torch.no_grad():
        both = sequence_logprob(m, p, r)
        alone = sequence_logprob(m, encode_prompts(tok, ["5="]), encode_responses(tok, ["5"]))
    assert float(both[0]) == pytest.approx(float(alone[0]), abs=1e-5)


def test_sample_seeded_shape_and_state(tiny):
    tok, m = tiny
    p = encode_prompts(tok, ["52=", "91="])
    state = torch.random.get_rng_state()
    a = sample(m, p, 3, max_new=4, seed=5)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert a.shape == (2, 3, 4) and torch.equal(a, sample(m, p, 3, max_new=4, seed=5))
    assert greedy(m, p, max_new=4).shape == (2, 4)
    with pytest.raises(InputError, match="`top_p`"):
        sample(m, p, 2, top_p=1.5)


def test_implicit_reward(tiny):
    tok, m = tiny
    p = encode_prompts(tok, ["52=", "91="])
    resp = sample(m, p, 3, max_new=4, seed=1)
    assert torch.allclose(implicit_reward(m, m, p, resp), torch.zeros(2, 3))
    own = implicit_reward(m, None, p, resp)
    with torch.no_grad():
        ref = sequence_logprob(m, p.repeat_interleave(3, 0), resp.reshape(6, 4)).reshape(2, 3)
    assert torch.allclose(own, ref, atol=1e-5)
    with pytest.raises(InputError, match="`resp_ids`"):
        implicit_reward(m, None, p, resp[:1])
