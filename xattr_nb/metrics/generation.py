"""Metrics of generated images: a Fréchet-distance proxy and a non-neural shape/colour judge.

- :func:`fid_proxy`: the Fréchet distance between Gaussians fitted to two feature sets, after a
  common PCA (FID's formula, ``||mu_a - mu_b||^2 + tr(S_a + S_b - 2 (S_a S_b)^{1/2})``, on whatever
  features the caller gives: raw pixels, a classifier's penultimate layer, CLIP features). PCA is
  ``sklearn.decomposition.PCA`` fitted on both sets together; the matrix square root is
  ``scipy.linalg.sqrtm``. Written here because no installed library computes FID on arbitrary
  features without an Inception network.
- :func:`template_judge`: the human stand-in of SAGE and R0 (spec §6.5), **not** a neural network
  and never trained: the foreground is the bright pixels far from the image border's median colour
  (every palette colour has a channel >= 0.8, no background does); the colour is the palette colour
  (:data:`xattr_nb.worlds.shapes.COLORS`) nearest to the foreground's median RGB; the shape is the
  template of highest IoU with the foreground, over templates rendered by
  :func:`xattr_nb.worlds.shapes.render_masks` for every shape, 5 radii, 5 rotations, solid and
  outline styles, aligned by centroid (and ±1 px around it). Striped objects are closed
  morphologically (3×3) before matching, as are the templates. A foreground that matches no
  template with IoU >= ``min_iou`` (a texture, a smear) is judged ``"none"``; an empty one gets
  ``"none"`` for both shape and colour. Written by hand: no library offers template matching over
  a bank of binary masks with this alignment.
"""

from __future__ import annotations

import dataclasses
from functools import lru_cache
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from xattr_nb.checks import InputError, check_float, check_int, check_numeric, check_tensor
from xattr_nb.worlds import shapes as _sw

__all__ = ["JUDGE_NONE", "Judgement", "fid_proxy", "frechet_distance", "template_judge"]

#: Label the judge gives when it cannot tell (no foreground, or no template fits).
JUDGE_NONE = "none"
_RADII = (5.0, 6.5, 8.0, 9.5, 11.0)
_ANGLES_DEG = (-15.0, -7.5, 0.0, 7.5, 15.0)
_RES = 32


def _as_2d(x: Any, name: str) -> np.ndarray:
    t = check_tensor(x, name, layout="[N, ...] features (flattened after the first axis)")
    if t.ndim < 2:
        raise InputError(f"`{name}` must be [N, D] (or [N, ...], flattened); got shape {tuple(t.shape)}")
    if t.shape[0] < 2:
        raise InputError(f"`{name}` needs at least 2 rows to estimate a covariance; got {t.shape[0]}")
    return t.detach().reshape(t.shape[0], -1).double().cpu().numpy()


def frechet_distance(mu_a: np.ndarray, cov_a: np.ndarray, mu_b: np.ndarray, cov_b: np.ndarray) -> float:
    """``||mu_a - mu_b||^2 + tr(S_a + S_b - 2 (S_a S_b)^{1/2})``: the 2-Wasserstein distance squared
    between two Gaussians (FID's formula; ``scipy.linalg.sqrtm``, imaginary round-off dropped)."""
    from scipy import linalg

    mu_a, mu_b = (check_numeric(m, n, dtype="float").double().numpy() for m, n in ((mu_a, "mu_a"), (mu_b, "mu_b")))
    cov_a, cov_b = (
        check_numeric(c, n, dtype="float").double().numpy() for c, n in ((cov_a, "cov_a"), (cov_b, "cov_b"))
    )
    mu_a, mu_b = np.atleast_1d(mu_a), np.atleast_1d(mu_b)
    cov_a, cov_b = np.atleast_2d(cov_a), np.atleast_2d(cov_b)
    if mu_a.shape != mu_b.shape or cov_a.shape != cov_b.shape or cov_a.shape != (len(mu_a), len(mu_a)):
        raise InputError(
            f"means and covariances must agree: got mu {mu_a.shape} / {mu_b.shape}, cov {cov_a.shape} / {cov_b.shape}"
        )
    covmean = linalg.sqrtm(cov_a @ cov_b)
    if not np.isfinite(covmean).all():  # singular product: FID's usual fix, a tiny ridge
        eps = 1e-6 * np.eye(len(mu_a))
        covmean = linalg.sqrtm((cov_a + eps) @ (cov_b + eps))
    covmean = np.real(covmean)
    d = mu_a - mu_b
    return float(max(0.0, d @ d + np.trace(cov_a) + np.trace(cov_b) - 2.0 * np.trace(covmean)))


