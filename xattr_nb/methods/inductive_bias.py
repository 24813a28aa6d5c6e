"""Towards Exact Computation of Inductive Bias (Boopathy, Yue, Hwang, Iyer, Fiete; IJCAI 2024).

The required inductive bias of a task at error level ``ε``, relative to a hypothesis space, is
``I(ε) = −log₂ P_{h ~ p_H}(e(h) ≤ ε)``: the bits a designer must supply, beyond the training data,
to land on a hypothesis that generalises to test error ``≤ ε``. The estimator samples hypotheses
that fit the training data, records their test errors, fits a **scaled non-central χ²** to those
errors and reads off its lower tail at ``ε``, usually far below every sample.

Steps (each a small function; :func:`explain` chains them):

- :func:`make_intrinsic_dim_task`: the task family whose intrinsic dimension ``k`` is a knob;
- :func:`median_lengthscale`, :func:`gp_posterior`, :func:`gp_posterior_errors`: hypotheses drawn
  from the posterior of a Gaussian process with an RBF kernel that interpolates the training
  data (scikit-learn's ``GaussianProcessRegressor`` computes the posterior);
- :func:`nn_hypothesis_errors`: the neural-network hypothesis space, MLPs trained from
  independent initialisations (the space is the training procedure, not the architecture);
- :func:`fit_scaled_ncx2`: a moment-matched, multi-start Nelder–Mead maximum-likelihood fit of
  ``(df, nc, scale)``; scipy's default ``ncx2.fit`` (the official code's) silently degenerates;
- :func:`inductive_bias_bits`: ``−log₂ F(ε)`` from scipy's ``ncx2.logcdf``, with a Sankaran normal
  approximation where scipy underflows.

The official code returns nats; everything here is in **bits** (:data:`LN2`).
"""

from __future__ import annotations

import itertools
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import optimize, stats

from xattr_nb.checks import InputError, check_float, check_int

__all__ = [
    "LN2",
    "IBEstimate",
    "IDTask",
    "NcxFit",
    "dimension_study",
    "eps_grid",
    "explain",
    "fit_scaled_ncx2",
    "gp_error_terms",
    "gp_posterior",
    "gp_posterior_errors",
    "inductive_bias_bits",
    "load_digits_task",
    "load_flat_images",
    "make_intrinsic_dim_task",
    "median_lengthscale",
    "monotone_margin",
    "nn_hypothesis_errors",
    "sample_error_terms",
    "sankaran_logcdf",
    "scipy_default_fit",
    "tail_validation",
]

LN2 = math.log(2.0)


# --------------------------------------------------------------------------------------------
# Input checks
# --------------------------------------------------------------------------------------------


def _matrix(x: Any, name: str, *, ndim: tuple[int, ...] = (2,)) -> np.ndarray:
    try:
        a = np.asarray(x.detach().cpu().numpy() if hasattr(x, "detach") else x, dtype=float)
    except (TypeError, ValueError) as exc:
        raise InputError(f"`{name}` must be a numeric array; got {type(x).__name__}") from exc
    if a.ndim not in ndim:
        raise InputError(f"`{name}` must have {' or '.join(map(str, ndim))} dimensions; got shape {a.shape}")
    if a.size == 0:
        raise InputError(f"`{name}` is empty")
    if not np.all(np.isfinite(a)):
        raise InputError(f"`{name}` holds NaN or inf values")
    return a


def _errors(errors: Any, name: str = "errors") -> np.ndarray:
    e = _matrix(errors, name, ndim=(1,))
    if e.size < 10:
        raise InputError(f"`{name}` needs at least 10 sampled errors to fit a distribution; got {e.size}")
    if np.any(e <= 0):
        raise InputError(f"`{name}` must be positive test errors (MSE); got min {e.min():g}")
    return e


def _xy(X: Any, Y: Any, xname: str, yname: str) -> tuple[np.ndarray, np.ndarray]:
    x = _matrix(X, xname)
    y = _matrix(Y, yname, ndim=(1, 2))
    if y.ndim == 1:
        y = y[:, None]
    if y.shape[0] != x.shape[0]:
        raise InputError(f"`{yname}` has {y.shape[0]} rows but `{xname}` has {x.shape[0]}")
    return x, y


