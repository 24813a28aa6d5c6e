"""lrp_mode and the xattr_eager attention function: forward unchanged, backward = LRP, nothing leaks."""

from __future__ import annotations

import itertools

import pytest
import torch
from torch import nn

from xattr_nb.checks import InputError
from xattr_nb.interventions.hooks import hooks
from xattr_nb.interventions.lrp import lrp_mode, lrp_targets
from xattr_nb.interventions.patching import attribution_patching, normalized_logit_diff
from xattr_nb.models.attention import attention_patterns, use_xattr_attention
from xattr_nb.models.text import tiny_gpt2

IDS = torch.tensor([[3, 5, 7, 9, 2, 11], [4, 4, 8, 1, 6, 12]])


def _n_hooks(model):
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


@pytest.fixture(scope="module")
def model():
    return tiny_gpt2(20, n_layer=2, n_head=2, d_model=16, seed=1)


def test_forward_is_unchanged_under_every_rule_set(model):
    ref = model(IDS).logits
    mask = torch.ones_like(IDS)
    mask[0, 4:] = 0
    ref_masked = model(IDS, attention_mask=mask).logits
    for n in range(4):
        for rules in itertools.combinations(("ln", "identity", "half"), n):
            for ah in (False, True):
                with lrp_mode(model, rules, ah=ah):
                    assert (model(IDS).logits - ref).abs().max() < 1e-5
                    assert (model(IDS, attention_mask=mask).logits - ref_masked).abs().max() < 1e-5


def test_rules_off_is_plain_gradient(model):
    clean, corr = IDS, IDS.flip(0)
    metric = normalized_logit_diff(model, clean, corr, torch.tensor([1, 2]), torch.tensor([2, 1]))
    sites = ("resid_pre", "attn_out", "mlp_out", "head")
    atp = attribution_patching(model, clean, corr, metric, sites=sites)
    off = attribution_patching(model, clean, corr, metric, sites=sites, mode="relp", rules=())
    relp = attribution_patching(model, clean, corr, metric, sites=sites, mode="relp")
    assert (off.flat() - atp.flat()).abs().max() < 1e-6
    assert (relp.flat() - atp.flat()).abs().max() > 1e-4  # the rules do change the backward


def _relevance_balance(model, rules, ah):
    """f(x) versus x . df/dx + sum_b b . df/db at the block input x (all biases b)."""
    leaf = {}

    def grab(_m, args):
        x = args[0].detach().requires_grad_(True)
        leaf["x"] = x
        return (x, *args[1:])

    biases = [p for n, p in model.named_parameters() if n.endswith("bias")]
    with lrp_mode(model, rules, ah=ah), hooks(model, {"transformer.h.0": grab}, kind="pre"):
        logits = model(IDS).logits
        f = (logits[:, -1, 1] - logits[:, -1, 2]).sum()
        gx, *gb = torch.autograd.grad(f, [leaf["x"], *biases])
    total = (leaf["x"] * gx).sum() + sum((b * g).sum() for b, g in zip(biases, gb, strict=True))
    return float(f.detach()), float(total.detach())


def test_conservation_on_one_block():
    """With LN-, Identity- and AH-rules the network is linear in its input and biases, so the input's
    relevance is the output minus the biases' relevance."""
    toy = tiny_gpt2(20, n_layer=1, n_head=2, d_model=16, seed=2)
    f, total = _relevance_balance(toy, ("ln", "identity"), True)
    assert abs(f - total) < 1e-4 and abs(f) > 1e-2
    f0, total0 = _relevance_balance(toy, (), False)  # plain gradients do not conserve
    assert abs(f0 - total0) > 1e-3


class Gated(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.gate_proj, self.up_proj, self.down_proj = nn.Linear(4, 6), nn.Linear(4, 6), nn.Linear(6, 4)
        self.act_fn = nn.SiLU()

    def forward(self, x):
        return self.down_proj(self.act_fn(self.gate_proj(x)) * self.up_proj(x))


def test_half_rule_halves_the_gate_gradient():
    mlp = nn.Sequential(Gated())
    x = torch.randn(3, 4, requires_grad=True)
    (plain,) = torch.autograd.grad(mlp(x).sum(), x)
    with lrp_mode(mlp, ("half",)) as targets:
        y = mlp(x)
        (half,) = torch.autograd.grad(y.sum(), x)
    assert targets["half"] == ["0"] and (y - mlp(x)).abs().max() == 0
    # z/2 + sg(z/2) has the gradient of z/2; the bias of down_proj carries no gradient to x
    assert torch.allclose(half, 0.5 * plain, atol=1e-6)


def test_targets_and_no_leaks(model):
    t = lrp_targets(model)
    assert "transformer.ln_f" in t["ln"] and "transformer.h.1.mlp.act" in t["identity"] and t["half"] == []
    n = _n_hooks(model)
    with pytest.raises(RuntimeError, match="boom"), lrp_mode(model, ah=True):
        assert model.config._attn_implementation == "xattr_eager"
        raise RuntimeError("boom")
    assert _n_hooks(model) == n and model.config._attn_implementation == "eager"
    assert not any(hasattr(m, "_xattr_detach_probs") for m in model.modules())


def test_attention_patterns_match_eager(model):
    ref = model(IDS, output_attentions=True).attentions
    with attention_patterns(model) as pats:
        model(IDS)
    assert all(torch.allclose(pats[i][0], ref[i]) for i in range(2))
    assert not any(hasattr(m, "_xattr_store_probs") for m in model.modules())


def test_bad_inputs_raise(model):
    with pytest.raises(InputError, match="rules"), lrp_mode(model, "ln"):
        pass
    with pytest.raises(InputError, match=r"rules\[0\]"), lrp_mode(model, ("LN-rule",)):
        pass
    with pytest.raises(InputError, match="repeats"), lrp_mode(model, ("ln", "ln")):
        pass
    with pytest.raises(InputError, match="no module"), lrp_mode(nn.Sequential(nn.Linear(2, 2)), ("ln",)):
        pass
    with pytest.raises(InputError, match="attention"), use_xattr_attention(nn.Linear(2, 2)):
        pass
    with pytest.raises(InputError, match="eps"), lrp_mode(model, eps=-1.0):
        pass