def fid_proxy(feats_a: Any, feats_b: Any, pca_dim: int | None = 32) -> float:
    """Fréchet distance between ``feats_a`` and ``feats_b`` (``[N, D]``, or ``[N, ...]`` flattened:
    raw images work) after projecting both on the first ``pca_dim`` principal components of their
    union (``None``: no PCA). 0 for identical sets; equal to the Gaussians' closed form when no
    dimension is dropped (PCA is then a rotation and a common shift, which the distance ignores)."""
    from sklearn.decomposition import PCA

    a, b = _as_2d(feats_a, "feats_a"), _as_2d(feats_b, "feats_b")
    if a.shape[1] != b.shape[1]:
        raise InputError(f"`feats_a` and `feats_b` must have the same feature size; got {a.shape[1]} and {b.shape[1]}")
    if pca_dim is not None:
        pca_dim = check_int(pca_dim, "pca_dim", low=1)
        k = min(pca_dim, a.shape[1], len(a) + len(b) - 1)
        pca = PCA(n_components=k, svd_solver="full").fit(np.concatenate([a, b]))
        a, b = pca.transform(a), pca.transform(b)
    return frechet_distance(a.mean(0), np.cov(a, rowvar=False), b.mean(0), np.cov(b, rowvar=False))


# ----------------------------------------------------------------------------------------------- the judge


@dataclasses.dataclass
class Judgement:
    """What :func:`template_judge` saw in each image (``details=True``)."""

    shapes: list[str]
    colors: list[str]
    shape_iou: torch.Tensor  # [N] IoU of the best template (0 for an empty foreground)
    color_dist: torch.Tensor  # [N] RGB distance of the median foreground colour to its palette colour
    foreground: torch.Tensor  # [N, H, W] bool


def _close(mask: torch.Tensor) -> torch.Tensor:
    """Binary closing with a 3×3 square (dilate, then erode; outside the image counts as empty)."""
    m = mask.float()[:, None]
    dil = F.max_pool2d(m, 3, stride=1, padding=1)
    ero = -F.max_pool2d(-F.pad(dil, (1, 1, 1, 1), value=0.0), 3, stride=1)
    return ero[:, 0] > 0.5


def _erode4(mask: np.ndarray, steps: int) -> np.ndarray:
    out = mask.copy()
    for _ in range(steps):
        p = np.pad(out, ((0, 0), (1, 1), (1, 1)))
        out = out & p[:, :-2, 1:-1] & p[:, 2:, 1:-1] & p[:, 1:-1, :-2] & p[:, 1:-1, 2:]
    return out


def _shift(masks: torch.Tensor, dy: torch.Tensor, dx: torch.Tensor) -> torch.Tensor:
    """Each ``masks[i]`` translated by integer ``(dy[i], dx[i])`` (zero fill)."""
    n, h, w = masks.shape
    ys = torch.arange(h)[None, :, None] - dy[:, None, None]
    xs = torch.arange(w)[None, None, :] - dx[:, None, None]
    ok = (ys >= 0) & (ys < h) & (xs >= 0) & (xs < w)
    idx = torch.arange(n)[:, None, None]
    out = masks[idx, ys.clamp(0, h - 1), xs.clamp(0, w - 1)]
    return out & ok