# --------------------------------------------------------------------------------------------
# Tasks
# --------------------------------------------------------------------------------------------


@dataclass
class IDTask:
    """A regression task: ``X_train [n, D]``, ``Y_train [n, C]``, ``X_test [m, D]``, ``Y_test [m, C]``.

    ``k`` is the intrinsic dimension (``None`` for real data); ``name`` says what it is.
    """

    X_train: np.ndarray
    Y_train: np.ndarray
    X_test: np.ndarray
    Y_test: np.ndarray
    k: int | None = None
    name: str = ""


def make_intrinsic_dim_task(
    k: int, D: int = 16, n_train: int = 100, n_test: int = 200, seed: int = 0, shuffle_labels: bool = False
) -> IDTask:
    """The intrinsic-dimension task family of the spec [recon].

    ``z ~ N(0, I_k)`` is embedded in ``R^D`` by a random orthonormal map ``Q`` (``x = Q z``, so the
    inputs span a ``k``-dimensional subspace of a fixed ambient space); the target is
    ``y = Σ_j sin(2 z_j) / √k``, standardised with the training mean and sd. Only ``k`` changes
    along the family: the ambient dimension, the sample sizes and the target's variance are fixed.
    ``shuffle_labels=True`` permutes the targets among the inputs (train and test separately),
    the no-structure control.
    """
    k = check_int(k, "k", low=1)
    D = check_int(D, "D", low=1)
    if k > D:
        raise InputError(f"`k` (intrinsic dimension) must be <= `D` (ambient dimension); got k={k}, D={D}")
    n_train = check_int(n_train, "n_train", low=2)
    n_test = check_int(n_test, "n_test", low=1)
    seed = check_int(seed, "seed", low=0)
    rng = np.random.default_rng(seed)
    Q, _ = np.linalg.qr(rng.standard_normal((D, k)))
    z = rng.standard_normal((n_train + n_test, k))
    y = np.sin(2 * z).sum(1) / math.sqrt(k)
    if shuffle_labels:
        y = np.concatenate([rng.permutation(y[:n_train]), rng.permutation(y[n_train:])])
    mu, sd = y[:n_train].mean(), y[:n_train].std()
    y = ((y - mu) / sd)[:, None]
    X = z @ Q.T
    name = f"intrinsic dim {k} in R^{D}" + (" (shuffled labels)" if shuffle_labels else "")
    return IDTask(X[:n_train], y[:n_train], X[n_train:], y[n_train:], k, name)


def _one_hot_split(X: np.ndarray, y: np.ndarray, n_train: int, n_test: int, seed: int, name: str) -> IDTask:
    n_classes = int(y.max()) + 1
    if n_train + n_test > len(y):
        raise InputError(f"`n_train + n_test` must be <= {len(y)} examples; got {n_train + n_test}")
    idx = np.random.default_rng(seed).permutation(len(y))
    tr, te = idx[:n_train], idx[n_train : n_train + n_test]
    mu, sd = X[tr].mean(0), X[tr].std(0)
    sd[sd == 0] = 1.0
    Xs = (X - mu) / sd
    Y = np.eye(n_classes)[y]
    return IDTask(Xs[tr], Y[tr], Xs[te], Y[te], None, name)


def load_digits_task(n_train: int = 200, n_test: int = 300, seed: int = 0) -> IDTask:
    """scikit-learn's bundled 8×8 digits (64 features), standardised on the training split,
    one-hot targets: the spec's real-data task."""
    from sklearn.datasets import load_digits

    n_train = check_int(n_train, "n_train", low=2)
    n_test = check_int(n_test, "n_test", low=1)
    seed = check_int(seed, "seed", low=0)
    d = load_digits()
    return _one_hot_split(d.data.astype(float), d.target, n_train, n_test, seed, "sklearn digits")


