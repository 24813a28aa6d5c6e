"""Tests of xattr_nb.models.moe: the tiny MoE MLP, moeified GPT-2, routing read-outs and overrides."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from xattr_nb.checks import InputError
from xattr_nb.models import moe
from xattr_nb.models.text import tiny_gpt2
from xattr_nb.models.vision import build


def small_moe_lm(layers=None, k: int = 2, seed: int = 0):
    return moe.moeify_gpt2(tiny_gpt2(20, n_layer=3, d_model=16, n_head=2, n_ctx=8, seed=seed), 4, k, 8, layers)


def randomize_router(m: moe.TopKMoEMLP, seed: int = 0) -> None:
    with torch.no_grad():
        m.router.weight.copy_(torch.randn(m.router.weight.shape, generator=torch.Generator().manual_seed(seed)))


def test_topk_masking_is_exact():
    m = moe.TopKMoEMLP(6, n_experts=5, k=2, d_ff=3, seed=1)
    randomize_router(m)
    x = torch.randn(7, 6, generator=torch.Generator().manual_seed(2))
    y = m(x)
    p = m.last_probs
    assert torch.allclose(p.sum(-1), torch.ones(7))
    g = m.gates(p)
    assert bool(((g > 0).sum(-1) == 2).all())
    top, idx = p.topk(2, dim=-1)
    assert torch.allclose(g.gather(-1, idx), top / top.sum(-1, keepdim=True))
    assert torch.allclose(g.sum(-1), torch.ones(7))
    # the dense masked sum equals running only the two chosen experts, expert by expert
    manual = torch.zeros(7, 6)
    for i in range(7):
        for e in idx[i].tolist():
            h = nn.functional.gelu(x[i] @ m.w_in[e] + m.b_in[e], approximate="tanh")
            manual[i] += g[i, e] * (h @ m.w_out[e] + m.b_out[e])
    assert torch.allclose(y, manual, atol=1e-6)


def test_unnormalized_gates_are_the_raw_topk_probabilities():
    m = moe.TopKMoEMLP(4, n_experts=4, k=1, d_ff=2, normalize_topk=False, seed=0)
    randomize_router(m, 3)
    m(torch.randn(5, 4))
    g = m.gates(m.last_probs)
    assert torch.allclose(g.max(-1).values, m.last_probs.max(-1).values)
    assert bool(((g > 0).sum(-1) == 1).all())


@pytest.mark.parametrize("normalize", [True, False])
def test_k_equal_to_n_experts_is_the_dense_softmax_mixture(normalize):
    m = moe.TopKMoEMLP(6, n_experts=4, k=4, d_ff=5, normalize_topk=normalize, seed=0)
    randomize_router(m, 1)
    x = torch.randn(2, 3, 6)
    y = m(x)
    dense = (m.last_probs.unsqueeze(-1) * m.expert_outputs(x)).sum(-2)
    assert torch.allclose(y, dense, atol=1e-6)


def test_moeify_replaces_chosen_mlps_and_rebuilds_from_its_config():
    lm = small_moe_lm(layers=[-1, 0])
    assert moe.moe_layers(lm) == [0, 2]
    assert type(lm.transformer.h[1].mlp).__name__ == "GPT2MLP"
    cfg = moe.moe_arch_config(lm)
    assert cfg["arch"] == "moe_gpt2" and cfg["kwargs"]["layers"] == [0, 2]
    other = build(cfg)
    other.load_state_dict(lm.state_dict())
    ids = torch.randint(0, 20, (3, 6), generator=torch.Generator().manual_seed(0))
    assert torch.allclose(other(input_ids=ids).logits, lm(input_ids=ids).logits)
    with pytest.raises(InputError, match="already moeified"):
        moe.moeify_gpt2(lm)


def test_routing_weights_rows_sum_to_one_and_follow_positions():
    lm = small_moe_lm()
    for layer in moe.moe_layers(lm):
        randomize_router(lm.transformer.h[layer].mlp, layer)
    ids = torch.randint(0, 20, (4, 6), generator=torch.Generator().manual_seed(0))
    r = moe.routing_weights(lm, ids)
    assert r.shape == (4, 3, 4) and torch.allclose(r.sum(-1), torch.ones(4, 3))
    pos = torch.tensor([0, 5, 2, 3])
    r2 = moe.routing_weights(lm, ids, layers=[1], pos=pos)
    full = lm.transformer.h[1].mlp.last_probs
    assert torch.equal(r2[:, 0], full[torch.arange(4), pos])
    assert not r2.requires_grad and moe.routing_weights(lm, ids, grad=True).requires_grad
    with pytest.raises(InputError, match="pos"):
        moe.routing_weights(lm, ids, pos=6)


def test_freezing_leaves_only_the_chosen_routers_trainable():
    lm = small_moe_lm()
    names = moe.freeze_all_but_routers(lm, layers=[1, 2])
    assert names == ["transformer.h.1.mlp.router.weight", "transformer.h.2.mlp.router.weight"]
    trainable = [n for n, p in lm.named_parameters() if p.requires_grad]
    assert trainable == names
    assert sum(p.numel() for p in moe.router_parameters(lm, [1, 2])) == 2 * 4 * 16


def test_override_routing_forces_experts_and_is_removed_even_on_error():
    lm = small_moe_lm()
    ids = torch.randint(0, 20, (2, 5))

    def force_expert_3(z):
        return z + torch.tensor([0.0, 0.0, 0.0, 50.0])

    with moe.override_routing(lm, {2: force_expert_3}):
        r = moe.routing_weights(lm, ids, layers=[2])
    assert torch.allclose(r[:, 0, 3], torch.ones(2))
    with pytest.raises(RuntimeError, match="boom"), moe.override_routing(lm, {2: force_expert_3}):
        raise RuntimeError("boom")
    assert lm.transformer.h[2].mlp.override is None
    with pytest.raises(InputError, match="shape"), moe.override_routing(lm, {0: lambda z: z[..., :2]}):
        lm(input_ids=ids)


def test_load_balance_is_one_for_uniform_routers():
    lm = small_moe_lm()
    for layer in moe.moe_layers(lm):
        nn.init.zeros_(lm.transformer.h[layer].mlp.router.weight)
    lm(input_ids=torch.randint(0, 20, (3, 7)))
    assert float(moe.load_balance_loss(lm).detach()) == pytest.approx(1.0, abs=1e-6)
    for layer in moe.moe_layers(lm):
        randomize_router(lm.transformer.h[layer].mlp, layer)
        lm.transformer.h[layer].mlp.router.weight.data *= 10
    lm(input_ids=torch.randint(0, 20, (3, 7)))
    assert float(moe.load_balance_loss(lm).detach()) > 1.0  # peaked routers are unbalanced


def test_bad_inputs_raise():
    with pytest.raises(InputError, match="k"):
        moe.TopKMoEMLP(8, n_experts=4, k=5)
    with pytest.raises(InputError, match="GPT2LMHeadModel"):
        moe.moeify_gpt2(nn.Linear(2, 2))
    with pytest.raises(InputError, match="repeats"):
        moe.moeify_gpt2(tiny_gpt2(10, n_layer=2, d_model=8, n_head=2), layers=[0, -2])
    with pytest.raises(InputError, match="no TopKMoEMLP"):
        moe.routing_weights(tiny_gpt2(10, n_layer=2, d_model=8, n_head=2), torch.zeros(1, 3, dtype=torch.long))
    lm = small_moe_lm(layers=[0])
    with pytest.raises(InputError, match="not MoE blocks"):
        moe.freeze_all_but_routers(lm, layers=[1])
    with pytest.raises(InputError, match="d_model"):
        moe.TopKMoEMLP(8)(torch.zeros(2, 3))
