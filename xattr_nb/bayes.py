"""Gaussian-mixture scores and Stein variational gradient descent (SVGD), reusable by any paper.

- :func:`fit_gmm`: scikit-learn's ``GaussianMixture`` (full covariance, ``reg_covar`` added to the
  diagonal), checked and seeded.
- :func:`gmm_score_fn`: the closed-form score of a fitted mixture,
  ``∇_x log p(x) = Σ_k γ_k(x) · (−Σ_k⁻¹ (x − μ_k))`` with responsibilities
  ``γ_k(x) = π_k N(x; μ_k, Σ_k) / p(x)``, as a torch function of a batch ``[n, d]``. Written by hand:
  scikit-learn gives log-densities and responsibilities but no gradient.
- :func:`svgd`: SVGD (Liu & Wang 2016) as BayesPrompt's official code runs it: RBF kernel with the
  median-heuristic bandwidth ``h² = med(‖θ_i − θ_j‖²) / (2 log(n + 1))``, the update direction
  ``φ*(θ_i) = (1/n) Σ_j [k(θ_j, θ_i) ∇ log p(θ_j) + ∇_{θ_j} k(θ_j, θ_i)]`` and the step
  ``θ ← θ + ε φ* / (1e-6 + √G)``, ``G ← α G + (1 − α) φ*²`` (``G = φ*²`` at the first iteration).
  ``optimizer="sgd"`` takes the plain step ``θ ← θ + ε φ*`` instead. Written by hand: no maintained
  library ships SVGD for torch tensors.

This layer sits beside :mod:`xattr_nb.training` (it imports only :mod:`xattr_nb.checks`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from xattr_nb.checks import InputError, check_choice, check_float, check_int, check_tensor

__all__ = ["fit_gmm", "gmm_score_fn", "median_bandwidth", "svgd"]


def fit_gmm(
    X: Any, k: int, *, reg_covar: float = 0.1, seed: int = 0, max_iter: int = 100, init_params: str = "k-means++"
) -> Any:
    """Fit ``GaussianMixture(k, covariance_type="full", reg_covar=reg_covar)`` to ``X`` ``[n, d]``.

    ``init_params="k-means++"`` seeds the components by k-means++ (sklearn's default, a full k-means,
    costs more and changes little when ``reg_covar`` dominates the covariances, as at 0.1 on sentence
    embeddings). ``X`` is a numpy array or a torch tensor (float, finite, at least ``k`` rows). Returns the fitted
    scikit-learn estimator (``weights_``, ``means_``, ``covariances_``, ``precisions_cholesky_``).
    """
    from sklearn.mixture import GaussianMixture

    x = check_tensor(X, "X", ndim=2, dtype="float", layout="[n, d]")
    k = check_int(k, "k", low=1, high=int(x.shape[0]))
    reg_covar = check_float(reg_covar, "reg_covar", low=0.0)
    seed = check_int(seed, "seed", low=0, high=2**32 - 1)
    max_iter = check_int(max_iter, "max_iter", low=1)
    check_choice(init_params, ("kmeans", "k-means++", "random", "random_from_data"), "init_params")
    gmm = GaussianMixture(
        n_components=k,
        covariance_type="full",
        reg_covar=reg_covar,
        random_state=seed,
        max_iter=max_iter,
        init_params=init_params,
    )
    return gmm.fit(x.detach().cpu().numpy())


def _gmm_params(gmm: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    for attr in ("weights_", "means_", "precisions_cholesky_"):
        if not hasattr(gmm, attr):
            raise InputError(
                f"`gmm` must be a fitted sklearn GaussianMixture (missing `{attr}`); call fit_gmm(...) first"
            )
    if getattr(gmm, "covariance_type", "full") != "full":
        raise InputError(f"`gmm` must use covariance_type='full'; got {gmm.covariance_type!r}")
    return np.asarray(gmm.weights_), np.asarray(gmm.means_), np.asarray(gmm.precisions_cholesky_)


def gmm_score_fn(gmm: Any) -> Callable[[torch.Tensor], torch.Tensor]:
    """The score ``x ↦ ∇_x log p(x)`` of a fitted full-covariance ``GaussianMixture``, in closed form.

    The returned function maps ``[n, d]`` to ``[n, d]`` (same dtype and device as its input; the
    computation runs in the input's precision, float32 or float64). With ``P_k = Σ_k⁻¹ = L_k L_kᵀ`` (scikit-learn's
    ``precisions_cholesky_``), ``log N(x; μ_k, Σ_k) = Σ log diag L_k − ½‖L_kᵀ(x − μ_k)‖² − (d/2) log 2π``
    and ``∇ log p(x) = −Σ_k γ_k(x) P_k (x − μ_k)``.
    """
    w, mu, chol = _gmm_params(gmm)
    log_w = torch.as_tensor(np.log(w), dtype=torch.float64)
    means = torch.as_tensor(mu, dtype=torch.float64)  # [K, d]
    L = torch.as_tensor(chol, dtype=torch.float64)  # [K, d, d], precision = L Lᵀ
    d = means.shape[1]
    log_det = torch.log(torch.diagonal(L, dim1=-2, dim2=-1)).sum(-1)  # ½ log det P_k
    const = -0.5 * d * math.log(2 * math.pi)
    params = (log_w, means, L, log_det)  # float64; cast to the input's float dtype per call

    def score(x: torch.Tensor) -> torch.Tensor:
        x_in = check_tensor(x, "x", shape=(None, d), dtype="float", layout="[n, d]")
        dt = x_in.dtype if x_in.dtype in (torch.float32, torch.float64) else torch.float32
        xd = x_in.detach().to("cpu", dt)
        log_w, means, L, log_det = (t.to(dt) for t in params)
        diff = xd[None, :, :] - means[:, None, :]  # [K, n, d]
        z = torch.bmm(diff, L)  # rows (x − μ_k)ᵀ L_k, i.e. L_kᵀ (x − μ_k)
        log_n = (log_det[:, None] - 0.5 * (z**2).sum(-1) + const).T  # [n, K]
        gamma = torch.softmax(log_w[None] + log_n, dim=1)  # responsibilities
        pz = torch.bmm(z, L.transpose(-1, -2))  # P_k (x − μ_k) = L_k L_kᵀ (x − μ_k), as rows [K, n, d]
        grad = -(gamma.T[:, :, None] * pz).sum(0)
        return grad.to(x_in.device, x_in.dtype)

    return score


def median_bandwidth(sq_dists: torch.Tensor) -> torch.Tensor:
    """BayesPrompt's (and the reference SVGD code's) bandwidth ``h² = med(‖θ_i − θ_j‖²) / (2 log(n + 1))``.

    The median runs over all ``n²`` entries (diagonal zeros included, as in the reference code); a
    zero median (one particle, or all equal) gives ``h² = 1``.
    """
    n = sq_dists.shape[0]
    med = torch.median(sq_dists.flatten())
    h2 = med / (2 * math.log(n + 1))
    return torch.where(h2 > 0, h2, torch.ones_like(h2))


def svgd(
    x0: Any,
    score_fn: Callable[[torch.Tensor], torch.Tensor],
    *,
    n_iter: int = 1000,
    step: float = 0.01,
    alpha: float = 0.9,
    bandwidth: str | float = "median",
    optimizer: str = "adagrad",
    trace_every: int = 0,
) -> torch.Tensor | tuple[torch.Tensor, list[torch.Tensor]]:
    """Transport the particles ``x0`` ``[n, d]`` towards the density whose score is ``score_fn``.

    Kernel ``k(a, b) = exp(−‖a − b‖² / (2h²))``; ``bandwidth="median"`` recomputes ``h²`` each iteration
    by :func:`median_bandwidth`, a positive number fixes ``h²``. ``optimizer="adagrad"`` is the
    official step (AdaGrad with momentum ``alpha``), ``"sgd"`` the plain ``θ + ε φ*``. With one
    particle the kernel term is 1 and its gradient 0, so SVGD is gradient ascent on ``log p``.
    Returns the transported particles (float, detached), and with ``trace_every > 0`` also the list
    of snapshots every ``trace_every`` iterations (the first is ``x0``).
    """
    x = check_tensor(x0, "x0", ndim=2, dtype="float", layout="[n, d]").detach().clone()
    if not callable(score_fn):
        raise InputError(f"`score_fn` must be callable (e.g. gmm_score_fn(gmm)); got {type(score_fn).__name__}")
    n_iter = check_int(n_iter, "n_iter", low=0)
    step = check_float(step, "step", low=0.0)
    alpha = check_float(alpha, "alpha", low=0.0, high=1.0)
    optimizer = check_choice(optimizer, ("adagrad", "sgd"), "optimizer")
    trace_every = check_int(trace_every, "trace_every", low=0)
    if isinstance(bandwidth, str):
        check_choice(bandwidth, ("median",), "bandwidth")
        fixed_h2 = None
    else:
        fixed_h2 = check_float(bandwidth, "bandwidth", low=0.0)
        if fixed_h2 <= 0:
            raise InputError(f"`bandwidth` must be 'median' or a positive h²; got {bandwidth!r}")
    n = x.shape[0]
    hist = torch.zeros_like(x)
    trace = [x.clone()] if trace_every else []
    for it in range(n_iter):
        grad = score_fn(x)
        if not isinstance(grad, torch.Tensor) or grad.shape != x.shape:
            raise InputError(
                f"`score_fn` must return a tensor of shape {tuple(x.shape)}; got {getattr(grad, 'shape', grad)}"
            )
        diff = x[:, None, :] - x[None, :, :]  # [i, j, d] = θ_i − θ_j
        sq = (diff**2).sum(-1)
        h2 = median_bandwidth(sq) if fixed_h2 is None else torch.tensor(fixed_h2, dtype=x.dtype)
        kxy = torch.exp(-sq / (2 * h2))  # symmetric
        # Σ_j ∇_{θ_j} k(θ_j, θ_i) = Σ_j k_ij (θ_i − θ_j) / h²
        repulse = (kxy[:, :, None] * diff).sum(1) / h2
        phi = (kxy @ grad + repulse) / n
        if optimizer == "sgd":
            x = x + step * phi
        else:
            hist = phi**2 if it == 0 else alpha * hist + (1 - alpha) * phi**2
            x = x + step * phi / (1e-6 + hist.sqrt())
        if trace_every and (it + 1) % trace_every == 0:
            trace.append(x.clone())
    return (x, trace) if trace_every else x
