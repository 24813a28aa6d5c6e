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
