"""Mult-VAE's pieces against analytic answers, and the training protocol on a tiny world."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch

from xattr_nb.checks import InputError
from xattr_nb.methods import multvae as M
from xattr_nb.metrics.ranking import ndcg_at_k, recall_at_k
from xattr_nb.worlds.recsys import load_recsys, make_implicit_feedback


@pytest.fixture(scope="module")
def tiny():
    return make_implicit_feedback(n_users=400, n_items=120, n_topics=6, n_val=60, n_test=60, seed=5)


def test_multinomial_nll_hand_case():
    f = torch.tensor([[2.0, 1.0, -1.0]])
    x = torch.tensor([[1.0, 2.0, 0.0]])  # one click on item 0, two on item 1
    z = math.exp(2) + math.exp(1) + math.exp(-1)
    expected = -(1 * (2 - math.log(z)) + 2 * (1 - math.log(z)))
    assert M.multinomial_nll(f, x).item() == pytest.approx(expected, rel=1e-6)
    # shifting every logit by a constant leaves the multinomial unchanged (it only ranks items against each other)
    assert M.multinomial_nll(f + 5.0, x).item() == pytest.approx(expected, rel=1e-6)


def test_gaussian_and_logistic_hand_cases():
    f = torch.tensor([[2.0, 0.0]])
    x = torch.tensor([[1.0, 0.0]])
    assert M.gaussian_nll(f, x).item() == pytest.approx(0.5)
    sig = lambda v: 1 / (1 + math.exp(-v))  # noqa: E731
    assert M.logistic_nll(f, x).item() == pytest.approx(-math.log(sig(2.0)) - math.log(1 - sig(0.0)), rel=1e-6)
    with pytest.raises(InputError, match="logits"):
        M.multinomial_nll(f, x[:, :1])


def test_kl_matches_closed_form_and_torch():
    mu = torch.tensor([[0.3, -1.2, 2.0]])
    logvar = torch.tensor([[0.0, -0.7, 0.4]])
    by_hand = 0.5 * sum(
        -lv + math.exp(lv) + m * m - 1 for m, lv in zip(mu[0].tolist(), logvar[0].tolist(), strict=True)
    )
    assert M.kl_diag_gaussian(mu, logvar).item() == pytest.approx(by_hand, rel=1e-6)
    q = torch.distributions.Normal(mu, torch.exp(0.5 * logvar))
    p = torch.distributions.Normal(torch.zeros_like(mu), torch.ones_like(mu))
    assert M.kl_diag_gaussian(mu, logvar).item() == pytest.approx(
        torch.distributions.kl_divergence(q, p).sum().item(), rel=1e-5
    )
    assert M.kl_diag_gaussian(torch.zeros(2, 4), torch.zeros(2, 4)).tolist() == [0.0, 0.0]


def test_annealing_schedule_values():
    assert [M.kl_beta(t, 1000, 0.2) for t in (0, 100, 200, 500, 10_000)] == [0.0, 0.1, 0.2, 0.2, 0.2]
    assert M.kl_beta(50, 200, 1.0) == 0.25
    assert M.kl_beta(0, 0, 0.3) == 0.3  # no annealing: the cap from the first update
    with pytest.raises(InputError, match="total_anneal_steps"):
        M.kl_beta(1, -5, 0.2)
    with pytest.raises(InputError, match="cap"):
        M.kl_beta(1, 5, -0.2)


def test_autoencoder_eval_is_deterministic_and_dae_shapes():
    torch.manual_seed(0)
    vae = M.AutoEncoder(30, (16,), 4)
    x = (torch.rand(5, 30) < 0.3).float()
    vae.eval()
    a, mu, logvar = vae(x)
    assert torch.equal(a, vae(x)[0]) and a.shape == (5, 30) and mu.shape == logvar.shape == (5, 4)
    vae.train()
    assert not torch.equal(vae(x)[0], vae(x)[0])  # dropout and z sampling in training
    dae = M.AutoEncoder(30, (), 8, variational=False)
    out, h, none = dae(x)
    assert out.shape == (5, 30) and h.shape == (5, 8) and none is None
    assert len(dae.encoder) == 1 and len(dae.decoder) == 1


def test_train_keeps_the_best_validation_checkpoint(tiny):
    r = M.train(tiny.train, tiny.val_fold_in, tiny.val_heldout, epochs=4, batch_size=50, anneal_cap=1.0, seed=0)
    h = r.history
    assert len(h) == 4 and r.best_val_ndcg == pytest.approx(h["val_ndcg"].max())
    steps = r.config["updates"]
    assert steps == 4 * math.ceil(tiny.train.shape[0] / 50)
    # β is annealed per update over the whole run: after epoch e it is (updates so far - 1) / total
    assert h["beta"].tolist() == pytest.approx([(s - 1) / steps for s in h["step"]])
    assert M.select_beta(h) == h["beta"].iloc[int(np.argmax(h["val_ndcg"]))]
    # the kept model reproduces the best validation score
    s = M.score(r.model, tiny.val_fold_in)
    got = ndcg_at_k(s, tiny.val_heldout.toarray() > 0, 100, exclude=tiny.val_fold_in.toarray() > 0).mean().item()
    assert got == pytest.approx(r.best_val_ndcg, abs=1e-6)


def test_baselines_and_evaluate(tiny):
    pop = M.popularity_scores(tiny.train, 3)
    assert pop.shape == (3, tiny.n_items) and np.array_equal(pop[0], np.asarray(tiny.train.sum(0)).ravel())
    b = M.ease_fit(tiny.train, 50.0)
    assert np.allclose(np.diag(b), 0.0)
    # EASE's defining condition: off the diagonal, (XᵀX + λI) B = XᵀX (the gradient of ‖X − XB‖² + λ‖B‖² vanishes)
    g = (tiny.train.T @ tiny.train).toarray()
    resid = (g + 50.0 * np.eye(len(g))) @ b - g
    assert np.abs(resid - np.diag(np.diag(resid))).max() < 1e-6 * np.abs(g).max()
    m = M.evaluate(pop[:1].repeat(tiny.test_fold_in.shape[0], 0), tiny.test_fold_in, tiny.test_heldout, chunk=7)
    rel, ex = tiny.test_heldout.toarray() > 0, tiny.test_fold_in.toarray() > 0
    s = np.broadcast_to(pop[0], rel.shape)
    assert np.allclose(m["recall@20"], recall_at_k(s, rel, 20, exclude=ex).numpy())
    assert np.allclose(m["ndcg@100"], ndcg_at_k(s, rel, 100, exclude=ex).numpy())
    with pytest.raises(InputError, match="scores"):
        M.evaluate(pop, tiny.test_fold_in, tiny.test_heldout)


def test_compare_protocol_on_a_tiny_world(tiny):
    table, runs = M.compare(tiny, epochs=3, batch_size=50, seed=0, ease_lams=(10.0,))
    assert list(table["model"]) == [
        "Popularity",
        "EASE",
        "Mult-VAE",
        "Gaussian-VAE",
        "Logistic-VAE",
        "Mult-VAE β=1",
        "Mult-DAE",
        "oracle (true logits)",
    ]
    for name in ("Mult-VAE", "Gaussian-VAE", "Logistic-VAE"):  # the final run's cap is the anneal run's β*
        assert runs[name].config["anneal_cap"] == runs[f"{name} anneal"].best_beta
        assert runs[name].config["updates"] == runs["Mult-VAE"].config["updates"]
    assert runs["Mult-VAE β=1"].history["beta"].eq(1.0).all()
    assert (
        table.set_index("model").loc["oracle (true logits)", "ndcg@100"]
        > table.set_index("model").loc["Popularity", "ndcg@100"]
    )


def test_full_path_on_a_written_movielens_file(tmp_path):
    rng = np.random.default_rng(1)
    rows = [
        (u, int(i), float(rng.choice([3.0, 4.0, 5.0])), 0) for u in range(80) for i in rng.choice(50, 15, replace=False)
    ]
    pd.DataFrame(rows, columns=["userId", "movieId", "rating", "timestamp"]).to_csv(
        tmp_path / "ratings.csv", index=False
    )
    data = load_recsys("full", data_dir=str(tmp_path), n_heldout=10)
    assert data.truth is None
    res = M.explain(data, epochs=2, batch_size=20, hidden=(8,), latent=4)
    assert set(res.extra["test"]) == {"ndcg@100", "recall@20", "recall@50"}
    assert 0.0 <= res.extra["beta_star"] <= 1.0


def test_bad_input_names_the_argument(tiny):
    with pytest.raises(InputError, match="likelihood"):
        M.train(tiny.train, tiny.val_fold_in, tiny.val_heldout, likelihood="poisson")
    with pytest.raises(InputError, match="val_fold_in"):
        M.train(tiny.train, sp.csr_matrix((3, 7)), tiny.val_heldout)
    with pytest.raises(InputError, match="data"):
        M.compare("not data")
    with pytest.raises(InputError, match="history"):
        M.select_beta(pd.DataFrame())
    with pytest.raises(InputError, match="latent"):
        M.AutoEncoder(10, (4,), 0)
