"""xattr_nb.bayes: the GMM score in closed form and SVGD, against analytic answers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from xattr_nb.bayes import fit_gmm, gmm_score_fn, median_bandwidth, svgd
from xattr_nb.checks import InputError


def _data(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.concatenate(
        [rng.normal([0, 0, 0], [0.5, 1.0, 0.3], (150, 3)), rng.normal([2, -1, 1], [0.8, 0.4, 0.6], (100, 3))]
    )


def test_one_component_score_is_the_gradient_of_log_normal():
    X = _data()
    gmm = fit_gmm(X, 1, reg_covar=1e-3)
    mu, cov = gmm.means_[0], gmm.covariances_[0]
    x = torch.tensor(np.random.default_rng(1).normal(size=(5, 3)))
    expected = -(x.numpy() - mu) @ np.linalg.inv(cov)  # ∇ log N(x; μ, Σ) = −Σ⁻¹(x − μ), Σ symmetric
    got = gmm_score_fn(gmm)(x).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-8, atol=1e-10)
    # and the covariance really is the sample covariance plus reg_covar on the diagonal
    np.testing.assert_allclose(cov, np.cov(X.T, bias=True) + 1e-3 * np.eye(3), rtol=1e-6)


def test_mixture_score_matches_finite_differences_of_sklearn_log_density():
    gmm = fit_gmm(_data(), 2, reg_covar=1e-3, seed=0)
    x = np.random.default_rng(2).normal(size=(4, 3)) + np.array([1.0, -0.5, 0.5])
    got = gmm_score_fn(gmm)(torch.tensor(x)).numpy()
    eps = 1e-5
    fd = np.zeros_like(x)
    for j in range(3):
        e = np.zeros(3)
        e[j] = eps
        fd[:, j] = (gmm.score_samples(x + e) - gmm.score_samples(x - e)) / (2 * eps)
    np.testing.assert_allclose(got, fd, rtol=1e-5, atol=1e-6)
    # the two components both matter at these points (not a one-component case in disguise)
    resp = gmm.predict_proba(x)
    assert (resp.min(1) > 1e-3).any()


def test_score_keeps_float32_input_precision():
    gmm = fit_gmm(_data(), 2, reg_covar=1e-3)
    x = torch.zeros(2, 3)
    out = gmm_score_fn(gmm)(x)
    assert out.dtype == torch.float32 and out.shape == (2, 3)


def test_svgd_with_one_particle_is_gradient_ascent():
    score = lambda x: -(x - 3.0)  # noqa: E731  log N(3, 1)
    x0 = torch.tensor([[0.5, -1.0]], dtype=torch.float64)
    got = svgd(x0, score, n_iter=25, step=0.1, optimizer="sgd")
    x = x0.clone()
    for _ in range(25):
        x = x + 0.1 * score(x)
    torch.testing.assert_close(got, x)
    # the official AdaGrad-with-momentum step, written out by hand
    got = svgd(x0, score, n_iter=25, step=0.1, alpha=0.9)
    x, hist = x0.clone(), None
    for it in range(25):
        g = score(x)
        hist = g**2 if it == 0 else 0.9 * hist + 0.1 * g**2
        x = x + 0.1 * g / (1e-6 + hist.sqrt())
    torch.testing.assert_close(got, x)


def test_svgd_on_a_standard_normal_recovers_mean_and_variance():
    # 200 particles started far off (mean 2, sd 0.3); tolerance: |mean| < 0.05, variance within 0.15 of 1
    x0 = torch.randn(200, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 0.3 + 2.0
    x = svgd(x0, lambda x: -x, n_iter=1000, step=0.01)
    assert x.mean(0).abs().max() < 0.05
    assert (x.var(0) - 1.0).abs().max() < 0.15


def test_svgd_repulsion_keeps_particles_apart():
    # without the kernel-gradient term every particle would collapse onto the mode
    x0 = torch.randn(50, 1, generator=torch.Generator().manual_seed(1), dtype=torch.float64) * 0.01
    x = svgd(x0, lambda x: -x, n_iter=500, step=0.01)
    assert x.std() > 0.5


def test_median_bandwidth_known_value_and_zero_fallback():
    sq = torch.tensor([[0.0, 4.0], [4.0, 0.0]])
    torch.testing.assert_close(median_bandwidth(sq), torch.tensor(0.0 + 1.0))  # median 0 → h² = 1
    sq = torch.tensor([[0.0, 4.0, 4.0], [4.0, 0.0, 4.0], [4.0, 4.0, 0.0]])
    torch.testing.assert_close(median_bandwidth(sq), torch.tensor(4.0 / (2 * np.log(4.0)), dtype=torch.float32))


def test_trace_snapshots():
    x0 = torch.zeros(3, 2, dtype=torch.float64) + torch.arange(3.0, dtype=torch.float64)[:, None]
    x, trace = svgd(x0, lambda x: -x, n_iter=10, trace_every=5)
    assert len(trace) == 3 and torch.equal(trace[0], x0) and torch.equal(trace[-1], x)


@pytest.mark.parametrize(
    ("call", "name"),
    [
        (lambda: fit_gmm(np.zeros((3, 2)), 5), "k"),
        (lambda: fit_gmm(np.zeros(4), 1), "X"),
        (lambda: fit_gmm(np.ones((10, 2)), 1, reg_covar=-1.0), "reg_covar"),
        (lambda: gmm_score_fn(object()), "gmm"),
        (lambda: gmm_score_fn(fit_gmm(_data(), 1))(torch.zeros(2, 5)), "x"),
        (lambda: svgd(torch.zeros(3), lambda x: x), "x0"),
        (lambda: svgd(torch.zeros(3, 2), "not callable"), "score_fn"),
        (lambda: svgd(torch.zeros(3, 2), lambda x: x, step=-1.0), "step"),
        (lambda: svgd(torch.zeros(3, 2), lambda x: x, optimizer="adam"), "optimizer"),
        (lambda: svgd(torch.zeros(3, 2), lambda x: x, bandwidth="mean"), "bandwidth"),
        (lambda: svgd(torch.zeros(3, 2), lambda x: x[:1], n_iter=1), "score_fn"),
    ],
)
def test_bad_input_names_the_argument(call, name):
    with pytest.raises(InputError, match=f"`{name}`"):
        call()