def load_flat_images(root: str | os.PathLike, *, n_train: int, n_test: int, size: int = 28, seed: int = 0) -> IDTask:
    """``scale="full"``: an ``ImageFolder`` tree (``root/<class>/<image>``: MNIST or CIFAR-10
    exported as PNGs) read by :func:`xattr_nb.worlds.folders.load_image_folder`, flattened (one
    channel when the images are grey, as MNIST's), standardised on the training split, one-hot
    targets."""
    from xattr_nb.worlds.folders import load_image_folder

    n_train = check_int(n_train, "n_train", low=2)
    n_test = check_int(n_test, "n_test", low=1)
    size = check_int(size, "size", low=4)
    images, labels, classes = load_image_folder(root, size=size, seed=seed)
    if images.shape[1] == 3 and bool((images[:, :1] == images[:, 1:]).all()):
        images = images[:, :1]
    X = images.flatten(1).double().numpy()
    return _one_hot_split(X, labels.numpy(), n_train, n_test, seed, f"{root} ({len(classes)} classes)")


# --------------------------------------------------------------------------------------------
# Gaussian-process hypotheses
# --------------------------------------------------------------------------------------------


def median_lengthscale(X: Any) -> float:
    """The median heuristic: ``ℓ² = median of the pairwise squared distances / 2``."""
    from scipy.spatial.distance import pdist

    x = _matrix(X, "X")
    if x.shape[0] < 2:
        raise InputError("`X` needs at least 2 rows for pairwise distances")
    d2 = pdist(x, "sqeuclidean")
    med = float(np.median(d2))
    if med <= 0:
        raise InputError("`X` has a zero median pairwise distance; the median heuristic is undefined")
    return math.sqrt(med / 2)


def gp_posterior(
    X_train: Any, Y_train: Any, X_test: Any, lengthscale: float, jitter: float = 1e-6
) -> tuple[np.ndarray, np.ndarray]:
    """Posterior mean ``[m, C]`` and covariance ``[m, m]`` at ``X_test`` of a zero-mean GP with an
    RBF kernel (``k(x, x') = exp(−‖x − x'‖² / 2ℓ²)``, prior variance 1) conditioned to
    interpolate ``(X_train, Y_train)``: ``μ = K_*X K⁻¹ Y``, ``Σ = K_** − K_*X K⁻¹ K_X*``.

    scikit-learn's ``GaussianProcessRegressor`` (exact Cholesky, ``alpha = jitter`` on the training
    diagonal, the bandwidth fixed: no hyper-parameter optimisation) computes both; the covariance
    is shared by the ``C`` outputs (one kernel). The official code instead learns ``K⁻¹Y`` by Adam,
    which may not converge.
    """
    from sklearn.gaussian_process import GaussianProcessRegressor
    from sklearn.gaussian_process.kernels import RBF

    x, y = _xy(X_train, Y_train, "X_train", "Y_train")
    xt = _matrix(X_test, "X_test")
    if xt.shape[1] != x.shape[1]:
        raise InputError(f"`X_test` has {xt.shape[1]} features but `X_train` has {x.shape[1]}")
    ell = check_float(lengthscale, "lengthscale", low=1e-12)
    jitter = check_float(jitter, "jitter", low=0.0)
    gp = GaussianProcessRegressor(RBF(ell, length_scale_bounds="fixed"), alpha=jitter, optimizer=None)
    gp.fit(x, y)
    mean, cov = gp.predict(xt, return_cov=True)
    mean = np.asarray(mean).reshape(xt.shape[0], -1)
    if cov.ndim == 3:  # sklearn repeats the shared covariance per output
        cov = cov[..., 0]
    return mean, 0.5 * (cov + cov.T)


def gp_posterior_errors(
    X_train: Any,
    Y_train: Any,
    X_test: Any,
    Y_test: Any,
    lengthscale: float,
    n_samples: int = 4000,
    jitter: float = 1e-6,
    seed: int = 0,
    chunk: int = 500,
) -> np.ndarray:
    """Test MSEs of ``n_samples`` functions drawn from the GP posterior: ``e_s = mean over test
    points and outputs of (μ + Σ^{1/2} ξ_s − Y)²`` with ``ξ_s ~ N(0, I)`` (``jitter`` on ``Σ``'s diagonal).

    Written by hand rather than with ``GaussianProcessRegressor.sample_y``: one eigendecomposition
    of ``Σ`` (:func:`gp_error_terms`) serves every output and every draw, so a draw costs ``O(mC)``
    instead of ``O(m²C)``, the draws ``ξ`` are fixed by ``seed``, and memory stays bounded
    (``chunk`` draws at a time). The law is exact: the MSE of ``f = μ + Σ^{1/2} ξ``.
    """
    w, r = gp_error_terms(X_train, Y_train, X_test, Y_test, lengthscale, jitter)
    return sample_error_terms(w, r, n_samples, seed=seed, chunk=chunk)


