"""xattr_nb.interventions.steering: exact residual edits, leak-free hooks, steered generation, sweeps."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from transformers import GPT2Config, GPT2LMHeadModel

from xattr_nb.checks import InputError
from xattr_nb.interventions.hooks import run_with_cache
from xattr_nb.interventions.steering import add_vector, perplexity, resolve_site, steer_generate, sweep_alpha


@pytest.fixture(scope="module")
def gpt():
    torch.manual_seed(0)
    cfg = GPT2Config(vocab_size=20, n_embd=16, n_layer=3, n_head=2, n_positions=32, initializer_range=0.3)
    return GPT2LMHeadModel(cfg).eval()


IDS = torch.tensor([[3, 5, 7, 9, 2], [4, 4, 8, 1, 6]])
NAMES = [f"transformer.h.{i}" for i in range(3)]


def _n_hooks(model: nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


def _cache(model, ids=IDS):
    return run_with_cache(model, input_ids=ids, names=NAMES)


def test_alpha_zero_leaves_logits_identical(gpt):
    ref = gpt(input_ids=IDS).logits
    with add_vector(gpt, 1, torch.randn(16), alpha=0.0):
        out = gpt(input_ids=IDS).logits
    assert torch.equal(out, ref)


def test_shift_is_exactly_alpha_v_at_the_site_and_zero_upstream(gpt):
    v = torch.zeros(16)
    v[3] = 1.0
    _, clean = _cache(gpt)
    with add_vector(gpt, 1, v, alpha=2.5):
        _, steered = _cache(gpt)
    assert torch.equal(steered["transformer.h.0"], clean["transformer.h.0"])  # upstream untouched
    diff = steered["transformer.h.1"] - clean["transformer.h.1"]
    assert torch.allclose(diff, (2.5 * v).expand_as(diff), atol=1e-6)
    assert not torch.allclose(steered["transformer.h.2"], clean["transformer.h.2"])  # downstream feels it


def test_resid_pre_equals_resid_post_of_previous_block(gpt):
    v = torch.randn(16, generator=torch.Generator().manual_seed(1))
    with add_vector(gpt, "resid_pre.2", v, alpha=1.5):
        pre = gpt(input_ids=IDS).logits
    with add_vector(gpt, "resid_post.1", v, alpha=1.5):
        post = gpt(input_ids=IDS).logits
    assert torch.allclose(pre, post, atol=1e-5)
    with add_vector(gpt, -1, v, alpha=1.0):
        last = gpt(input_ids=IDS).logits
    with add_vector(gpt, 2, v, alpha=1.0):
        assert torch.allclose(gpt(input_ids=IDS).logits, last)


def test_positions_list_edits_only_those_positions(gpt):
    v = torch.ones(16)
    _, clean = _cache(gpt)
    with add_vector(gpt, 0, v, alpha=1.0, positions=[1, -1]):
        _, steered = _cache(gpt)
    diff = (steered["transformer.h.0"] - clean["transformer.h.0"]).abs().sum(-1)  # [B, T]
    assert torch.allclose(diff[:, [1, 4]], torch.full((2, 2), 16.0), atol=1e-5)
    assert torch.equal(diff[:, [0, 2, 3]], torch.zeros(2, 3))


def test_hooks_removed_after_exception_and_normal_exit(gpt):
    before = _n_hooks(gpt)
    with pytest.raises(RuntimeError, match="boom"), add_vector(gpt, 0, torch.ones(16)):
        assert _n_hooks(gpt) == before + 1
        raise RuntimeError("boom")
    assert _n_hooks(gpt) == before
    with add_vector(gpt, 0, torch.ones(16)):
        pass
    assert _n_hooks(gpt) == before
    # a wrong-sized vector fails inside the forward, and the hook still goes away
    with pytest.raises(InputError, match="residual stream"), add_vector(gpt, 0, torch.ones(5)):
        gpt(input_ids=IDS)
    assert _n_hooks(gpt) == before


def test_steer_generate_alpha_zero_is_plain_greedy(gpt):
    out = steer_generate(gpt, IDS, 1, torch.randn(16), 0.0, max_new_tokens=4)
    ids = IDS.clone()
    with torch.no_grad():
        for _ in range(4):
            ids = torch.cat([ids, gpt(input_ids=ids).logits[:, -1].argmax(-1, keepdim=True)], 1)
    assert torch.equal(out, ids)
    assert out.shape == (2, 9)


def test_steer_generate_new_positions_leave_prompt_untouched(gpt):
    """With "new" the first token comes from the unsteered prompt; later steps are steered only on generated
    tokens, which equals steering the explicit list of positions >= prompt length."""
    v = 5 * torch.randn(16, generator=torch.Generator().manual_seed(2))
    plain = steer_generate(gpt, IDS, 0, v, 0.0, max_new_tokens=3)
    new = steer_generate(gpt, IDS, 0, v, 1.0, max_new_tokens=3, positions="new")
    assert torch.equal(new[:, :6], plain[:, :6])  # the first generated token is not steered
    ids = new[:, :7]
    with torch.no_grad(), add_vector(gpt, 0, v, 1.0, positions=[5, 6]):
        nxt = gpt(input_ids=ids).logits[:, -1].argmax(-1)
    assert torch.equal(nxt, new[:, 7])


def test_steer_generate_eos_sticks():
    class Const(nn.Module):
        def __init__(self):
            super().__init__()
            self.p = nn.Parameter(torch.zeros(1))

        def forward(self, input_ids, attention_mask=None):
            logits = torch.zeros(*input_ids.shape, 4)
            logits[..., 3] = 1.0  # always predicts token 3
            return logits

    m = Const()
    m.blocks = nn.ModuleList([nn.Identity()])
    out = steer_generate(m, torch.tensor([[1, 2]]), 0, torch.ones(4), 0.0, max_new_tokens=3, eos_token_id=3)
    assert out.tolist() == [[1, 2, 3, 3, 3]]


def test_perplexity_of_uniform_model_is_vocab_size():
    class Uniform(nn.Module):
        def __init__(self):
            super().__init__()
            self.p = nn.Parameter(torch.zeros(1))

        def forward(self, input_ids, attention_mask=None):
            return torch.zeros(*input_ids.shape, 7)

    ids = torch.tensor([[1, 2, 3, 0], [4, 5, 0, 0]])
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]])
    assert math.isclose(perplexity(Uniform(), ids, mask), 7.0, rel_tol=1e-6)


def test_perplexity_matches_hf_loss(gpt):
    with torch.no_grad():
        loss = float(gpt(input_ids=IDS, labels=IDS).loss)
    assert math.isclose(perplexity(gpt, IDS), math.exp(loss), rel_tol=1e-5)


def test_sweep_alpha_rows_and_zero_row_matches_unhooked(gpt):
    v = torch.randn(16, generator=torch.Generator().manual_seed(3))

    def score(m):
        with torch.no_grad():
            return {"p3": float(m(input_ids=IDS).logits[:, -1].softmax(-1)[:, 3].mean())}

    df = sweep_alpha(gpt, 1, v, [0.0, 1.0, -2.0], score, ppl_ids=IDS)
    assert list(df.columns) == ["alpha", "p3", "ppl"] and df["alpha"].tolist() == [0.0, 1.0, -2.0]
    assert math.isclose(df["p3"][0], score(gpt)["p3"], rel_tol=1e-6)
    assert math.isclose(df["ppl"][0], perplexity(gpt, IDS), rel_tol=1e-6)
    assert df["p3"][1] != df["p3"][0]
    plain = sweep_alpha(gpt, 1, v, [0.0], lambda m: 1.5)
    assert list(plain.columns) == ["alpha", "score"] and plain["score"][0] == 1.5


def test_resolve_site(gpt):
    assert resolve_site(gpt, 0) == ("transformer.h.0", "forward")
    assert resolve_site(gpt, "resid_pre.1") == ("transformer.h.1", "pre")
    assert resolve_site(gpt, -1) == ("transformer.h.2", "forward")


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"layer": 3}, "out of range"),
        ({"layer": "mlp_out.1"}, "site must look like"),
        ({"layer": True}, "block index"),
        ({"vec": torch.ones(2, 16)}, "1-D"),
        ({"vec": torch.ones(16, dtype=torch.long)}, "floating-point"),
        ({"vec": torch.full((16,), float("nan"))}, "NaN"),
        ({"alpha": float("inf")}, "finite"),
        ({"positions": "some"}, "positions"),
        ({"positions": []}, "positions"),
    ],
)
def test_add_vector_bad_inputs(gpt, kwargs, match):
    args = {"layer": 0, "vec": torch.ones(16), "alpha": 1.0, "positions": "all", **kwargs}
    before = _n_hooks(gpt)
    with pytest.raises(InputError, match=match), add_vector(gpt, **args):
        pass
    assert _n_hooks(gpt) == before


def test_bad_position_out_of_range_and_generation_limits(gpt):
    with pytest.raises(InputError, match="outside"), add_vector(gpt, 0, torch.ones(16), positions=[9]):
        gpt(input_ids=IDS)
    with pytest.raises(InputError, match="positions"):
        steer_generate(gpt, IDS, 0, torch.ones(16), 1.0, max_new_tokens=40)
    with pytest.raises(InputError, match="max_new_tokens"):
        steer_generate(gpt, IDS, 0, torch.ones(16), 1.0, max_new_tokens=0)
    with pytest.raises(InputError, match="at least 2 tokens"):
        perplexity(gpt, IDS[:, :1])
    with pytest.raises(InputError, match="alphas"):
        sweep_alpha(gpt, 0, torch.ones(16), "0,1", lambda m: 0.0)
    with pytest.raises(InputError, match="number or a dict"):
        sweep_alpha(gpt, 0, torch.ones(16), [0.0], lambda m: "high")
