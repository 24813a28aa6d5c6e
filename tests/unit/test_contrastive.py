"""xattr_nb.contrastive: InfoNCE against its closed form, focal reweighting, mixed negatives, soups."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from xattr_nb.checks import InputError
from xattr_nb.contrastive import (
    average_state_dicts,
    contrastive_logits,
    focal_info_nce,
    focal_weights,
    info_nce,
    matryoshka,
    mix_hard_negatives,
)


def _unit(*rows):
    return F.normalize(torch.tensor(rows, dtype=torch.float64), dim=-1)


def test_info_nce_equals_the_closed_form_on_hand_vectors():
    q = _unit([1.0, 0.0], [0.0, 1.0])
    p = _unit([1.0, 1.0], [0.0, 1.0])
    tau = 0.5
    # row 0: s(q0,p0) = 1/sqrt2, s(q0,p1) = 0; row 1: s(q1,p1) = 1, s(q1,p0) = 1/sqrt2
    r = 1 / math.sqrt(2)
    l0 = -math.log(math.exp(r / tau) / (math.exp(r / tau) + math.exp(0.0)))
    l1 = -math.log(math.exp(1 / tau) / (math.exp(1 / tau) + math.exp(r / tau)))
    assert float(info_nce(q, p, tau=tau)) == pytest.approx((l0 + l1) / 2, abs=1e-12)
    per_row = info_nce(q, p, tau=tau, reduction="none")
    assert per_row.tolist() == pytest.approx([l0, l1], abs=1e-12)


def test_info_nce_hard_negatives_enter_every_row_in_batch_and_only_their_own_row_without():
    q = _unit([1.0, 0.0], [0.0, 1.0])
    p = _unit([1.0, 0.0], [0.0, 1.0])
    negs = _unit([0.0, 1.0], [1.0, 0.0]).view(2, 1, 2)  # row 0's negative is q1's direction and vice versa
    tau = 1.0
    e = math.e
    # in batch, row 0: positive 1, other positive 0, negs: own (0), row 1's (1)
    z0 = e**1 + e**0 + e**0 + e**1
    assert float(info_nce(q, p, negs, tau=tau, reduction="none")[0]) == pytest.approx(-math.log(e / z0))
    # own only: positive 1, own negative 0
    assert float(info_nce(q, p, negs, tau=tau, in_batch=False, reduction="none")[0]) == pytest.approx(
        -math.log(e / (e + 1))
    )


def test_info_nce_of_identical_embeddings_is_log_b():
    z = torch.randn(1, 8).repeat(5, 1)
    assert float(info_nce(z, z, tau=0.07)) == pytest.approx(math.log(5), abs=1e-5)
    assert float(info_nce(z, z, tau=0.07, symmetric=True)) == pytest.approx(math.log(5), abs=1e-5)


def test_symmetric_adds_the_passage_to_query_direction():
    g = torch.Generator().manual_seed(0)
    q, p = torch.randn(4, 6, generator=g), torch.randn(4, 6, generator=g)
    both = info_nce(q, p, symmetric=True)
    assert float(both) == pytest.approx(0.5 * float(info_nce(q, p) + info_nce(p, q)), abs=1e-6)


def test_valid_masks_in_batch_columns_but_never_the_positive():
    g = torch.Generator().manual_seed(1)
    q, p = torch.randn(3, 4, generator=g), torch.randn(3, 4, generator=g)
    none_valid = torch.zeros(3, 3, dtype=torch.bool)
    logits, _ = contrastive_logits(q, p, valid=none_valid)
    assert torch.isfinite(logits.diagonal()).all() and torch.isinf(logits[0, 1:]).all()
    assert float(info_nce(q, p, valid=none_valid)) == pytest.approx(0.0, abs=1e-7)


def test_focal_weights_lie_in_unit_interval_and_decrease_in_p():
    p = torch.linspace(0.01, 0.99, 50)
    w = focal_weights(p.log(), 2.0)
    assert bool(((w >= 0) & (w <= 1)).all())
    assert bool((w[1:] < w[:-1]).all())
    assert torch.allclose(focal_weights(p.log(), 0.0), torch.ones(50))


def test_focal_info_nce_at_gamma_zero_is_info_nce():
    g = torch.Generator().manual_seed(2)
    q, p, n = torch.randn(6, 8, generator=g), torch.randn(6, 8, generator=g), torch.randn(6, 3, 8, generator=g)
    for kw in ({}, {"negatives": n}, {"negatives": n, "in_batch": False}):
        a = focal_info_nce(q, p, tau=0.1, gamma=0.0, **kw)
        b = info_nce(q, p, tau=0.1, **kw)
        assert float(a) == pytest.approx(float(b), abs=1e-6)
    assert float(focal_info_nce(q, p, negatives=n, tau=0.1, gamma=0.0, normalize="weights")) == pytest.approx(
        float(info_nce(q, p, n, tau=0.1)), abs=1e-6
    )


def test_focal_info_nce_by_hand_and_the_detach_flag():
    g = torch.Generator().manual_seed(3)
    q = torch.randn(4, 5, generator=g, requires_grad=True)
    p = torch.randn(4, 5, generator=g)
    log_p = -info_nce(q, p, tau=0.2, reduction="none")
    want = (-((1 - log_p.exp()) ** 1.5) * log_p).mean()
    got = focal_info_nce(q, p, tau=0.2, gamma=1.5)
    assert float(got) == pytest.approx(float(want), abs=1e-6)
    assert float(got) < float(info_nce(q, p, tau=0.2))  # weights < 1 shrink the loss
    (g1,) = torch.autograd.grad(focal_info_nce(q, p, tau=0.2, gamma=1.5), q)
    (g2,) = torch.autograd.grad(focal_info_nce(q, p, tau=0.2, gamma=1.5, detach_weight=True), q)
    assert not torch.allclose(g1, g2)


def test_mixed_negatives_are_unit_norm_and_between_their_parents():
    g = torch.Generator().manual_seed(4)
    q = F.normalize(torch.randn(3, 6, generator=g), dim=-1)
    negs = F.normalize(torch.randn(3, 2, 6, generator=g), dim=-1)  # top_k=2: the parents are these two
    mixed = mix_hard_negatives(q, negs, top_k=2, n_mix=5, n_qmix=3, generator=torch.Generator().manual_seed(0))
    assert mixed.shape == (3, 8, 6)
    assert torch.allclose(mixed.norm(dim=-1), torch.ones(3, 8), atol=1e-6)
    for i in range(3):
        a, b = negs[i]
        basis = torch.linalg.qr(torch.stack([a, b]).T).Q  # [d, 2]
        for h in mixed[i, :5]:
            assert float((h - basis @ (basis.T @ h)).norm()) < 1e-5  # in the plane of a and b
            cab = float(a @ b)
            assert float(h @ a) >= cab - 1e-6 and float(h @ b) >= cab - 1e-6  # on the arc between them
        lowest = float((negs[i] @ q[i]).min())
        for h in mixed[i, 5:]:
            assert float(h @ q[i]) >= lowest - 1e-6  # query mixes are at least as close to q as a parent


def test_mixed_negatives_are_detached_by_default():
    q = torch.randn(2, 4, requires_grad=True)
    n = torch.randn(2, 3, 4, requires_grad=True)
    assert not mix_hard_negatives(q, n, top_k=2, n_mix=1, n_qmix=1).requires_grad
    assert mix_hard_negatives(q, n, top_k=2, n_mix=1, n_qmix=1, detach=False).requires_grad


def test_matryoshka_sums_weighted_prefix_losses():
    g = torch.Generator().manual_seed(5)
    q, p, n = torch.randn(4, 8, generator=g), torch.randn(4, 8, generator=g), torch.randn(4, 2, 8, generator=g)
    got = matryoshka(info_nce, q, p, dims=(8, 4), weights=(1.0, 0.5), negatives=n, tau=0.1)
    want = info_nce(q, p, n, tau=0.1) + 0.5 * info_nce(q[:, :4], p[:, :4], n[..., :4], tau=0.1)
    assert float(got) == pytest.approx(float(want), abs=1e-6)


def test_average_state_dicts_of_identical_models_is_the_model_and_of_two_is_the_mean():
    a = nn.Linear(3, 2)
    b = nn.Linear(3, 2)
    same = average_state_dicts([a.state_dict(), a.state_dict(), a.state_dict()])
    assert all(torch.allclose(same[k], v) for k, v in a.state_dict().items())
    mean = average_state_dicts([a.state_dict(), b.state_dict()])
    assert torch.allclose(mean["weight"], (a.weight + b.weight).detach() / 2)
    w = average_state_dicts([a.state_dict(), b.state_dict()], weights=[3, 1])
    assert torch.allclose(w["bias"], (0.75 * a.bias + 0.25 * b.bias).detach())


@pytest.mark.parametrize(
    ("call", "name"),
    [
        (lambda: info_nce(torch.randn(3, 4), torch.randn(2, 4)), "`p`"),
        (lambda: info_nce(torch.randn(3, 4), torch.randn(3, 4), tau=-1.0), "`tau`"),
        (lambda: info_nce(torch.randn(3, 4), torch.randn(3, 4), torch.randn(2, 1, 4)), "`negatives`"),
        (lambda: info_nce(torch.randn(3, 4), torch.randn(3, 4), reduction="sum"), "`reduction`"),
        (lambda: focal_info_nce(torch.randn(3, 4), torch.randn(3, 4), gamma=-0.5), "`gamma`"),
        (lambda: focal_info_nce(torch.randn(3, 4), torch.randn(3, 4), normalize="x"), "`normalize`"),
        (lambda: mix_hard_negatives(torch.randn(3, 4), torch.randn(3, 2, 5)), "`negs`"),
        (lambda: mix_hard_negatives(torch.randn(3, 4), torch.randn(3, 2, 4), n_mix=0, n_qmix=0), "`n_mix`"),
        (lambda: matryoshka(info_nce, torch.randn(3, 4), torch.randn(3, 4), dims=(8,), weights=(1,)), "`dims[0]`"),
        (lambda: average_state_dicts([]), "`state_dicts`"),
        (lambda: info_nce(torch.full((2, 3), float("nan")), torch.randn(2, 3)), "`q`"),
    ],
)
def test_bad_input_names_the_argument(call, name):
    with pytest.raises(InputError, match=name.replace("[", r"\[").replace("]", r"\]")):
        call()
