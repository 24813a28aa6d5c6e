"""R0 building blocks: rewards against their definitions, the weight penalty's closed form, diversity on
known points, the loss's parts, training touching only the student, evaluation's determinism, captions,
and the loaders' refusals (``scale="full"`` without diffusers)."""

from __future__ import annotations

import dataclasses
import sys

import pytest
import torch
import torch.nn.functional as F

from xattr_nb.checks import InputError
from xattr_nb.methods import r0 as R
from xattr_nb.models.clip import clip_tokenizer, encode_image, tiny_clip
from xattr_nb.models.t2i import TinyT2I, TinyT2INet
from xattr_nb.worlds import captions as W


class _Fixed(torch.nn.Module):
    """A two-head 'classifier' with fixed logits per row (R_attr's known answer)."""

    def __init__(self, shape_logits: torch.Tensor, color_logits: torch.Tensor):
        super().__init__()
        self.s, self.c = shape_logits, color_logits
        self.w = torch.nn.Parameter(torch.zeros(()))

    def forward(self, x):
        scale = 1.0 + self.w + 0.0 * x.mean()
        return {"shape": self.s * scale, "color": self.c * scale}


class _Clf(torch.nn.Module):
    """A small differentiable two-head classifier with a penultimate ``mlp`` (C2's interface)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(1)
        self.lin = torch.nn.Linear(3 * 32 * 32, 8)
        self.mlp = torch.nn.Identity()
        self.heads = torch.nn.ModuleDict({"shape": torch.nn.Linear(8, 16), "color": torch.nn.Linear(8, 8)})

    def features(self, x):
        return self.lin(x.flatten(1))

    def forward(self, x):
        h = self.features(x)
        return {k: v(h) for k, v in self.heads.items()}


@pytest.fixture(scope="module")
def gen() -> TinyT2I:
    torch.manual_seed(0)
    net = TinyT2INet(latent=64, cond_dim=64, ae_width=8, width=32, blocks=2)
    for f in net.vel.films:
        torch.nn.init.normal_(f.weight, std=0.05)
    return TinyT2I(net, tiny_clip(), clip_tokenizer())


@pytest.fixture(scope="module")
def banks(gen):
    d = W.corpus(24, seed=3)
    bank = R.make_bank(gen, d, captions=R.specific_captions(d, seed=1))
    e = W.corpus(16, seed=4)
    ev = R.make_bank(gen, e, captions=R.specific_captions(e, seed=2), z_seed=5, div_prompts=4, div_repeats=3)
    return bank, ev


def test_rewards_match_their_definitions(gen):
    torch.manual_seed(0)
    x = torch.rand(3, 3, 32, 32)
    cond = torch.randn(3, 64)
    s_log, c_log = torch.randn(3, 16), torch.randn(3, 8)
    s, c = torch.tensor([0, 5, 15]), torch.tensor([7, 0, 3])
    r = R.rewards(x, cond, s, c, clip=gen.clip, c1=_Fixed(s_log, c_log))
    want_attr = F.log_softmax(s_log, -1)[torch.arange(3), s] + F.log_softmax(c_log, -1)[torch.arange(3), c]
    torch.testing.assert_close(r["attr"], want_attr)
    want_align = F.cosine_similarity(encode_image(gen.clip, x), cond, dim=-1)
    torch.testing.assert_close(r["align"], want_align)
    assert float(r["align"].abs().max()) <= 1.0 + 1e-5 and float(r["attr"].max()) <= 0.0
    with pytest.raises(InputError, match="batch"):
        R.rewards(x, cond[:2], s, c, clip=gen.clip, c1=_Fixed(s_log, c_log))


def test_weight_penalty_closed_form(gen):
    student = gen.trainable_copy()
    theta0 = [p.detach().clone() for p in student.parameters()]
    assert float(R.weight_penalty(student, theta0)) == 0.0
    p = next(iter(student.parameters()))
    with torch.no_grad():
        p.add_(0.5)
    torch.testing.assert_close(R.weight_penalty(student, theta0), torch.tensor(0.25 * p.numel()))
    with pytest.raises(InputError, match="theta0"):
        R.weight_penalty(student, theta0[:-1])


def test_diversity_known_points():
    feats = torch.tensor([[0.0, 0.0], [3.0, 4.0], [1.0, 1.0], [1.0, 1.0], [9.0, 9.0]])
    groups = torch.tensor([0, 0, 1, 1, 2])  # group 2 has one row: skipped
    assert R.diversity(feats, groups) == pytest.approx((5.0 + 0.0) / 2)
    # three points of an equilateral triangle of side 2: mean pairwise distance 2
    tri = torch.tensor([[0.0, 0.0], [2.0, 0.0], [1.0, 3.0**0.5]])
    assert R.diversity(tri, torch.zeros(3, dtype=torch.long)) == pytest.approx(2.0)
    assert R.diversity(feats[:1], torch.tensor([0])) == 0.0
    with pytest.raises(InputError, match="groups"):
        R.diversity(feats, groups[:3])


def test_config_refuses_bad_switches():
    with pytest.raises(InputError, match="kappa"):
        R.R0Config(steps=3)
    assert R.R0Config(steps=3, intermediate=False).steps == 3
    with pytest.raises(InputError, match="nothing to train"):
        R.R0Config(w_align=0.0, w_attr=0.0)
    with pytest.raises(InputError, match="eta"):
        R.R0Config(eta=1.5)


def test_specific_captions_name_shape_and_colour():
    d = W.corpus(40, seed=0)
    caps = R.specific_captions(d, seed=0)
    for cap, a in zip(caps, d.attrs, strict=True):
        assert a["shape"] in cap and a["color"] in cap
    with pytest.raises(InputError, match="templates"):
        R.specific_captions(d, templates=(99,))


def test_reward_loss_parts(gen, banks):
    bank, _ = banks
    student = gen.trainable_copy()
    theta0 = [p.detach().clone() for p in student.parameters()]
    c1 = _Clf()
    z = gen.noise(len(bank), 0)
    cfg = R.R0Config(lam_w=1.0, intermediate=False, random_eta=False)
    loss, parts = R.reward_loss(student, bank, z, cfg, clip=gen.clip, c1=c1, theta0=theta0)
    x = gen.sample(bank.cond, z, steps=4, cfg=2.0)
    r = R.rewards(x, bank.cond, bank.shape_ids, bank.color_ids, clip=gen.clip, c1=c1)
    # at theta0 the penalty is 0 and the loss is minus the final sample's reward
    assert parts["reg"] == 0.0
    torch.testing.assert_close(loss.detach(), -(r["align"] + r["attr"]).mean(), rtol=1e-4, atol=1e-5)
    loss.backward()
    assert any(p.grad is not None and float(p.grad.abs().sum()) > 0 for p in student.parameters())
    with pytest.raises(InputError, match="theta0"):
        R.reward_loss(student, bank, z, cfg, clip=gen.clip, c1=c1)
    with pytest.raises(InputError, match="target"):
        R.reward_loss(student, bank, z, dataclasses.replace(cfg, distill=1.0), clip=gen.clip, c1=c1, theta0=theta0)


def test_training_moves_the_student_only(gen, banks):
    bank, ev = banks
    c1 = _Clf()
    before = [p.detach().clone() for p in gen.net.vel.parameters()]
    cfg = R.R0Config(train_steps=3, batch=4, lr=1e-2)
    student, log = R.train_r0(gen, bank, cfg, clip=gen.clip, c1=c1, seed=0)
    assert len(log) == 3 and all(0.0 <= r["eta"] <= 1.0 for r in log)
    assert all(torch.equal(a, b) for a, b in zip(before, gen.net.vel.parameters(), strict=True))
    assert any(not torch.equal(a, b) for a, b in zip(before, student.net.vel.parameters(), strict=True))
    assert log[-1]["reg"] > 0.0
    # zero steps: the student is the teacher, and evaluation is deterministic
    same, _ = R.train_r0(gen, bank, dataclasses.replace(cfg, train_steps=0), clip=gen.clip, c1=c1)
    c2 = _Clf()
    a = R.evaluate(gen, ev, steps=4, clip=gen.clip, c1=c1, c2=c2, pca_dim=4)
    b = R.evaluate(same, ev, steps=4, clip=gen.clip, c1=c1, c2=c2, pca_dim=4)
    assert a == b
    assert set(a) >= {"r_align", "judge_both", "fid_c2", "fid_pixels", "diversity"}
    assert 0.0 <= a["judge_both"] <= min(a["judge_shape"], a["judge_color"]) and a["fid_pixels"] >= 0.0
    with pytest.raises(InputError, match="targets"):
        R.train_r0(gen, bank, dataclasses.replace(cfg, distill=1.0), clip=gen.clip, c1=c1)


def test_distillation_targets_are_the_teachers_latents(gen, banks):
    bank, _ = banks
    z = gen.noise(len(bank), 9)
    t = R.teacher_targets(gen, bank.cond, z, steps=5)
    torch.testing.assert_close(t, gen.sample(bank.cond, z, steps=5, decode=False))
    c1 = _Clf()
    cfg = R.R0Config(train_steps=2, batch=4, distill=1.0, w_align=0.0, w_attr=0.0, lam_w=0.0)
    _, log = R.train_r0(gen, bank, cfg, clip=gen.clip, c1=c1, targets=(z, t))
    assert log[0]["distill"] > 0.0


def test_make_bank_and_evaluate_refuse_bad_input(gen, banks):
    bank, _ = banks
    d = W.corpus(5, seed=0)
    with pytest.raises(InputError, match="captions"):
        R.make_bank(gen, d, captions=["a red star"])
    with pytest.raises(InputError, match="bank"):
        R.evaluate(gen, bank, steps=2, clip=gen.clip, c1=_Clf(), c2=_Clf())


def test_load_generator_full_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "diffusers", None)  # as if not installed
    with pytest.raises(InputError, match="pip install diffusers"):
        R.load_generator("full")
    with pytest.raises(InputError, match="scale"):
        R.load_generator("huge")
    with pytest.raises(InputError, match="full"):
        R.load_generator("full", full="")
