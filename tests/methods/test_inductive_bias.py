"""Known-answer tests of the inductive-bias estimator (xattr_nb.methods.inductive_bias)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from xattr_nb.checks import InputError
from xattr_nb.methods import inductive_bias as IB

# --------------------------------------------------------------------------------------------
# Bits
# --------------------------------------------------------------------------------------------


def test_bits_closed_form_central_chi2_df2():
    # χ²₂ scaled by s has CDF 1 − exp(−x / 2s): I(ε) = −log2(1 − exp(−ε / 2s)), in bits, not nats
    s = 0.01
    eps = np.array([1e-4, 1e-3, 0.01, 0.1])
    want = -np.log2(1 - np.exp(-eps / (2 * s)))
    got = IB.inductive_bias_bits((2.0, 0.0, s), eps)
    np.testing.assert_allclose(got, want, rtol=1e-6)
    nats = -stats.chi2.logcdf(eps, 2, scale=s)
    np.testing.assert_allclose(got * math.log(2), nats, rtol=1e-6)  # nats = bits · ln 2


def test_bits_scalar_shape_and_monotone():
    b = IB.inductive_bias_bits((5.0, 3.0, 0.1), 0.2)
    assert np.ndim(b) == 0 and b > 0
    grid = IB.eps_grid(0.01, 10.0, 30)
    bits = IB.inductive_bias_bits((5.0, 3.0, 0.1), grid)
    assert np.all(np.diff(bits) <= 1e-12)  # more bits for a stricter error level


@pytest.mark.parametrize("params", [(30.0, 5.0, 1.0), (100.0, 20.0, 0.01), (500.0, 10.0, 0.002)])
def test_sankaran_agrees_with_scipy_where_both_finite(params):
    # the regime where the fallback is used (many degrees of freedom, far below the mean); at few
    # degrees of freedom deep in the tail the approximation is looser (7.5 % at df = 6, p = 1e-3)
    df, nc, s = params
    x = s * (df + nc) * np.array([0.9, 0.7, 0.5, 0.3])
    exact = stats.ncx2.logcdf(x, df, nc, scale=s)
    approx = IB.sankaran_logcdf(x, df, nc, s)
    np.testing.assert_allclose(approx, exact, rtol=0.05)


def test_sankaran_fallback_used_where_scipy_underflows():
    df, nc, s = 500.0, 10.0, 0.002
    eps = 0.01  # a hundredth of the mean: scipy's logcdf underflows to -inf here (at 0.02 it is -742 nats)
    assert not np.isfinite(stats.ncx2.logcdf(eps, df, nc, scale=s))
    bits = IB.inductive_bias_bits((df, nc, s), eps)
    assert np.isfinite(bits) and bits > 1000
    # and at a level where scipy is finite the two routes agree closely
    eps2 = 0.8
    np.testing.assert_allclose(
        IB.inductive_bias_bits((df, nc, s), eps2), -stats.ncx2.logcdf(eps2, df, nc, scale=s) / IB.LN2, rtol=1e-9
    )


# --------------------------------------------------------------------------------------------
# The fitter
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("params", [(3.0, 6.0, 0.002), (10.0, 30.0, 0.005)])
def test_fitter_recovers_known_parameters(params):
    df, nc, s = params
    e = stats.ncx2.rvs(df, nc, scale=s, size=5000, random_state=1)
    fit = IB.fit_scaled_ncx2(e)
    # df and nc trade off along a likelihood ridge; the mean s(df+nc), the scale and the tail are well identified
    assert fit.mean() == pytest.approx(s * (df + nc), rel=0.03)
    assert fit.scale == pytest.approx(s, rel=0.1)
    assert fit.df == pytest.approx(df, rel=0.25)
    assert fit.nc == pytest.approx(nc, rel=0.25)
    q = np.quantile(e, 0.01)
    assert IB.inductive_bias_bits(fit, q) == pytest.approx(-stats.ncx2.logcdf(q, df, nc, scale=s) / IB.LN2, abs=0.4)


def test_fitter_recovers_tiny_scale():
    # errors of order 1e-5 (a low-dimensional task's GP errors): the fit works in log-parameters
    df, nc, s = 2.4, 1.0, 2e-5
    e = stats.ncx2.rvs(df, nc, scale=s, size=3000, random_state=2)
    fit = IB.fit_scaled_ncx2(e)
    assert fit.mean() == pytest.approx(s * (df + nc), rel=0.05)
    assert fit.loglik >= IB.scipy_default_fit(e).loglik - 1e-6


def test_scipy_default_fit_degenerates_and_ours_does_not():
    # k = 1 task, seed 2: scipy's ncx2.fit(errors, floc=0) stops at df ≈ 0.18, scale ≈ 1.8
    task = IB.make_intrinsic_dim_task(1, seed=2)
    e = IB.gp_posterior_errors(
        task.X_train, task.Y_train, task.X_test, task.Y_test, IB.median_lengthscale(task.X_train), 4000, seed=2
    )
    ours, theirs = IB.fit_scaled_ncx2(e[:1000]), IB.scipy_default_fit(e[:1000])
    assert ours.loglik > theirs.loglik + 100  # scipy's answer is far from the maximum of the likelihood

    def ks(f):
        return stats.kstest(e[1000:], lambda x: stats.ncx2.cdf(x, f.df, f.nc, scale=f.scale)).statistic

    assert ks(theirs) > 0.3 and ks(ours) < 0.06  # on the 3000 held-out draws
    q = np.quantile(e, 0.01)  # truth: log2(100) = 6.64 bits
    assert abs(IB.inductive_bias_bits(ours, q) - math.log2(100)) < 1.5
    assert abs(IB.inductive_bias_bits(theirs, q) - math.log2(100)) > 3


def test_fitter_handles_tiny_nc_where_scipy_logpdf_is_minus_inf():
    e = stats.chi2.rvs(200, scale=0.001, size=2000, random_state=3)
    assert not np.isfinite(stats.ncx2.logpdf(e[:3], 200, 1e-6, scale=0.001)).any()  # scipy's quirk
    fit = IB.fit_scaled_ncx2(e)
    assert np.isfinite(fit.loglik) and fit.mean() == pytest.approx(0.2, rel=0.03)
    assert all(np.isfinite(ll) and ll > fit.loglik - 5 for ll in fit.starts)  # no start is lost to the quirk


# --------------------------------------------------------------------------------------------
# GP hypotheses
# --------------------------------------------------------------------------------------------


def _direct_posterior(Xtr, Ytr, Xte, ell, jitter):
    def k(a, b):
        return np.exp(-((a[:, None] - b[None]) ** 2).sum(-1) / (2 * ell**2))

    K = k(Xtr, Xtr) + jitter * np.eye(len(Xtr))
    Ks = k(Xte, Xtr)
    mu = Ks @ np.linalg.solve(K, Ytr)
    cov = k(Xte, Xte) - Ks @ np.linalg.solve(K, Ks.T)
    return mu, cov


def test_gp_posterior_matches_the_formula():
    rng = np.random.default_rng(0)
    Xtr, Xte = rng.standard_normal((30, 3)), rng.standard_normal((12, 3))
    Ytr = rng.standard_normal((30, 2))
    mu, cov = IB.gp_posterior(Xtr, Ytr, Xte, 1.3, jitter=1e-6)
    mu2, cov2 = _direct_posterior(Xtr, Ytr, Xte, 1.3, 1e-6)
    np.testing.assert_allclose(mu, mu2, atol=1e-6)
    np.testing.assert_allclose(cov, cov2, atol=1e-6)


def test_gp_errors_match_their_exact_mean_and_interpolate():
    rng = np.random.default_rng(1)
    Xtr, Xte = rng.standard_normal((40, 4)), rng.standard_normal((25, 4))
    Ytr, Yte = rng.standard_normal((40, 3)), rng.standard_normal((25, 3))
    lam, r = IB.gp_error_terms(Xtr, Ytr, Xte, Yte, 1.5)
    e = IB.sample_error_terms(lam, r, 20000, seed=0)
    mean_exact = ((r**2).sum() + r.shape[1] * lam.sum()) / r.size
    assert e.mean() == pytest.approx(mean_exact, rel=0.01)
    # at the training inputs the posterior interpolates: errors vanish up to the jitter
    e_train = IB.gp_posterior_errors(Xtr, Ytr, Xtr, Ytr, 1.5, n_samples=50, jitter=1e-8)
    assert e_train.max() < 1e-4
    # the same draws whatever the chunking
    np.testing.assert_allclose(
        IB.sample_error_terms(lam, r, 300, seed=5, chunk=300), IB.sample_error_terms(lam, r, 300, seed=5, chunk=300)
    )


def test_median_lengthscale():
    X = np.array([[0.0], [1.0], [3.0]])  # squared distances 1, 9, 4: median 4, ℓ² = 2
    assert IB.median_lengthscale(X) == pytest.approx(math.sqrt(2))


# --------------------------------------------------------------------------------------------
# Tasks and the dimension trend
# --------------------------------------------------------------------------------------------


def test_intrinsic_dim_task_lives_in_a_k_dim_subspace():
    t = IB.make_intrinsic_dim_task(3, D=10, n_train=50, n_test=20, seed=0)
    X = np.vstack([t.X_train, t.X_test])
    sv = np.linalg.svd(X, compute_uv=False)
    assert (sv > 1e-8 * sv[0]).sum() == 3
    assert t.Y_train.mean() == pytest.approx(0, abs=1e-9) and t.Y_train.std() == pytest.approx(1, rel=1e-9)
    t2 = IB.make_intrinsic_dim_task(3, D=10, n_train=50, n_test=20, seed=0)
    np.testing.assert_array_equal(t.X_test, t2.X_test)


def test_more_bits_for_higher_intrinsic_dimension_tiny_case():
    eps = IB.eps_grid(0.01, 0.5, 8)
    study = IB.dimension_study((1, 6), (0,), eps, n_samples=600, n_fit=600, n_train=60, n_test=60)
    e1, e6 = study[(1, 0)], study[(6, 0)]
    assert e6.errors.mean() > 5 * e1.errors.mean()
    assert IB.monotone_margin({1: e1.bits, 6: e6.bits}) >= 0
    assert e6.bits[0] > e1.bits[0] + 5


def test_monotone_margin():
    assert IB.monotone_margin({1: np.array([0.0, 1.0]), 2: np.array([0.5, 3.0])}) == pytest.approx(0.5)
    assert IB.monotone_margin({1: np.array([0.0, 1.0]), 2: np.array([0.5, 0.2])}) == pytest.approx(-0.8)


def test_tail_validation_known_levels():
    t = IB.make_intrinsic_dim_task(4, seed=0)
    v = IB.tail_validation(t, n_samples=2000, n_fit=1000, n_truth=20000, levels=(0.01, 1e-3), seed=0)
    np.testing.assert_allclose(v["truth"], [math.log2(100), math.log2(1000)])
    assert np.all(np.abs(v["bits"]["ncx2"] - v["truth"]) < 2.0)


# --------------------------------------------------------------------------------------------
# Neural-network hypotheses, real data, the full-scale loader
# --------------------------------------------------------------------------------------------


def test_batched_mlps_equal_separate_training():
    import torch

    rng = np.random.default_rng(0)
    X, Y = rng.standard_normal((20, 5)), rng.standard_normal((20, 2))
    both = IB.nn_hypothesis_errors((X, Y), (X, Y), width=8, depth=1, n_trials=2, steps=30, lr=1e-2, seed=3)
    # replay network 1 alone with the same initial weights and plain nn.Linear + Adam
    g = torch.Generator().manual_seed(3)
    W1 = (torch.rand(2, 5, 8, generator=g) * 2 - 1) / math.sqrt(5)
    b1 = (torch.rand(2, 1, 8, generator=g) * 2 - 1) / math.sqrt(5)
    W2 = (torch.rand(2, 8, 2, generator=g) * 2 - 1) / math.sqrt(8)
    b2 = (torch.rand(2, 1, 2, generator=g) * 2 - 1) / math.sqrt(8)
    net = torch.nn.Sequential(torch.nn.Linear(5, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    with torch.no_grad():
        (
            net[0].weight.copy_(W1[1].T),
            net[0].bias.copy_(b1[1, 0]),
            net[2].weight.copy_(W2[1].T),
            net[2].bias.copy_(b2[1, 0]),
        )
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    x, y = torch.as_tensor(X, dtype=torch.float32), torch.as_tensor(Y, dtype=torch.float32)
    for _ in range(30):
        opt.zero_grad()
        ((net(x) - y) ** 2).mean().backward()
        opt.step()
    with torch.no_grad():
        alone = float(((net(x) - y) ** 2).mean())
    assert both[1] == pytest.approx(alone, rel=1e-4)
    assert both[0] != pytest.approx(both[1], rel=1e-3)


def test_digits_task_and_explain_nn():
    t = IB.load_digits_task(60, 40, seed=0)
    assert t.X_train.shape == (60, 64) and t.Y_train.shape == (60, 10)
    np.testing.assert_allclose(t.Y_test.sum(1), 1.0)
    est = IB.explain(t, [0.05, 0.08], space="nn", n_trials=12, steps=40, width=16)
    assert est.errors.shape == (12,) and est.bits.shape == (2,) and est.bits[0] >= est.bits[1]


def test_full_scale_loader_on_a_folder_of_pngs(tmp_path):
    from PIL import Image

    from xattr_nb.worlds.digits import load_digit_images

    images, labels = load_digit_images()
    for c in range(3):
        (tmp_path / f"class{c}").mkdir()
        for i, idx in enumerate(np.flatnonzero(labels.numpy() == c)[:10]):
            Image.fromarray((images[idx, 0].numpy() * 255).astype(np.uint8)).save(tmp_path / f"class{c}" / f"{i}.png")
    t = IB.load_flat_images(tmp_path, n_train=20, n_test=10, size=8, seed=0)
    assert t.X_train.shape == (20, 64) and t.Y_train.shape == (20, 3)  # grey PNGs: one channel kept
    est = IB.explain(t, 0.5, lengthscale=1.0, n_samples=200)  # the paper's bandwidth
    assert est.errors.shape == (200,) and np.isfinite(est.bits).all()


# --------------------------------------------------------------------------------------------
# Bad inputs
# --------------------------------------------------------------------------------------------


def test_bad_inputs_name_the_argument():
    with pytest.raises(InputError, match="`k`"):
        IB.make_intrinsic_dim_task(20, D=16)
    with pytest.raises(InputError, match="`errors`"):
        IB.fit_scaled_ncx2([0.1, -0.2] * 10)
    with pytest.raises(InputError, match="`errors`"):
        IB.fit_scaled_ncx2([0.1, 0.2])
    with pytest.raises(InputError, match="`eps`"):
        IB.inductive_bias_bits((2.0, 1.0, 0.1), -1.0)
    with pytest.raises(InputError, match="`Y_train`"):
        IB.gp_posterior(np.zeros((5, 2)), np.zeros((4, 1)), np.zeros((3, 2)), 1.0)
    with pytest.raises(InputError, match="`lengthscale`"):
        IB.gp_posterior(np.zeros((5, 2)), np.zeros((5, 1)), np.zeros((3, 2)), 0.0)
    with pytest.raises(InputError, match="`space`"):
        IB.explain(IB.make_intrinsic_dim_task(2), 0.1, space="svm")
    with pytest.raises(InputError, match="`n_trials`"):
        IB.nn_hypothesis_errors((np.zeros((4, 2)), np.zeros((4, 1))), (np.zeros((4, 2)), np.zeros((4, 1))), n_trials=0)
    with pytest.raises(InputError, match="`root`"):
        IB.load_flat_images("/nonexistent/folder", n_train=2, n_test=1)