def gp_error_terms(
    X_train: Any, Y_train: Any, X_test: Any, Y_test: Any, lengthscale: float, jitter: float = 1e-6
) -> tuple[np.ndarray, np.ndarray]:
    """The exact law of a posterior sample's test MSE, a generalised χ².

    With ``Σ = U diag(λ) Uᵀ`` and ``f_c = μ_c + U √λ ξ_c``, ``e = (1/mC) Σ_c ‖μ_c − y_c + U √λ ξ_c‖²
    = (1/mC) Σ_{i,c} (r_ic + √λ_i ξ_ic)²`` with ``r = Uᵀ(μ − Y)`` (``U`` is orthogonal). Returns
    ``(λ [m] clipped at 0, r [m, C])``; its mean is ``(‖r‖² + C Σλ) / mC``."""
    _, y = _xy(X_train, Y_train, "X_train", "Y_train")
    _, yt = _xy(X_test, Y_test, "X_test", "Y_test")
    if yt.shape[1] != y.shape[1]:
        raise InputError(f"`Y_test` has {yt.shape[1]} outputs but `Y_train` has {y.shape[1]}")
    mean, cov = gp_posterior(X_train, Y_train, X_test, lengthscale, jitter)
    lam, U = np.linalg.eigh(cov + jitter * np.eye(cov.shape[0]))
    return np.clip(lam, 0.0, None), U.T @ (mean - yt)


def sample_error_terms(lam: Any, r: Any, n_samples: int, seed: int = 0, chunk: int = 500) -> np.ndarray:
    """``n_samples`` draws of ``e = (1/mC) Σ_{i,c} (r_ic + √λ_i ξ_ic)²`` (:func:`gp_error_terms`),
    ``ξ ~ N(0, I)`` fixed by ``seed``, ``chunk`` draws at a time."""
    lam = _matrix(lam, "lam", ndim=(1,))
    r = _matrix(r, "r", ndim=(2,))
    if r.shape[0] != lam.shape[0] or np.any(lam < 0):
        raise InputError(f"`lam` must be {r.shape[0]} non-negative eigenvalues (rows of `r`); got {lam.shape}")
    n_samples = check_int(n_samples, "n_samples", low=1)
    chunk = check_int(chunk, "chunk", low=1)
    rng = np.random.default_rng(check_int(seed, "seed", low=0))
    sq = np.sqrt(lam)[:, None]
    out = np.empty(n_samples)
    for a in range(0, n_samples, chunk):
        b = min(a + chunk, n_samples)
        xi = rng.standard_normal((b - a, *r.shape))
        out[a:b] = ((r[None] + sq[None] * xi) ** 2).mean(axis=(1, 2))
    return out


# --------------------------------------------------------------------------------------------
# Neural-network hypotheses
# --------------------------------------------------------------------------------------------


