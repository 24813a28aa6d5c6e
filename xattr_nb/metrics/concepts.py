"""Matching learned latents (e.g. SAE codes) to ground-truth factors: matched correlations and MCC."""

from __future__ import annotations

from typing import Any

import numpy as np

from xattr_nb.checks import InputError, check_numeric

__all__ = ["matched_correlations", "mcc"]


def _matrix(x: Any, name: str) -> np.ndarray:
    arr = check_numeric(x, name, finite=False).detach().cpu().double().numpy()
    if arr.ndim != 2 or arr.shape[0] < 2 or arr.shape[1] < 1:
        raise InputError(f"`{name}` must be a matrix [N samples, K factors] with N >= 2; got shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise InputError(f"`{name}` holds NaN or infinite values")
    return arr


def matched_correlations(latents: Any, truth: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Match each ground-truth factor to one latent (Hungarian assignment on |Pearson r|, scipy's
    ``linear_sum_assignment``) and return ``(truth_index, latent_index, |r|)`` per matched pair.

    ``latents`` ``[N, K]`` (e.g. SAE codes) and ``truth`` ``[N, M]`` (e.g. concept log-odds) share rows.
    A constant column (a dead latent) correlates 0 with everything. With ``K < M`` only ``K`` factors match.
    """
    z, t = _matrix(latents, "latents"), _matrix(truth, "truth")
    if z.shape[0] != t.shape[0]:
        raise InputError(f"`latents` and `truth` must have the same rows; got {z.shape[0]} and {t.shape[0]}")
    from scipy.optimize import linear_sum_assignment

    zc, tc = z - z.mean(0), t - t.mean(0)
    zn, tn = np.linalg.norm(zc, axis=0), np.linalg.norm(tc, axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        corr = np.abs(tc.T @ zc) / np.outer(tn, zn)
    corr = np.nan_to_num(corr, nan=0.0, posinf=0.0)
    rows, cols = linear_sum_assignment(-corr)
    return rows, cols, corr[rows, cols]


def mcc(latents: Any, truth: Any) -> float:
    """Mean correlation coefficient: the mean |Pearson r| of the Hungarian-matched pairs of
    :func:`matched_correlations` (1 = every factor read off one latent, up to scale and sign)."""
    return float(matched_correlations(latents, truth)[2].mean())
