"""Localization: does the map point at the object, and how much of its mass lies there?

Pointing games (Zhang et al., 2016, in two tie conventions), the energy pointing game
(Score-CAM), the share of mass inside a mask or box, mask IoU, and the grid metrics of GridPG /
DiFull (how much positive attribution lands in the target's cell of a ``scale x scale`` grid).
Maps are ``[H, W]`` or batches ``[B, H, W]`` (or a pixel :class:`~xattr_nb.attribution.Attribution`);
ground truth is a bool mask or a box ``(x0, y0, x1, y1)`` in pixels, end-exclusive.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from xattr_nb.attribution.result import Attribution
from xattr_nb.checks import InputError, check_choice, check_float, check_int, check_target, check_tensor
from xattr_nb.kernels import grid_regions
from xattr_nb.metrics._common import _vector

__all__ = [
    "energy_pointing_game",
    "grid_accuracy",
    "grid_cell_mass",
    "grid_localization",
    "inside_mass",
    "localization_summary",
    "mask_iou",
    "pointing_game",
]


def _pixel_maps(attr: Any, name: str = "attr_map") -> torch.Tensor:
    if isinstance(attr, Attribution):
        if attr.kind != "pixels":
            raise InputError(f"`{name}` must score pixels; this Attribution scores {attr.kind}")
        return attr.scores
    return check_tensor(attr, name, ndim=(2, 3), dtype="float", layout="[H, W] or [B, H, W]")


def _gt_masks(gt: Any, like: torch.Tensor, name: str = "mask_or_box") -> torch.Tensor:
    """A bool mask ``[..., H, W]`` like ``like``, from a mask or an ``(x0, y0, x1, y1)`` box (pixels, end-exclusive)."""
    h, w = like.shape[-2:]
    if isinstance(gt, (list, tuple)):
        gt = torch.as_tensor(gt, dtype=torch.float64)
    gt = check_tensor(gt, name, ndim=(1, 2, 3), layout="mask [H, W] / [B, H, W] or box [4] / [B, 4] (x0, y0, x1, y1)")
    if gt.dtype == torch.bool:
        if tuple(gt.shape[-2:]) != (h, w):
            raise InputError(f"`{name}` is a {tuple(gt.shape[-2:])} mask but the map is {(h, w)}")
        mask = gt
    else:
        if gt.shape[-1] != 4 or gt.ndim > 2:
            raise InputError(f"`{name}` must be a bool mask or boxes [4] / [B, 4]; got {gt.dtype} {tuple(gt.shape)}")
        x0, y0, x1, y1 = gt.unbind(-1)
        if bool(((x1 <= x0) | (y1 <= y0)).any()):
            raise InputError(f"`{name}` boxes need x1 > x0 and y1 > y0 (pixels, end-exclusive)")
        cols = torch.arange(w, device=gt.device).to(gt.dtype)
        rows = torch.arange(h, device=gt.device).to(gt.dtype)
        inx = (cols >= x0[..., None]) & (cols < x1[..., None])
        iny = (rows >= y0[..., None]) & (rows < y1[..., None])
        mask = iny[..., :, None] & inx[..., None, :]
    if mask.ndim == 3 and like.ndim == 2:
        raise InputError(f"`{name}` holds {mask.shape[0]} masks but the map is a single [H, W] map")
    if mask.ndim == 3 and like.ndim == 3 and mask.shape[0] != like.shape[0]:
        raise InputError(f"`{name}` holds {mask.shape[0]} masks but the batch has {like.shape[0]} maps")
    if not bool(mask.flatten(-2).any(-1).all()):
        raise InputError(f"`{name}` has an empty mask (no pixel inside)")
    return mask.to(like.device).expand(like.shape)


def pointing_game(attr_map: Any, mask_or_box: Any, *, tolerance: int = 0, ties: str = "all") -> torch.Tensor:
    """Pointing game (Zhang et al., 2016): is the map's maximum on the object? Bool, ``[]`` or ``[B]``.

    A hit when the maximal pixel lies inside the mask (or box ``(x0, y0, x1, y1)`` in pixels,
    end-exclusive), or within ``tolerance`` pixels of it (Euclidean; the paper uses 15 px at
    224 px). ``ties`` says what counts when several pixels attain the maximum:

    - ``"all"`` (default, strict): *every* maximal pixel must be inside, so a constant map scores
      a hit only if the object covers the image, and a map cannot win by being flat;
    - ``"any"`` (lenient, the VPS evaluator's ``eval_energy_pg.py``): a hit when *any* maximal
      pixel is inside. A region (superpixel) map is flat over its best region, and a region that
      holds the object usually spills past the box; this convention still scores it a hit.

    The two agree whenever the maximum is attained at a single pixel. Neither takes "the first
    argmax": under ``"all"`` a tie anywhere outside is a miss, under ``"any"`` a tie anywhere
    inside is a hit, whatever the pixels' order.
    """
    check_choice(ties, ("all", "any"), "ties")
    maps = _pixel_maps(attr_map)
    mask = _gt_masks(mask_or_box, maps)
    tolerance = check_int(tolerance, "tolerance", low=0)
    if tolerance:
        r = tolerance
        yy, xx = torch.meshgrid(torch.arange(-r, r + 1), torch.arange(-r, r + 1), indexing="ij")
        disk = ((yy**2 + xx**2) <= r * r).float()[None, None].to(maps.device)
        m = mask.reshape(-1, 1, *mask.shape[-2:]).float()
        mask = (F.conv2d(m, disk, padding=r) > 0).reshape(mask.shape)
    is_max = maps == maps.flatten(-2).amax(-1)[..., None, None]
    if ties == "any":
        return (is_max & mask).flatten(-2).any(-1)
    return (~is_max | mask).flatten(-2).all(-1)


def energy_pointing_game(attr_map: Any, mask_or_box: Any) -> torch.Tensor:
    """Energy-based pointing game (Wang et al., Score-CAM 2020): share of the positive mass inside.

    ``sum(max(a, 0) inside) / sum(max(a, 0))``, in [0, 1]; a map without positive mass gets 0.
    """
    maps = _pixel_maps(attr_map)
    mask = _gt_masks(mask_or_box, maps)
    pos = maps.clamp_min(0)
    total = pos.flatten(-2).sum(-1)
    inside = (pos * mask).flatten(-2).sum(-1)
    return torch.where(total > 0, inside / total.clamp_min(1e-30), torch.zeros_like(total))


def inside_mass(attr_map: Any, mask_or_box: Any, *, absolute: bool = True) -> torch.Tensor:
    """Share of the attribution mass inside the mask: ``sum|a| inside / sum|a|`` (``absolute=False``: of ``a``).

    With ``absolute=False`` the ratio of signed sums can leave [0, 1]; a zero total gives 0.
    """
    maps = _pixel_maps(attr_map)
    mask = _gt_masks(mask_or_box, maps)
    m = maps.abs() if absolute else maps
    total = m.flatten(-2).sum(-1)
    inside = (m * mask).flatten(-2).sum(-1)
    return torch.where(
        total != 0, inside / torch.where(total != 0, total, torch.ones_like(total)), torch.zeros_like(total)
    )


def mask_iou(pred: Any, gt: Any, *, threshold: float = 0.5) -> torch.Tensor:
    """Intersection over union of a predicted mask and the true one: ``[]`` or ``[B]``.

    ``pred`` is a bool mask or a float map binarised as ``pred >= threshold`` (min-max normalise a
    map first if its scale is arbitrary). Two empty masks have IoU 1.
    """
    if isinstance(pred, Attribution):
        pred = _pixel_maps(pred, "pred")
    pred = check_tensor(pred, "pred", ndim=(2, 3), layout="[H, W] or [B, H, W]")
    if pred.dtype != torch.bool:
        if not pred.is_floating_point():
            raise InputError(f"`pred` must be a bool mask or a float map; got {pred.dtype}")
        pred = pred >= check_float(threshold, "threshold")
    gt = check_tensor(gt, "gt", ndim=(2, 3), dtype="bool", layout="[H, W] or [B, H, W]")
    if gt.shape != pred.shape:
        raise InputError(f"`gt` has shape {tuple(gt.shape)} but `pred` has {tuple(pred.shape)}")
    inter = (pred & gt).flatten(-2).sum(-1).double()
    union = (pred | gt).flatten(-2).sum(-1).double()
    return torch.where(union > 0, inter / union.clamp_min(1), torch.ones_like(union))


def _grid_maps(attr: Any, size: Any, upsample: str) -> torch.Tensor:
    """Pixel maps ``[B, H, W]`` (float64), upsampled to ``size`` when given."""
    maps = _pixel_maps(attr, "attr")
    if maps.ndim == 2:
        raise InputError("`attr` must be a batch of maps [B, H, W] (use attr[None] for one map)")
    check_choice(upsample, ("bilinear", "nearest"), "upsample")
    if size is None:
        return maps.double()
    if isinstance(size, int) and not isinstance(size, bool):
        size = (size, size)
    if not isinstance(size, (tuple, list)) or len(size) != 2:
        raise InputError(f"`size` must be an int or (H, W) of the grid image; got {size!r}")
    size = (check_int(size[0], "size[0]", low=1), check_int(size[1], "size[1]", low=1))
    if tuple(maps.shape[-2:]) == size:
        return maps.double()
    # captum's LayerAttribution.interpolate is this call; the DiFull code upsamples bilinearly.
    kw = {"align_corners": False} if upsample == "bilinear" else {}
    return F.interpolate(maps.double().unsqueeze(1), size=size, mode=upsample, **kw)[:, 0]


def grid_cell_mass(attr: Any, scale: int, *, size: Any = None, upsample: str = "bilinear") -> torch.Tensor:
    """Share of the positive attribution in each cell of a ``scale x scale`` grid: ``[B, scale**2]``.

    ``attr`` is ``[B, H, W]`` (or a pixel :class:`Attribution`); cells are row-major (cell ``k`` is
    row ``k // scale``, column ``k % scale``, as in :mod:`xattr_nb.worlds.grids`) with edges from
    :func:`~xattr_nb.kernels.grid_regions`. A coarse map (e.g. a layer's Grad-CAM) is first
    upsampled to ``size`` with ``upsample`` (``"bilinear"`` as in DiFull, which leaks a little
    across cell borders; ``"nearest"`` does not). A map whose positive mass is below ``1e-7``
    gets all zeros.
    """
    scale = check_int(scale, "scale", low=1)
    maps = _grid_maps(attr, size, upsample)
    h, w = maps.shape[-2:]
    if scale > min(h, w):
        raise InputError(f"`scale` {scale} is larger than the map {(h, w)}")
    cells = grid_regions(h, w, scale, scale, device=maps.device).to(maps.dtype)
    pos = maps.clamp_min(0)
    total = pos.flatten(1).sum(1)
    mass = torch.einsum("bhw,khw->bk", pos, cells)
    return torch.where(total[:, None] >= 1e-7, mass / total.clamp_min(1e-300)[:, None], torch.zeros_like(mass))


def grid_localization(
    attr: Any, cell_index: Any, scale: int, *, size: Any = None, upsample: str = "bilinear"
) -> torch.Tensor:
    """DiFull / GridPG localization score per map: ``L = sum_{cell k} A+ / sum A+`` ``[B]`` (float64).

    ``A+`` is the positive part of the (upsampled, see :func:`grid_cell_mass`) attribution and
    ``k = cell_index[b]`` the cell of the class being explained. 1 means every bit of positive
    evidence is in the right cell; chance is ``1 / scale**2``; a map without positive mass (total
    below 1e-7) scores 0, as in the DiFull code (Rao et al., CVPR 2022, §2.2 of spec 01).
    """
    masses = grid_cell_mass(attr, scale, size=size, upsample=upsample)
    b, k = masses.shape
    if isinstance(cell_index, int) and not isinstance(cell_index, bool):
        cell_index = torch.full((b,), cell_index, dtype=torch.long)
    idx = check_target(cell_index, k, b, name="cell_index").to(masses.device)
    return masses.gather(1, idx[:, None])[:, 0]


def grid_accuracy(
    attr: Any, cell_index: Any, scale: int, *, size: Any = None, upsample: str = "bilinear"
) -> torch.Tensor:
    """Per map, whether the target cell holds strictly more positive attribution than any other: bool ``[B]``.

    Its mean is a grid pointing accuracy (chance ``1 / scale**2``); a map without positive mass,
    or tied between cells, is a miss.
    """
    masses = grid_cell_mass(attr, scale, size=size, upsample=upsample)
    b, k = masses.shape
    if isinstance(cell_index, int) and not isinstance(cell_index, bool):
        cell_index = torch.full((b,), cell_index, dtype=torch.long)
    idx = check_target(cell_index, k, b, name="cell_index").to(masses.device)
    own = masses.gather(1, idx[:, None])
    others = masses.scatter(1, idx[:, None], float("-inf"))
    return (own[:, 0] > others.amax(1)) & (own[:, 0] > 0)


def localization_summary(scores: Any, *, scale: int, perfect_tol: float = 1e-6) -> dict[str, float]:
    """Aggregate localization scores ``[N]`` (e.g. :func:`grid_localization`) into the figures DiFull reports.

    Returns ``mean``, ``median``, ``frac_perfect`` (``L >= 1 - perfect_tol``), ``frac_above_chance``
    (``L > 1 / scale**2``), ``frac_zero`` (no positive mass or none inside), ``chance`` and ``n``.
    """
    s = _vector(scores, "scores")
    scale = check_int(scale, "scale", low=1)
    tol = check_float(perfect_tol, "perfect_tol", low=0.0, high=1.0)
    if bool(((s < -1e-9) | (s > 1 + 1e-9)).any()):
        raise InputError("`scores` must lie in [0, 1] (localization shares)")
    chance = 1.0 / scale**2
    return {
        "mean": float(s.mean()),
        "median": float(s.median()),
        "frac_perfect": float((s >= 1 - tol).double().mean()),
        "frac_above_chance": float((s > chance).double().mean()),
        "frac_zero": float((s <= 0).double().mean()),
        "chance": chance,
        "n": int(s.shape[0]),
    }