def nn_hypothesis_errors(
    train: tuple[Any, Any],
    test: tuple[Any, Any],
    *,
    width: int = 128,
    depth: int = 2,
    n_trials: int = 40,
    steps: int = 300,
    lr: float = 1e-3,
    seed: int = 0,
) -> np.ndarray:
    """Test MSEs of ``n_trials`` ReLU MLPs (``depth`` hidden layers of ``width``), each trained
    from its own random initialisation by full-batch Adam (``lr``) for ``steps`` steps on the MSE
    to the targets (one-hot for classification), as in the official ``nn_inductive_bias.py``.

    The ``n_trials`` networks are trained at once as one batched MLP (weights ``[T, in, out]``,
    ``torch.baddbmm``): the loss is the sum of the per-network losses and Adam is elementwise, so
    each network follows exactly the trajectory it would alone. Initialisation is PyTorch's
    ``nn.Linear`` default (uniform in ``±1/√fan_in``). Written by hand because no library trains
    an ensemble of independent networks in one batched pass.
    """
    import torch

    (Xtr, Ytr), (Xte, Yte) = _xy(*train, "train[0]", "train[1]"), _xy(*test, "test[0]", "test[1]")
    if Xte.shape[1] != Xtr.shape[1] or Yte.shape[1] != Ytr.shape[1]:
        raise InputError("`test` must have the same number of features and outputs as `train`")
    width = check_int(width, "width", low=1)
    depth = check_int(depth, "depth", low=1)
    T = check_int(n_trials, "n_trials", low=1)
    steps = check_int(steps, "steps", low=1)
    lr = check_float(lr, "lr", low=1e-12)
    seed = check_int(seed, "seed", low=0)
    g = torch.Generator().manual_seed(seed)
    dims = [Xtr.shape[1]] + [width] * depth + [Ytr.shape[1]]
    params = []
    for a, b in itertools.pairwise(dims):
        bound = 1 / math.sqrt(a)
        W = ((torch.rand(T, a, b, generator=g) * 2 - 1) * bound).requires_grad_()
        c = ((torch.rand(T, 1, b, generator=g) * 2 - 1) * bound).requires_grad_()
        params += [W, c]

    def forward(x: torch.Tensor) -> torch.Tensor:
        h = x.expand(T, *x.shape)
        for i in range(0, len(params), 2):
            h = torch.baddbmm(params[i + 1], h, params[i])
            if i + 2 < len(params):
                h = torch.relu(h)
        return h

    xtr, ytr = torch.as_tensor(Xtr, dtype=torch.float32), torch.as_tensor(Ytr, dtype=torch.float32)
    xte, yte = torch.as_tensor(Xte, dtype=torch.float32), torch.as_tensor(Yte, dtype=torch.float32)
    opt = torch.optim.Adam(params, lr=lr)
    for _ in range(steps):
        opt.zero_grad(set_to_none=True)
        loss = ((forward(xtr) - ytr) ** 2).mean(dim=(1, 2)).sum()
        loss.backward()
        opt.step()
    with torch.no_grad():
        return ((forward(xte) - yte) ** 2).mean(dim=(1, 2)).double().numpy()


# --------------------------------------------------------------------------------------------
# The scaled non-central χ² fit
# --------------------------------------------------------------------------------------------


@dataclass
class NcxFit:
    """A fitted scaled non-central χ²: ``e / scale ~ χ'²(df, nc)``; ``loglik`` its total
    log-likelihood on the fitted errors; ``starts`` the log-likelihood reached from each start."""

    df: float
    nc: float
    scale: float
    loglik: float
    starts: list[float] = field(default_factory=list)

    @property
    def params(self) -> tuple[float, float, float]:
        return (self.df, self.nc, self.scale)

    def mean(self) -> float:
        return self.scale * (self.df + self.nc)


def _moment_starts(e: np.ndarray, n_starts: int) -> list[tuple[float, float, float]]:
    """Starts ``(df, nc, scale)`` that match the sample mean and variance exactly, for non-central
    shares ``f = nc / (df + nc)`` spread over [0, 0.95]: with ``T = df + nc``, mean ``= s T`` and
    variance ``= 2 s² T (1 + f)`` give ``s = var / (2 mean (1 + f))`` and ``T = mean / s``."""
    m, v = float(e.mean()), float(e.var(ddof=1))
    v = max(v, 1e-12 * m * m)
    out = []
    for f in np.linspace(0.0, 0.95, n_starts):
        s = v / (2 * m * (1 + f))
        T = m / s
        out.append((max(T * (1 - f), 1e-3), max(T * f, 1e-6), s))
    return out


def _logpdf(e: np.ndarray, df: float, nc: float, s: float) -> np.ndarray:
    """``ncx2.logpdf``, with the central χ² below ``nc < 1e-3`` (scipy's ``ncx2.logpdf`` returns
    ``−inf`` everywhere for tiny positive ``nc``, e.g. ``1e-6``; the two differ by ``O(nc)``)."""
    if nc < 1e-3:
        return stats.chi2.logpdf(e, df, scale=s)
    return stats.ncx2.logpdf(e, df, nc, scale=s)