def _centroid(masks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    h, w = masks.shape[1:]
    m = masks.float()
    area = m.sum((1, 2)).clamp_min(1.0)
    cy = (m.sum(2) * torch.arange(h)).sum(1) / area
    cx = (m.sum(1) * torch.arange(w)).sum(1) / area
    return cy, cx


@lru_cache(maxsize=2)
def _templates(res: int) -> tuple[torch.Tensor, tuple[int, ...]]:
    """Centred (by centroid), closed template masks ``[T, res*res]`` float and their shape index."""
    names, radii, angles = [], [], []
    for s in _sw.SHAPES:
        for r in _RADII:
            for a in _ANGLES_DEG:
                names.append(s)
                radii.append(r * res / 32.0)
                angles.append(np.deg2rad(a))
    n = len(names)
    c = (res - 1) / 2
    solid = _sw.render_masks(names, np.full(n, c), np.full(n, c), np.asarray(radii), np.asarray(angles), res)
    width = np.maximum(1, np.round(np.asarray(radii) / 5.0)).astype(int)
    outline = solid.copy()
    for wd in np.unique(width):
        sel = width == wd
        outline[sel] = solid[sel] & ~_erode4(solid[sel], int(wd))
    masks = torch.from_numpy(np.concatenate([solid, outline]))
    masks = _close(masks)
    cy, cx = _centroid(masks)
    masks = _shift(masks, torch.round(c - cy).long(), torch.round(c - cx).long())
    shape_idx = tuple(_sw.SHAPES.index(s) for s in names) * 2
    return masks.reshape(len(masks), -1).float(), shape_idx


def _foreground(x: torch.Tensor, bright: float, contrast: float) -> torch.Tensor:
    """Pixels with a bright channel (>= ``bright``) far (>= ``contrast``, RGB L2) from the border's median."""
    border = torch.cat([x[:, :, 0], x[:, :, -1], x[:, :, 1:-1, 0], x[:, :, 1:-1, -1]], dim=2)  # [B, 3, P]
    bg = border.median(dim=2).values[:, :, None, None]
    far = (x - bg).norm(dim=1) >= contrast
    return far & (x.amax(dim=1) >= bright)


@torch.no_grad()
def template_judge(
    images: Any,
    *,
    min_iou: float = 0.45,
    bright: float = 0.66,
    contrast: float = 0.3,
    details: bool = False,
) -> tuple[list[str], list[str]] | Judgement:
    """Judge each image's shape and colour without any learnt parameter (see the module docstring).

    ``images``: ``[N, 3, H, W]`` in ``[0, 1]`` (ShapesWorld renders, generated images). Returns
    ``(shapes, colors)``, names from :data:`~xattr_nb.worlds.shapes.SHAPES` /
    :data:`~xattr_nb.worlds.shapes.COLORS` or :data:`JUDGE_NONE` where it cannot tell, or with
    ``details=True`` a :class:`Judgement` that also holds the best IoU, the colour distance and the
    foreground masks. Non-differentiable by design (the judge must not be searched against).
    """
    x = check_tensor(images, "images", ndim=4, dtype="float", layout="[N, 3, H, W] in [0, 1]")
    if x.shape[1] != 3:
        raise InputError(f"`images` must have 3 channels [N, 3, H, W]; got shape {tuple(x.shape)}")
    if x.shape[2] != x.shape[3] or x.shape[2] < 8:
        raise InputError(f"`images` must be square and at least 8×8; got {tuple(x.shape[2:])}")
    min_iou = check_float(min_iou, "min_iou", low=0.0, high=1.0)
    bright = check_float(bright, "bright", low=0.0, high=1.0)
    contrast = check_float(contrast, "contrast", low=0.0)
    x = x.detach().float().cpu().clamp(0, 1)
    n, _, res, _ = x.shape
    fg = _foreground(x, bright, contrast)
    area = fg.sum((1, 2))
    # colour: the palette colour nearest to the median foreground RGB
    palette = torch.tensor(list(_sw.COLORS.values()))
    names_c = list(_sw.COLORS)
    colors, cdist = [], torch.full((n,), float("inf"))
    for i in range(n):
        if area[i] == 0:
            colors.append(JUDGE_NONE)
            continue
        med = x[i][:, fg[i]].median(dim=1).values
        d = (palette - med).norm(dim=1)
        cdist[i] = d.min()
        colors.append(names_c[int(d.argmin())])
    # shape: best IoU over the template bank, aligned by centroid (±1 px)
    tmpl, shape_idx = _templates(res)
    c = (res - 1) / 2
    closed = _close(fg)
    cy, cx = _centroid(closed)
    best = torch.zeros(n)
    arg = torch.zeros(n, dtype=torch.long)
    t_area = tmpl.sum(1)
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            m = _shift(closed, torch.round(c - cy).long() + dy, torch.round(c - cx).long() + dx)
            mf = m.reshape(n, -1).float()
            inter = mf @ tmpl.T
            iou = inter / (mf.sum(1, keepdim=True) + t_area[None] - inter).clamp_min(1.0)
            v, a = iou.max(1)
            better = v > best
            best = torch.where(better, v, best)
            arg = torch.where(better, a, arg)
    shapes_out = [
        _sw.SHAPES[shape_idx[int(a)]] if (area[i] > 0 and float(best[i]) >= min_iou) else JUDGE_NONE
        for i, a in enumerate(arg)
    ]
    best = torch.where(area > 0, best, torch.zeros_like(best))
    if details:
        return Judgement(shapes_out, colors, best, cdist, fg)
    return shapes_out, colors
