"""Analytic tests of the attribution-prior alignment pieces in :mod:`xattr_nb.training`."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from xattr_nb.checks import InputError
from xattr_nb.models import fit
from xattr_nb.training import PriorAlignment, alignment_loss, normalize_scores, token_grad_x_input


class BagModel(nn.Module):
    """logits = Σ_t mask_t · E[id_t] @ W: gradient × input of class y at token t is E[id_t]·W[:, y]."""

    def __init__(self, vocab: int = 6, d: int = 3, c: int = 2, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.emb = nn.Embedding(vocab, d)
        self.w = nn.Parameter(torch.randn(d, c, generator=g))
        with torch.no_grad():
            self.emb.weight.copy_(torch.randn(vocab, d, generator=g))

    def get_input_embeddings(self) -> nn.Module:
        return self.emb

    def forward(self, input_ids, attention_mask=None):
        m = torch.ones_like(input_ids) if attention_mask is None else attention_mask
        return SimpleNamespace(logits=((self.emb(input_ids) * m[..., None]).sum(1)) @ self.w)


def test_normalize_scores_abs_l1_and_mask():
    s = torch.tensor([[1.0, -3.0, 5.0], [0.0, 0.0, 2.0]])
    m = torch.tensor([[True, True, False], [True, True, False]])
    out = normalize_scores(s, m)
    assert torch.allclose(out, torch.tensor([[0.25, 0.75, 0.0], [0.5, 0.5, 0.0]]))  # zero row → uniform


def test_alignment_loss_mse_and_kl_known_values():
    s = torch.tensor([[1.0, 3.0]])
    p = torch.tensor([[1.0, 1.0]])
    assert alignment_loss(s, p).item() == pytest.approx(2 * 0.25**2)
    kl = 0.5 * math.log(0.5 / 0.25) + 0.5 * math.log(0.5 / 0.75)
    assert alignment_loss(s, p, distance="kl").item() == pytest.approx(kl, abs=1e-6)
    assert alignment_loss(p * 7, p).item() == pytest.approx(0.0)


def test_token_grad_x_input_is_embedding_dot_class_weight_and_differentiable():
    model = BagModel()
    ids = torch.tensor([[1, 2, 0], [3, 4, 5]])
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]])
    y = torch.tensor([0, 1])
    s, logits = token_grad_x_input(model, ids, y, attention_mask=mask)
    want = (model.emb.weight[ids] * model.w.T[y][:, None, :]).sum(-1) * mask
    assert torch.allclose(s, want, atol=1e-6)
    assert logits.shape == (2, 2)
    (gw,) = torch.autograd.grad(s.sum(), model.w)  # the scores are graph nodes (create_graph=True)
    assert gw.abs().sum() > 0


def test_prior_alignment_finds_rows_after_shuffle_and_ramps():
    ids = torch.tensor([[1, 2], [3, 4], [5, 1]])
    prior = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.5, 0.5]])
    pa = PriorAlignment(ids, prior, lam=2.0, warmup=4)
    assert pa.rows(ids[[2, 0, 1]]).tolist() == [2, 0, 1]
    model = BagModel()
    v = pa(model, (ids,), torch.tensor([0, 1, 0]), None)
    s, _ = token_grad_x_input(model, ids, torch.tensor([0, 1, 0]))
    assert v.item() == pytest.approx(2.0 * 0.25 * alignment_loss(s, prior).item(), rel=1e-5)
    assert pa.weight() == pytest.approx(0.5)


def test_prior_alignment_training_lowers_the_alignment_term():
    ids = torch.tensor([[1, 2, 3], [2, 3, 4], [3, 4, 5], [4, 5, 1]])
    y = torch.tensor([0, 1, 0, 1])
    prior = torch.tensor([[1.0, 0.0, 0.0]] * 4)
    model = BagModel(seed=1)
    pa = PriorAlignment(ids, prior, lam=1.0)
    before = alignment_loss(token_grad_x_input(model, ids, y)[0], prior).item()
    fit(model, (ids, y), epochs=30, lr=0.1, batch_size=4, extra_loss=pa, seed=0, show_progress=False)
    after = alignment_loss(token_grad_x_input(model, ids, y)[0], prior).item()
    assert after < 0.5 * before


def test_bad_normalize_mask_empty_row():
    with pytest.raises(InputError, match="mask"):
        normalize_scores(torch.ones(2, 3), torch.tensor([[True, True, True], [False, False, False]]))


def test_bad_alignment_negative_prior():
    with pytest.raises(InputError, match="prior"):
        alignment_loss(torch.ones(1, 2), torch.tensor([[1.0, -1.0]]))


def test_bad_alignment_shape():
    with pytest.raises(InputError, match="prior"):
        alignment_loss(torch.ones(1, 2), torch.ones(1, 3))


def test_bad_alignment_distance():
    with pytest.raises(InputError, match="distance"):
        alignment_loss(torch.ones(1, 2), torch.ones(1, 2), distance="l1")


def test_bad_grad_x_input_target_out_of_range():
    with pytest.raises(InputError, match="target"):
        token_grad_x_input(BagModel(), torch.tensor([[1, 2]]), torch.tensor([5]))


def test_bad_grad_x_input_ids_out_of_range():
    with pytest.raises(InputError, match="input_ids"):
        token_grad_x_input(BagModel(), torch.tensor([[1, 99]]), torch.tensor([0]))


def test_bad_grad_x_input_model():
    with pytest.raises(InputError, match="model"):
        token_grad_x_input(nn.Linear(2, 2), torch.tensor([[1, 2]]), torch.tensor([0]))


def test_bad_prior_alignment_unknown_row():
    pa = PriorAlignment(torch.tensor([[1, 2]]), torch.ones(1, 2))
    with pytest.raises(InputError, match="not among the training rows"):
        pa.rows(torch.tensor([[2, 1]]))


def test_bad_prior_alignment_duplicate_rows_with_different_priors():
    with pytest.raises(InputError, match="priors differ"):
        PriorAlignment(torch.tensor([[1, 2], [1, 2]]), torch.tensor([[1.0, 0.0], [0.0, 1.0]]))


def test_bad_prior_alignment_negative_lam():
    with pytest.raises(InputError, match="lam"):
        PriorAlignment(torch.tensor([[1, 2]]), torch.ones(1, 2), lam=-1.0)


def test_bad_prior_alignment_negative_warmup():
    with pytest.raises(InputError, match="warmup"):
        PriorAlignment(torch.tensor([[1, 2]]), torch.ones(1, 2), warmup=-1)


# --------------------------------------------------------------------------------------------
# Label-noise losses: GCE and ELR (paper 18)
# --------------------------------------------------------------------------------------------

from xattr_nb.training import ELRLoss, GCELoss, elr_regularizer, gce_loss  # noqa: E402


def test_gce_known_value_and_limits():
    z = torch.tensor([[2.0, 0.0, -1.0], [0.5, 0.5, 0.5]])
    y = torch.tensor([0, 2])
    p = torch.softmax(z, 1)
    py = p[[0, 1], y]
    assert torch.allclose(gce_loss(z, y, 0.5), ((1 - py**0.5) / 0.5).mean())
    # q = 1: 1 - p_y, half the MAE ||e_y - p||_1
    mae = (torch.nn.functional.one_hot(y, 3).float() - p).abs().sum(1).mean()
    assert torch.allclose(gce_loss(z, y, 1.0), 0.5 * mae)
    # q -> 0: cross-entropy ((1 - p^q)/q = -log p + O(q); float64 so the subtraction keeps its digits)
    zd = z.double()
    assert torch.allclose(gce_loss(zd, y, 1e-7), torch.nn.functional.cross_entropy(zd, y), atol=1e-6)
    assert torch.allclose(GCELoss(0.7)(z, y), gce_loss(z, y, 0.7))


def test_gce_gradient_weights_examples_by_p_y_to_the_q():
    # dL/dz = p_y^q * dCE/dz: a confidently wrong-labelled example pushes less than under CE
    z = torch.tensor([[3.0, 0.0], [0.0, 0.0]], requires_grad=True)
    y = torch.tensor([1, 1])
    gce_loss(z, y, 0.7).backward()
    g_gce = z.grad.clone()
    z.grad = None
    torch.nn.functional.cross_entropy(z, y).backward()
    py = torch.softmax(z.detach(), 1)[:, 1]
    assert torch.allclose(g_gce, z.grad * (py**0.7)[:, None], atol=1e-6)


def test_elr_regularizer_gradient_matches_the_formula_and_its_direction():
    # d/dz_k log(1 - <p,t>) = p_k (<p,t> - t_k) / (1 - <p,t>)
    z = torch.tensor([[0.3, 1.2, -0.4]], requires_grad=True)
    t = torch.tensor([[0.8, 0.1, 0.1]])
    elr_regularizer(z, t, clamp=0.0).backward()
    p = torch.softmax(z.detach(), 1)
    pt = (p * t).sum()
    assert torch.allclose(z.grad, p * (pt - t) / (1 - pt), atol=1e-6)
    # labelled 1 (wrong), target on class 0 (true): descent raises z_0, lowers z_1 (CE pushes the other way)
    assert z.grad[0, 0] < 0 < z.grad[0, 1]


def test_elr_regularizer_vanishes_when_p_is_one_hot_and_is_zero_for_zero_targets():
    z = torch.tensor([[30.0, 0.0, 0.0]], requires_grad=True)
    elr_regularizer(z, torch.tensor([[0.2, 0.7, 0.1]]), clamp=0.0).backward()
    assert z.grad.abs().max() < 1e-9
    assert float(elr_regularizer(torch.randn(4, 3), torch.zeros(4, 3))) == 0.0


def test_elr_loss_target_update_is_the_official_ema_and_loss_adds_lambda_reg():
    loss = ELRLoss(5, 3, lam=2.0, beta=0.7)
    idx = torch.tensor([4, 1])
    z = torch.tensor([[1.0, 0.0, 0.0], [0.0, 2.0, 1.0]])
    y = torch.tensor([0, 2])
    out = loss(idx, z, y)
    p = torch.softmax(z, 1).clamp(1e-4, 1 - 1e-4)
    t = 0.3 * p / p.sum(1, keepdim=True)
    assert torch.allclose(loss.targets[idx], t) and float(loss.targets[[0, 2, 3]].abs().sum()) == 0.0
    expect = torch.nn.functional.cross_entropy(z, y) + 2.0 * torch.log(1 - (t * p).sum(1)).mean()
    assert torch.allclose(out, expect)
    loss(idx, z, y)  # second visit: t <- 0.7 t + 0.3 p
    assert torch.allclose(loss.targets[idx], 0.7 * t + 0.3 * p / p.sum(1, keepdim=True))


def test_elr_training_keeps_a_mislabelled_point_on_its_early_class():
    # one point labelled 1 whose target (early prediction) says 0: with ELR the logit of 0 stays ahead longer
    torch.manual_seed(0)
    z_ce = torch.tensor([[2.0, 0.0]], requires_grad=True)
    z_elr = torch.tensor([[2.0, 0.0]], requires_grad=True)
    elr = ELRLoss(1, 2, lam=3.0, beta=0.9)
    elr.targets[0] = torch.tensor([0.95, 0.05])
    for _ in range(20):
        for z, fn in ((z_ce, lambda z: torch.nn.functional.cross_entropy(z, torch.tensor([1]))),
                      (z_elr, lambda z: elr(torch.tensor([0]), z, torch.tensor([1])))):  # fmt: skip
            z.grad = None
            fn(z).backward()
            with torch.no_grad():
                z -= 0.3 * z.grad
    assert float((z_elr[0, 0] - z_elr[0, 1]).detach()) > float((z_ce[0, 0] - z_ce[0, 1]).detach())


@pytest.mark.parametrize(
    ("call", "arg"),
    [
        (lambda: gce_loss(torch.randn(2, 3), torch.tensor([0, 3])), "labels"),
        (lambda: gce_loss(torch.randn(2, 3), torch.tensor([0, 1]), q=0.0), "q"),
        (lambda: gce_loss(torch.randn(2, 3), torch.tensor([0, 1]), q=1.5), "q"),
        (lambda: GCELoss(q=-1), "q"),
        (lambda: elr_regularizer(torch.randn(2, 3), torch.ones(2, 3)), "targets"),
        (lambda: elr_regularizer(torch.randn(2, 3), torch.zeros(3, 3)), "targets"),
        (lambda: ELRLoss(4, 3, beta=1.0), "beta"),
        (lambda: ELRLoss(4, 3, lam=-1.0), "lam"),
        (lambda: ELRLoss(4, 1), "n_classes"),
        (lambda: ELRLoss(4, 3)(torch.tensor([0, 4]), torch.randn(2, 3), torch.tensor([0, 1])), "idx"),
        (lambda: ELRLoss(4, 3)(torch.tensor([1, 1]), torch.randn(2, 3), torch.tensor([0, 1])), "idx"),
        (lambda: ELRLoss(4, 3)(torch.tensor([0, 1]), torch.randn(2, 3), torch.tensor([0, 5])), "labels"),
        (lambda: ELRLoss(4, 3)(torch.tensor([0, 1]), torch.randn(2, 4), torch.tensor([0, 1])), "logits"),
    ],
)
def test_bad_label_noise_losses(call, arg):
    with pytest.raises(InputError, match=arg):
        call()