def fit_scaled_ncx2(errors: Any, n_starts: int = 3, maxiter: int = 300) -> NcxFit:
    """Maximum-likelihood ``(df, nc, scale)`` of a scaled non-central χ² (loc fixed at 0).

    Hand-written because scipy's ``ncx2.fit(errors, floc=0)`` (the official code's call) starts
    from a generic guess and, for errors that are small numbers with a small spread, silently
    returns a degenerate fit (see :func:`scipy_default_fit`). Here: ``n_starts`` moment-matched
    starts (:func:`_moment_starts`), each refined by Nelder–Mead on the negative log-likelihood
    in log-parameters (so all three stay positive); the start with the highest log-likelihood
    wins, and every start's log-likelihood is kept in ``starts`` to check the fit.
    """
    e = _errors(errors)
    n_starts = check_int(n_starts, "n_starts", low=1)
    maxiter = check_int(maxiter, "maxiter", low=10)

    def nll(theta: np.ndarray) -> float:
        df, nc, s = np.exp(theta)
        if not (np.isfinite(df) and np.isfinite(nc) and np.isfinite(s)) or df > 1e7 or nc > 1e7:
            return 1e300
        lp = _logpdf(e, df, nc, s)
        total = -float(np.sum(lp))
        return total if np.isfinite(total) else 1e300

    best, lls = None, []
    for start in _moment_starts(e, n_starts):
        res = optimize.minimize(
            nll,
            np.log(start),
            method="Nelder-Mead",
            options={"maxiter": maxiter, "xatol": 1e-4, "fatol": 1e-4},
        )
        lls.append(-float(res.fun))
        if best is None or res.fun < best.fun:
            best = res
    df, nc, s = (float(v) for v in np.exp(best.x))
    return NcxFit(df, nc, s, -float(best.fun), lls)


def scipy_default_fit(errors: Any) -> NcxFit:
    """The official code's fit, ``scipy.stats.ncx2.fit(errors, floc=0)``: scipy's generic start
    and optimiser (shown only to contrast with :func:`fit_scaled_ncx2`)."""
    import warnings

    e = _errors(errors)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        df, nc, _, s = stats.ncx2.fit(e, floc=0)
        ll = float(np.sum(stats.ncx2.logpdf(e, df, nc, scale=s)))
    return NcxFit(float(df), float(nc), float(s), ll if np.isfinite(ll) else -math.inf)


# --------------------------------------------------------------------------------------------
# Bits of inductive bias
# --------------------------------------------------------------------------------------------


def sankaran_logcdf(x: Any, df: float, nc: float, scale: float = 1.0) -> np.ndarray:
    """Natural log of Sankaran's normal approximation of the scaled ncx2 CDF (the official
    ``inductive_bias_alt``), used where ``ncx2.logcdf`` underflows:
    ``h = 1 − ⅔(k+λ)(k+3λ)/(k+2λ)²``, ``p = (k+2λ)/(k+λ)²``, ``m = (h−1)(1−3h)``,
    ``z = [(x/s/(k+λ))^h − (1 + h p (h − 1 − ½(2−h) m p))] / (h √(2p) (1 + ½ m p))``.
    Returns ``log Φ(z)`` (scipy's ``norm.logcdf``); the official code returns only ``−z²/2``,
    the leading term, and drops ``−log(−z√(2π))``."""
    xx = np.asarray(x, dtype=float)
    k, lam, s = float(df), float(nc), float(scale)
    h = 1 - (2 / 3) * (k + lam) * (k + 3 * lam) / (k + 2 * lam) ** 2
    p = (k + 2 * lam) / (k + lam) ** 2
    m = (h - 1) * (1 - 3 * h)
    num = (np.maximum(xx, 0) / s / (k + lam)) ** h - (1 + h * p * (h - 1 - 0.5 * (2 - h) * m * p))
    z = num / (h * math.sqrt(2 * p) * (1 + 0.5 * m * p))
    return stats.norm.logcdf(z)


def inductive_bias_bits(params: NcxFit | Sequence[float], eps: Any) -> np.ndarray:
    """``I(ε) = −log₂ F(ε)`` for the fitted scaled ncx2 ``params`` (an :class:`NcxFit` or
    ``(df, nc, scale)``), at one ``ε`` or an array; scipy's ``ncx2.logcdf`` in nats divided by
    ``ln 2``, and Sankaran's approximation (:func:`sankaran_logcdf`) where scipy returns ``−inf``."""
    df, nc, s = params.params if isinstance(params, NcxFit) else tuple(params)
    df = check_float(df, "params.df", low=1e-12)
    nc = check_float(nc, "params.nc", low=0.0)
    s = check_float(s, "params.scale", low=1e-300)
    e = np.asarray(eps, dtype=float)
    if e.size == 0 or not np.all(np.isfinite(e)) or np.any(e <= 0):
        raise InputError("`eps` must be positive, finite error levels")
    lc = np.atleast_1d(stats.ncx2.logcdf(e, df, nc, scale=s)).astype(float)
    bad = ~np.isfinite(lc)
    if bad.any():
        lc[bad] = np.atleast_1d(sankaran_logcdf(np.atleast_1d(e)[bad], df, nc, s))
    bits = np.maximum(-lc / LN2, 0.0)
    return bits.reshape(e.shape)


def eps_grid(lo: float = 0.005, hi: float = 0.5, n: int = 25) -> np.ndarray:
    """A log-spaced grid of error levels (the spec: 0.005–0.5)."""
    lo = check_float(lo, "lo", low=1e-12)
    hi = check_float(hi, "hi", low=lo)
    return np.geomspace(lo, hi, check_int(n, "n", low=2))


# --------------------------------------------------------------------------------------------
# One entry point
# --------------------------------------------------------------------------------------------


@dataclass
class IBEstimate:
    """The estimate for one task and hypothesis space: the sampled ``errors``, the ``fit``, and
    ``bits`` of inductive bias at each of ``eps``."""

    errors: np.ndarray
    fit: NcxFit
    eps: np.ndarray
    bits: np.ndarray


def explain(
    task: IDTask,
    eps: Any,
    *,
    space: str = "gp",
    lengthscale: float | None = None,
    n_samples: int = 4000,
    n_fit: int | None = None,
    seed: int = 0,
    **nn_kwargs: Any,
) -> IBEstimate:
    """Bits of inductive bias ``I(ε)`` of ``task`` relative to a hypothesis ``space``: ``"gp"``
    (RBF GP posterior, bandwidth ``lengthscale`` or the median heuristic, ``n_samples`` draws)
    or ``"nn"`` (MLPs, :func:`nn_hypothesis_errors` with ``nn_kwargs``); the ncx2 is fitted on the
    first ``n_fit`` errors (all by default)."""
    if not isinstance(task, IDTask):
        raise InputError(f"`task` must be an IDTask; got {type(task).__name__}")
    if space not in ("gp", "nn"):
        raise InputError(f"`space` must be one of ['gp', 'nn']; got {space!r}")
    if space == "gp":
        ell = median_lengthscale(task.X_train) if lengthscale is None else lengthscale
        errors = gp_posterior_errors(
            task.X_train, task.Y_train, task.X_test, task.Y_test, ell, n_samples=n_samples, seed=seed
        )
    else:
        errors = nn_hypothesis_errors((task.X_train, task.Y_train), (task.X_test, task.Y_test), seed=seed, **nn_kwargs)
    n_fit = len(errors) if n_fit is None else check_int(n_fit, "n_fit", low=10, high=len(errors))
    fit = fit_scaled_ncx2(errors[:n_fit])
    e = np.atleast_1d(np.asarray(eps, dtype=float))
    return IBEstimate(errors, fit, e, inductive_bias_bits(fit, e))


# --------------------------------------------------------------------------------------------
# The notebook's studies (each a thin loop over the steps above)
# --------------------------------------------------------------------------------------------


def tail_validation(
    task: IDTask,
    *,
    n_samples: int = 4000,
    n_fit: int = 1000,
    n_truth: int = 200_000,
    levels: Sequence[float] = (0.01, 1e-4),
    seed: int = 0,
) -> dict[str, Any]:
    """Check the estimator against a known answer on one GP task.

    Draws ``n_samples`` posterior errors and fits on the first ``n_fit``. The truth at level
    ``p`` is ``−log₂ p`` at ``ε_p``, the ``p``-quantile of the errors: for ``p = 0.01`` (the
    spec's check) the quantile of the ``n_samples`` draws; for smaller ``p`` the quantile of
    ``n_truth`` further exact draws (:func:`sample_error_terms`), so the fit must extrapolate
    below every error it saw. Returns ``eps``, ``truth`` and the bits of the robust fit
    (``"ncx2"``), scipy's default fit (``"scipy default"``), a central-χ² (gamma, loc 0) fit
    (``"gamma"``) and the empirical CDF of the fitted errors (``"empirical"``; ``inf`` where
    none of them lies below ``ε``), all on the same ``n_fit`` errors.
    """
    if not isinstance(task, IDTask):
        raise InputError(f"`task` must be an IDTask; got {type(task).__name__}")
    n_samples = check_int(n_samples, "n_samples", low=20)
    n_fit = check_int(n_fit, "n_fit", low=10, high=n_samples)
    n_truth = check_int(n_truth, "n_truth", low=100)
    lv = np.asarray(levels, dtype=float)
    if lv.ndim != 1 or lv.size == 0 or np.any(lv <= 0) or np.any(lv >= 1):
        raise InputError(f"`levels` must be probabilities in (0, 1); got {levels!r}")
    lam, r = gp_error_terms(task.X_train, task.Y_train, task.X_test, task.Y_test, median_lengthscale(task.X_train))
    errors = sample_error_terms(lam, r, n_samples, seed=seed)
    big = sample_error_terms(lam, r, n_truth, seed=seed + 1_000_003, chunk=20_000)
    eps = np.array([np.quantile(errors if p >= 0.01 else big, p) for p in lv])
    fe = errors[:n_fit]
    fit = fit_scaled_ncx2(fe)
    g = stats.gamma.fit(fe, floc=0)
    emp = np.array([(fe <= e).mean() for e in eps])
    with np.errstate(divide="ignore"):
        emp_bits = -np.log2(emp)
    bits = {
        "ncx2": inductive_bias_bits(fit, eps),
        "scipy default": inductive_bias_bits(scipy_default_fit(fe), eps),
        "gamma": -stats.gamma.logcdf(eps, *g) / LN2,
        "empirical": emp_bits,
    }
    return {"levels": lv, "eps": eps, "truth": -np.log2(lv), "bits": bits, "fit": fit, "errors": errors}


def dimension_study(
    ks: Sequence[int],
    seeds: Sequence[int],
    eps: Any,
    *,
    n_samples: int = 4000,
    n_fit: int = 1000,
    D: int = 16,
    n_train: int = 100,
    n_test: int = 200,
) -> dict[tuple[int, int], IBEstimate]:
    """:func:`explain` on :func:`make_intrinsic_dim_task` for every ``k`` in ``ks`` and task seed
    in ``seeds`` (median-heuristic bandwidth; the ncx2 fitted on the first ``n_fit`` errors)."""
    if len(ks) == 0 or len(seeds) == 0:
        raise InputError("`ks` and `seeds` must be non-empty")
    out = {}
    for k in ks:
        for s in seeds:
            task = make_intrinsic_dim_task(k, D=D, n_train=n_train, n_test=n_test, seed=s)
            out[(k, s)] = explain(task, eps, n_samples=n_samples, n_fit=n_fit, seed=s)
    return out


def monotone_margin(curves: dict[int, np.ndarray]) -> float:
    """``min over k < k' and over the grid of I_{k'}(ε) − I_k(ε)`` for ``curves`` ``{k: I_k on a
    common ε grid}``: ``≥ 0`` when ``I`` never decreases with ``k`` (``-inf``-free: finite bits)."""
    ks = sorted(curves)
    if len(ks) < 2:
        raise InputError("`curves` needs at least two values of k")
    diffs = [np.min(np.asarray(curves[b]) - np.asarray(curves[a])) for i, a in enumerate(ks) for b in ks[i + 1 :]]
    return float(min(diffs))
