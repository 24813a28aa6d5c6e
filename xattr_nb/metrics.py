"""Metrics that score attributions: faithfulness curves, localization, text erasure, rank agreement.

Every function takes raw tensors or an :class:`~xattr_nb.attribution.Attribution`, validates its
inputs (NaN scores, mismatched shapes and empty inputs raise :class:`~xattr_nb.checks.InputError`)
and is batch-aware. Library code is used where it exists (``sklearn.metrics.auc`` for the
trapezoid, ``scipy.stats`` for rank correlations); what no library offers in this form (the region
and 2%-pixel insertion/deletion protocols, pointing games, ERASER erasure metrics) is written here.

**Faithfulness curves (images).** An attribution ranks parts of the image. *Insertion* starts
from the baseline image (nothing shown) and reveals the parts from most to least important;
*deletion* starts from the full image and removes them in the same order. Both curves are drawn
against the revealed (resp. removed) **area fraction**, from 0 to 1, and summarised by their area
under the curve. A good attribution makes the class score rise fast under insertion (high AUC)
and fall fast under deletion (low AUC). Two protocols:

- ``"region"``: the image is partitioned into disjoint regions; a region ordering (or a pixel map
  summed inside each region, :func:`region_scores`) is revealed one region per step.
- ``"pixel"``: pixels ranked by the map, revealed ``pixel_step`` (2%) of the image per step,
  i.e. 50 steps, as in the LiMA/SMDL evaluation scripts for pixel-map baselines.

**Text.** ERASER (DeYoung et al., 2020): *comprehensiveness* is the score drop when the top-k%
tokens are erased, *sufficiency* the drop when only they are kept, each averaged over the bins
(1, 5, 10, 20, 50)%. The soft variants of Zhao & Aletras (2023) erase embedding dimensions at
random instead, with probabilities given by the (min-max normalised) importance.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from xattr_nb.attribution.result import Attribution
from xattr_nb.checks import InputError, check_choice, check_float, check_int, check_target, check_tensor
from xattr_nb.kernels import (
    DEFAULT_MAX_BYTES,
    _logits,
    _target_scores,
    check_order,
    check_regions,
    cumulative_keep,
    grid_regions,
    masked_scores,
    masked_token_scores,
    real_positions,
)

ERASER_BINS: tuple[float, ...] = (0.01, 0.05, 0.10, 0.20, 0.50)

__all__ = [
    "ERASER_BINS",
    "CurveSet",
    "Curves",
    "aopc",
    "auc",
    "comprehensiveness",
    "energy_pointing_game",
    "grid_accuracy",
    "grid_cell_mass",
    "grid_localization",
    "highest_confidence",
    "insertion_deletion",
    "insertion_deletion_batch",
    "inside_mass",
    "kendall",
    "localization_summary",
    "mask_iou",
    "order_from_scores",
    "pointing_game",
    "region_scores",
    "soft_comprehensiveness",
    "soft_sufficiency",
    "spearman",
    "sufficiency",
    "token_curves",
    "token_deletion_curve",
    "topk_overlap",
]


# --------------------------------------------------------------------------------------------
# Area under a curve
# --------------------------------------------------------------------------------------------


def _vector(v: Any, name: str) -> torch.Tensor:
    if isinstance(v, (list, tuple)):
        v = torch.as_tensor(v, dtype=torch.float64)
    v = check_tensor(v, name, ndim=1, layout="[S]")
    if not v.is_floating_point():
        v = v.double()
    return v


def auc(x: Any, y: Any) -> float:
    """Area under the curve ``y(x)`` by the trapezoid rule (``sklearn.metrics.auc``).

    ``x`` must be monotonic (an area or fraction axis); both are 1-D with the same length >= 2.
    A linear curve ``y = x`` on [0, 1] has AUC 0.5; a constant ``c`` on [0, 1] has AUC ``c``.
    """
    from sklearn.metrics import auc as sk_auc

    x, y = _vector(x, "x"), _vector(y, "y")
    if x.shape != y.shape:
        raise InputError(f"`x` and `y` must have the same length; got {x.shape[0]} and {y.shape[0]}")
    if x.shape[0] < 2:
        raise InputError(f"`x` needs at least 2 points for an area; got {x.shape[0]}")
    d = torch.diff(x.double().cpu())
    if not (bool((d >= 0).all()) or bool((d <= 0).all())):
        raise InputError("`x` must be monotonic (increasing or decreasing)")
    return float(sk_auc(x.double().cpu().numpy(), y.double().cpu().numpy()))


# --------------------------------------------------------------------------------------------
# Insertion / deletion curves
# --------------------------------------------------------------------------------------------


@dataclass
class Curves:
    """Insertion and deletion curves of one input, on a shared area axis.

    - ``area`` ``[S]``: fraction of the input revealed (insertion) or removed (deletion), 0 -> 1.
    - ``insertion`` ``[S]``: score as parts are revealed, from score(empty) to score(full).
    - ``deletion`` ``[S]``: score as parts are removed, from score(full) to score(empty).
    - ``insertion_auc``, ``deletion_auc``: trapezoid areas (``sklearn.metrics.auc``) on ``area``.
    - ``protocol``: ``"region"``, ``"pixel"`` or ``"tokens"``; ``target``: the class scored;
      ``order``: the region / token order used (``None`` for the pixel protocol);
      ``n_forward``: model evaluations spent.
    """

    area: torch.Tensor
    insertion: torch.Tensor
    deletion: torch.Tensor
    protocol: str
    target: int
    order: torch.Tensor | None = None
    n_forward: int = 0
    insertion_auc: float = field(init=False)
    deletion_auc: float = field(init=False)

    def __post_init__(self) -> None:
        self.area = _vector(self.area, "area").detach().cpu()
        self.insertion = _vector(self.insertion, "insertion").detach().cpu()
        self.deletion = _vector(self.deletion, "deletion").detach().cpu()
        if not self.area.shape == self.insertion.shape == self.deletion.shape:
            raise InputError(
                f"`area`, `insertion` and `deletion` must have the same length; got "
                f"{self.area.shape[0]}, {self.insertion.shape[0]}, {self.deletion.shape[0]}"
            )
        self.insertion_auc = auc(self.area, self.insertion)
        self.deletion_auc = auc(self.area, self.deletion)

    def __repr__(self) -> str:
        return (
            f"Curves(protocol={self.protocol!r}, steps={self.area.shape[0]}, target={self.target}, "
            f"insertion_auc={self.insertion_auc:.4f}, deletion_auc={self.deletion_auc:.4f})"
        )


@dataclass
class CurveSet:
    """Curves of a batch of inputs: ``curves[i]`` per input, AUCs as tensors ``[B]`` and their means."""

    curves: list[Curves]

    def __post_init__(self) -> None:
        if not self.curves:
            raise InputError("`curves` is empty")

    def __len__(self) -> int:
        return len(self.curves)

    def __getitem__(self, i: int) -> Curves:
        return self.curves[i]

    @property
    def protocol(self) -> str:
        return self.curves[0].protocol

    @property
    def insertion_auc(self) -> torch.Tensor:
        return torch.tensor([c.insertion_auc for c in self.curves], dtype=torch.float64)

    @property
    def deletion_auc(self) -> torch.Tensor:
        return torch.tensor([c.deletion_auc for c in self.curves], dtype=torch.float64)

    @property
    def mean_insertion_auc(self) -> float:
        return float(self.insertion_auc.mean())

    @property
    def mean_deletion_auc(self) -> float:
        return float(self.deletion_auc.mean())

    @property
    def n_forward(self) -> int:
        return sum(c.n_forward for c in self.curves)

    def mean_curves(self) -> Curves:
        """The pointwise mean curves; needs every input to share the same area axis."""
        a0 = self.curves[0].area
        if any(c.area.shape != a0.shape or not torch.allclose(c.area, a0) for c in self.curves):
            raise InputError("mean_curves() needs every input on the same area axis (same regions / protocol)")
        return Curves(
            area=a0,
            insertion=torch.stack([c.insertion for c in self.curves]).mean(0),
            deletion=torch.stack([c.deletion for c in self.curves]).mean(0),
            protocol=self.protocol,
            target=-1,
            n_forward=self.n_forward,
        )

    def __repr__(self) -> str:
        return (
            f"CurveSet(n={len(self)}, protocol={self.protocol!r}, mean_insertion_auc={self.mean_insertion_auc:.4f}, "
            f"mean_deletion_auc={self.mean_deletion_auc:.4f})"
        )


def region_scores(attr_map: torch.Tensor, regions: torch.Tensor, reduce: str = "sum") -> torch.Tensor:
    """Score each region by reducing a pixel map inside it: ``[H, W] -> [R]`` (or ``[B, H, W] -> [B, R]``).

    ``reduce`` is ``"sum"`` (the convention that turns captum pixel maps into a region ordering),
    ``"abs_sum"`` or ``"mean"``.
    """
    check_choice(reduce, ("sum", "abs_sum", "mean"), "reduce")
    attr_map = check_tensor(attr_map, "attr_map", ndim=(2, 3), dtype="float", layout="[H, W] or [B, H, W]")
    regions = check_tensor(regions, "regions", ndim=3, dtype="bool", layout="[R, H, W]")
    if tuple(regions.shape[1:]) != tuple(attr_map.shape[-2:]):
        raise InputError(
            f"`regions` masks are {tuple(regions.shape[1:])} but `attr_map` is {tuple(attr_map.shape[-2:])}"
        )
    m = attr_map.abs() if reduce == "abs_sum" else attr_map
    r = regions.to(m)
    out = torch.einsum("...hw,rhw->...r", m, r)
    if reduce == "mean":
        out = out / r.sum((1, 2)).clamp_min(1)
    return out


def order_from_scores(scores: torch.Tensor) -> torch.Tensor:
    """Indices from the highest to the lowest score (``[R] -> [R]``); ties keep index order (stable)."""
    scores = check_tensor(scores, "scores", ndim=1, dtype="float", layout="[R]")
    return torch.argsort(-scores, stable=True)


def _one_image(x: Any) -> torch.Tensor:
    x = check_tensor(x, "x", ndim=(3, 4), dtype="float", layout="[C, H, W]")
    if x.ndim == 4:
        if x.shape[0] != 1:
            raise InputError(
                f"`x` must be one image [C, H, W]; got a batch of {x.shape[0]}: use insertion_deletion_batch"
            )
        x = x[0]
    return x


def _resolve_ranking(
    order_or_map: Any, hw: tuple[int, int], regions: torch.Tensor | None, target: Any
) -> tuple[str, torch.Tensor, torch.Tensor | None, int | None]:
    """Turn what the caller gave into ``(what, tensor, regions, target)``; ``what`` is map|scores|order."""
    if isinstance(order_or_map, Attribution):
        a = order_or_map
        if len(a) != 1:
            raise InputError(
                f"`order_or_map` holds {len(a)} examples; pass one (attr[i]) or use insertion_deletion_batch"
            )
        if target is None:
            target = int(a.target[0])
        if a.kind == "pixels":
            if tuple(a.scores.shape[1:]) != hw:
                raise InputError(f"`order_or_map` scores pixels {tuple(a.scores.shape[1:])} but the image is {hw}")
            return "map", a.scores[0], regions, target
        if a.kind == "regions":
            regions = regions if regions is not None else a.meta.get("regions")
            if regions is None:
                raise InputError("an Attribution of kind 'regions' needs `regions` (or meta['regions']) to be scored")
            return "scores", a.scores[0], regions, target
        if a.kind == "patches":
            hp, wp = a.scores.shape[1:]
            if regions is None:
                regions = grid_regions(hw[0], hw[1], hp, wp, device=a.scores.device)
            return "scores", a.scores[0].flatten(), regions, target
        raise InputError(f"`order_or_map` must score pixels, regions or patches; this Attribution scores {a.kind}")
    if isinstance(order_or_map, (list, tuple)):
        order_or_map = torch.as_tensor(order_or_map)
    t = check_tensor(order_or_map, "order_or_map", ndim=(1, 2), layout="[R] order/scores or [H, W] map")
    if t.ndim == 2:
        if not t.is_floating_point():
            raise InputError(f"`order_or_map` as a pixel map must be float; got {t.dtype}")
        if tuple(t.shape) != hw:
            raise InputError(f"`order_or_map` is a {tuple(t.shape)} map but the image is {hw}")
        return "map", t, regions, target
    if t.is_floating_point():
        return "scores", t, regions, target
    if t.dtype == torch.bool:
        raise InputError("`order_or_map` must be a region order (ints), region scores or a pixel map; got bool")
    return "order", t.long(), regions, target


def _pixel_keep(attr_map: torch.Tensor, pixel_step: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Keep-masks revealing the top ``i * pixel_step`` of the pixels, ``i = 0..ceil(1/pixel_step)``."""
    h, w = attr_map.shape
    n = h * w
    n_steps = math.ceil(1.0 / pixel_step - 1e-9)
    counts = torch.tensor([min(n, round(i * pixel_step * n)) for i in range(n_steps)] + [n])
    rank_of = torch.empty(n, dtype=torch.long, device=attr_map.device)
    rank_of[torch.argsort(-attr_map.flatten(), stable=True)] = torch.arange(n, device=attr_map.device)
    keep = rank_of.unsqueeze(0) < counts.to(attr_map.device).unsqueeze(1)
    return keep.view(-1, h, w), counts.double() / n


def insertion_deletion(
    model: Callable[[torch.Tensor], object],
    x: torch.Tensor,
    order_or_map: torch.Tensor | Attribution | Sequence[int],
    target: int | None = None,
    *,
    regions: torch.Tensor | None = None,
    protocol: str = "region",
    baseline: float | torch.Tensor = 0.0,
    pixel_step: float = 0.02,
    output: str = "prob",
    batch_size: int | None = None,
    max_bytes: int = DEFAULT_MAX_BYTES,
    show_progress: bool = False,
) -> Curves:
    """Insertion and deletion curves of one image ``x`` ``[C, H, W]`` for class ``target``.

    ``order_or_map`` says what to reveal first:

    - a region order (ints ``[R]``, a permutation) or region scores (floats ``[R]``) with ``regions``;
    - a pixel map ``[H, W]``: under ``protocol="region"`` summed inside each region
      (:func:`region_scores`), under ``protocol="pixel"`` ranked pixel by pixel;
    - an :class:`Attribution` of one example (kind ``pixels``, ``regions`` or ``patches``; patches
      become a grid of regions). Its ``target`` is used when ``target`` is ``None``.

    ``regions`` ``[R, H, W]`` is a boolean partition (disjoint, covering; see
    :func:`~xattr_nb.kernels.grid_regions`). Removed pixels take ``baseline`` (a scalar or a
    ``[C, H, W]`` image). The model (in eval mode) is called on batches ``[M, C, H, W]``; the
    scores are ``output`` = ``"prob"``, ``"logit"`` or ``"logprob"`` of ``target``.

    Cost: ``2R`` forward passes for ``R`` regions (the empty and full images are shared by both
    curves), ``2 * ceil(1 / pixel_step)`` under the pixel protocol (100 at 2%).
    """
    check_choice(protocol, ("region", "pixel"), "protocol")
    x = _one_image(x)
    hw = (int(x.shape[1]), int(x.shape[2]))
    what, ranking, regions, target = _resolve_ranking(order_or_map, hw, regions, target)
    if target is None:
        raise InputError("`target` is required (the class whose score the curves follow)")
    target = check_int(target, "target", low=0)
    order = None
    if protocol == "region":
        if regions is None:
            raise InputError("`regions` [R, H, W] is required for protocol='region' (e.g. kernels.grid_regions)")
        regions = check_regions(regions, hw=hw).to(x.device)
        n_regions = regions.shape[0]
        if what == "map":
            ranking = region_scores(ranking.to(x.device), regions)
        if what in ("map", "scores"):
            if ranking.shape[0] != n_regions:
                raise InputError(f"`order_or_map` scores {ranking.shape[0]} regions but `regions` has {n_regions}")
            ranking = order_from_scores(ranking)
        order = check_order(ranking, n_regions, "order_or_map").to(x.device)
        keep = cumulative_keep(regions, order)
        sizes = regions[order].sum((1, 2)).double().cpu()
        area = torch.cat([torch.zeros(1, dtype=torch.float64), sizes.cumsum(0)]) / (hw[0] * hw[1])
    else:
        if what != "map":
            raise InputError("protocol='pixel' ranks pixels: `order_or_map` must be a pixel map [H, W]")
        if regions is not None:
            raise InputError("`regions` is not used by protocol='pixel'; drop it or use protocol='region'")
        pixel_step = check_float(pixel_step, "pixel_step", low=1e-6, high=1.0)
        keep, area = _pixel_keep(ranking.to(x.device), pixel_step)
    s = keep.shape[0]
    # Deletion masks are the complements of the insertion masks; the two ends are shared.
    masks = torch.cat([keep, ~keep[1:-1]])
    scores = masked_scores(
        model,
        x,
        masks,
        target,
        baseline=baseline,
        output=output,
        batch_size=batch_size,
        max_bytes=max_bytes,
        show_progress=show_progress,
    ).double()
    if not bool(torch.isfinite(scores).all()):
        raise InputError("the model returned NaN or infinite scores on the masked images")
    insertion = scores[:s]
    deletion = torch.cat([scores[s - 1 : s], scores[s:], scores[:1]])
    return Curves(area, insertion, deletion, protocol, target, None if order is None else order.cpu(), masks.shape[0])


def _per_example(value: Any, b: int, name: str, item_ndim: int) -> list[Any]:
    """Split a batched argument into ``b`` items; a value with ``item_ndim`` dims is shared by all."""
    if value is None or isinstance(value, (int, float)):
        return [value] * b
    if isinstance(value, torch.Tensor):
        if value.ndim == item_ndim:
            return [value] * b
        if value.ndim == item_ndim + 1:
            if value.shape[0] != b:
                raise InputError(f"`{name}` has {value.shape[0]} entries but the batch has {b}")
            return list(value)
        raise InputError(f"`{name}` must be {item_ndim}-D (shared) or {item_ndim + 1}-D (one per image)")
    if isinstance(value, (list, tuple)):
        if len(value) != b:
            raise InputError(f"`{name}` has {len(value)} entries but the batch has {b}")
        return list(value)
    raise InputError(f"`{name}` has an unsupported type {type(value).__name__}")


def insertion_deletion_batch(
    model: Callable[[torch.Tensor], object],
    x: torch.Tensor,
    maps: Attribution | torch.Tensor | Sequence[Any],
    target: Any = None,
    *,
    regions: torch.Tensor | Sequence[torch.Tensor] | None = None,
    protocol: str = "region",
    baseline: float | torch.Tensor = 0.0,
    pixel_step: float = 0.02,
    output: str = "prob",
    batch_size: int | None = None,
    max_bytes: int = DEFAULT_MAX_BYTES,
    show_progress: bool = False,
) -> CurveSet:
    """:func:`insertion_deletion` for each image of ``x`` ``[B, C, H, W]``; returns a :class:`CurveSet`.

    ``maps`` is an :class:`Attribution` of ``B`` examples, a tensor ``[B, H, W]`` (pixel maps),
    ``[B, R]`` (region scores or orders), or a list of ``B`` such items. ``target`` is an int, a
    ``[B]`` tensor / list, or ``None`` to use the Attribution's targets. ``regions`` is one
    partition ``[R, H, W]`` shared by all images or one per image (``[B, R, H, W]`` or a list);
    ``baseline`` a scalar, a ``[C, H, W]`` image or ``[B, C, H, W]``. Mean AUCs are
    ``result.mean_insertion_auc`` and ``result.mean_deletion_auc``.
    """
    from xattr_nb.runtime import progress

    x = check_tensor(x, "x", ndim=4, dtype="float", layout="[B, C, H, W]")
    b = x.shape[0]
    if isinstance(maps, Attribution):
        if len(maps) != b:
            raise InputError(f"`maps` holds {len(maps)} examples but `x` has {b} images")
        items: list[Any] = [maps[i] for i in range(b)]
        if target is None:
            target = maps.target
    elif isinstance(maps, torch.Tensor):
        maps = check_tensor(maps, "maps", ndim=(2, 3), layout="[B, H, W] or [B, R]", finite=maps.is_floating_point())
        if maps.shape[0] != b:
            raise InputError(f"`maps` has {maps.shape[0]} entries but `x` has {b} images")
        items = list(maps)
    else:
        items = _per_example(list(maps) if isinstance(maps, (list, tuple)) else maps, b, "maps", 0)
    if target is None:
        raise InputError("`target` is required unless `maps` is an Attribution")
    if isinstance(target, (torch.Tensor, list, tuple)):
        targets = check_target(target, n_classes=2**62, batch=b).tolist()
    else:
        targets = [check_int(target, "target", low=0)] * b
    region_items = _per_example(regions, b, "regions", 3)
    base_items = _per_example(baseline, b, "baseline", 3)
    curves = [
        insertion_deletion(
            model,
            x[i],
            items[i],
            targets[i],
            regions=region_items[i],
            protocol=protocol,
            baseline=base_items[i],
            pixel_step=pixel_step,
            output=output,
            batch_size=batch_size,
            max_bytes=max_bytes,
        )
        for i in progress(range(b), disable=not show_progress, desc="insertion/deletion")
    ]
    return CurveSet(curves)


def highest_confidence(curve: Curves | Any, area: Any = None, max_area: float = 0.5) -> float:
    """Highest score an insertion curve reaches while at most ``max_area`` of the input is revealed.

    LiMA's "highest confidence @p": on misclassified images, how confident the model becomes in
    the true class from a small revealed part. ``curve`` is a :class:`Curves` (its insertion curve
    and area are used) or a 1-D tensor with ``area`` of the same length.
    """
    max_area = check_float(max_area, "max_area", low=0.0, high=1.0)
    if isinstance(curve, Curves):
        if area is not None:
            raise InputError("`area` is taken from the Curves; do not pass it too")
        y, a = curve.insertion, curve.area
    else:
        if area is None:
            raise InputError("`area` is required when `curve` is a tensor")
        y, a = _vector(curve, "curve"), _vector(area, "area")
        if y.shape != a.shape:
            raise InputError(f"`curve` and `area` must have the same length; got {y.shape[0]} and {a.shape[0]}")
    inside = a <= max_area + 1e-9
    if not bool(inside.any()):
        raise InputError(f"no point of the curve has area <= {max_area}; the smallest area is {float(a.min())}")
    return float(y[inside].max())


# --------------------------------------------------------------------------------------------
# Localization: does the map point at the object?
# --------------------------------------------------------------------------------------------


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


def pointing_game(attr_map: Any, mask_or_box: Any, *, tolerance: int = 0) -> torch.Tensor:
    """Pointing game (Zhang et al., 2016): is the map's maximum on the object? Bool, ``[]`` or ``[B]``.

    A hit when the maximal pixel lies inside the mask (or box ``(x0, y0, x1, y1)`` in pixels,
    end-exclusive), or within ``tolerance`` pixels of it (Euclidean; the paper uses 15 px at
    224 px). When several pixels tie for the maximum, *all* must be inside, so a constant map
    scores a hit only if the object covers the image.
    """
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


# --------------------------------------------------------------------------------------------
# Text: erasure metrics (ERASER) and token curves
# --------------------------------------------------------------------------------------------


def _token_batch(
    input_ids: Any, attr: Any, target: Any, attention_mask: Any
) -> tuple[torch.Tensor, torch.Tensor, list[int], torch.Tensor | None, torch.Tensor]:
    """Validate text inputs; return ids [B, T], scores [B, T], targets, attention mask, candidates [B, T].

    The candidates (tokens that may be erased) are the real tokens that are not special: an
    Attribution's ``mask`` is also the attention mask when none is given, and its ``special``
    tokens ([CLS], [SEP], <bos>) are kept, as in ERASER.
    """
    input_ids = check_tensor(input_ids, "input_ids", ndim=(1, 2), dtype="int", layout="[B, T]")
    if input_ids.ndim == 1:
        input_ids = input_ids.unsqueeze(0)
    b, t = input_ids.shape
    cand = None
    if isinstance(attr, Attribution):
        if attr.kind != "tokens":
            raise InputError(f"`attr` must score tokens; this Attribution scores {attr.kind}")
        scores = attr.scores
        cand = attr.mask
        if attention_mask is None and attr.mask is not None:
            attention_mask = attr.mask.long()
        if attr.special is not None:
            cand = ~attr.special if cand is None else cand & ~attr.special
        if target is None:
            target = attr.target
    else:
        scores = check_tensor(attr, "attr", ndim=(1, 2), dtype="float", layout="[B, T]")
        if scores.ndim == 1:
            scores = scores.unsqueeze(0)
    if tuple(scores.shape) != (b, t):
        raise InputError(f"`attr` scores have shape {tuple(scores.shape)} but `input_ids` is {(b, t)}")
    if attention_mask is not None:
        attention_mask = check_tensor(attention_mask, "attention_mask", ndim=(1, 2), layout="[B, T]")
        if attention_mask.ndim == 1:
            attention_mask = attention_mask.unsqueeze(0)
        if tuple(attention_mask.shape) != (b, t):
            raise InputError(f"`attention_mask` has shape {tuple(attention_mask.shape)} but `input_ids` is {(b, t)}")
        real = attention_mask.bool()
        cand = real if cand is None else cand & real
    if cand is None:
        cand = torch.ones(b, t, dtype=torch.bool, device=input_ids.device)
    cand = cand.to(input_ids.device)
    if not bool(cand.any(1).all()):
        b0 = int((~cand.any(1)).nonzero()[0])
        raise InputError(f"example {b0} has no real, non-special token to erase (its mask is all False)")
    if target is None:
        raise InputError("`target` is required unless `attr` is an Attribution")
    targets = check_target(target, n_classes=2**62, batch=b).tolist()
    return input_ids, scores, targets, attention_mask, cand


def _bins(bins: Sequence[float]) -> tuple[float, ...]:
    if not isinstance(bins, (list, tuple)) or len(bins) == 0:
        raise InputError("`bins` must be a non-empty sequence of fractions in (0, 1]")
    return tuple(check_float(q, f"bins[{i}]", low=1e-9, high=1.0) for i, q in enumerate(bins))


def _top_mask(scores: torch.Tensor, cand: torch.Tensor, k: int) -> torch.Tensor:
    """Bool ``[T]``: the ``k`` candidate positions with the highest scores (ties: earlier position)."""
    s = scores.masked_fill(~cand, float("-inf"))
    idx = torch.argsort(-s, stable=True)[:k]
    out = torch.zeros_like(cand)
    out[idx] = True
    return out


def _n_top(q: float, n: int) -> int:
    # ceil so that every bin erases at least one token; the epsilon absorbs 0.1 * 30 = 3.0000000000000004.
    return max(1, min(n, math.ceil(q * n - 1e-9)))


def _erasure(
    model: Callable[..., object],
    input_ids: Any,
    attr: Any,
    target: Any,
    *,
    replace_id: int | torch.Tensor,
    attention_mask: Any,
    bins: Sequence[float],
    position: int,
    output: str,
    batch_size: int | None,
    which: str,
) -> torch.Tensor:
    ids, scores, targets, am, cand = _token_batch(input_ids, attr, target, attention_mask)
    qs = _bins(bins)
    out = torch.empty(ids.shape[0], len(qs), dtype=torch.float64)
    for i in range(ids.shape[0]):
        n = int(cand[i].sum())
        tops = [_top_mask(scores[i], cand[i], _n_top(q, n)) for q in qs]
        # comprehensiveness erases the top tokens; sufficiency keeps only them (and the non-candidates)
        keeps = [~m for m in tops] if which == "comprehensiveness" else [m | ~cand[i] for m in tops]
        keep = torch.stack([torch.ones_like(cand[i]), *keeps])
        s = masked_token_scores(
            model,
            ids[i],
            keep,
            targets[i],
            replace_id=replace_id,
            attention_mask=None if am is None else am[i],
            position=position,
            output=output,
            batch_size=batch_size,
        ).double()
        out[i] = s[0] - s[1:]
    if not bool(torch.isfinite(out).all()):
        raise InputError("the model returned NaN or infinite scores on the erased inputs")
    return out


def comprehensiveness(
    model: Callable[..., object],
    input_ids: Any,
    attr: Attribution | torch.Tensor,
    target: Any = None,
    *,
    replace_id: int | torch.Tensor,
    attention_mask: Any = None,
    bins: Sequence[float] = ERASER_BINS,
    position: int = -1,
    output: str = "prob",
    batch_size: int | None = None,
    per_bin: bool = False,
) -> torch.Tensor:
    """ERASER comprehensiveness: how much the score drops when the top-k% tokens are erased. ``[B]``.

    For each bin ``q`` the ``ceil(q * n)`` (at least one) highest-scored of the ``n`` real tokens
    are replaced by ``replace_id``, and ``f(x) - f(x without them)`` is averaged over the bins
    (``per_bin=True`` returns ``[B, len(bins)]``). Higher is better: the tokens the attribution
    ranks first are the ones the model needs. The model is called as ``model(input_ids=...,
    attention_mask=...)``; see :func:`~xattr_nb.kernels.masked_token_scores` for ``position`` and
    ``output``. Padding (``attention_mask == 0`` or the Attribution's ``mask``) is never erased.
    Cost per example: ``1 + len(bins)`` forward passes.
    """
    out = _erasure(
        model,
        input_ids,
        attr,
        target,
        replace_id=replace_id,
        attention_mask=attention_mask,
        bins=bins,
        position=position,
        output=output,
        batch_size=batch_size,
        which="comprehensiveness",
    )
    return out if per_bin else out.mean(1)


def sufficiency(
    model: Callable[..., object],
    input_ids: Any,
    attr: Attribution | torch.Tensor,
    target: Any = None,
    *,
    replace_id: int | torch.Tensor,
    attention_mask: Any = None,
    bins: Sequence[float] = ERASER_BINS,
    position: int = -1,
    output: str = "prob",
    batch_size: int | None = None,
    per_bin: bool = False,
) -> torch.Tensor:
    """ERASER sufficiency: how much the score drops when *only* the top-k% tokens are kept. ``[B]``.

    Same bins and erasure as :func:`comprehensiveness`, but every other real token is replaced:
    ``f(x) - f(top tokens only)``, averaged over the bins. Lower is better (the top tokens alone
    suffice); it can be negative when the kept tokens alone raise the score.
    """
    out = _erasure(
        model,
        input_ids,
        attr,
        target,
        replace_id=replace_id,
        attention_mask=attention_mask,
        bins=bins,
        position=position,
        output=output,
        batch_size=batch_size,
        which="sufficiency",
    )
    return out if per_bin else out.mean(1)


def token_curves(
    model: Callable[..., object],
    input_ids: Any,
    attr: Attribution | torch.Tensor,
    target: Any = None,
    *,
    replace_id: int | torch.Tensor,
    attention_mask: Any = None,
    position: int = -1,
    output: str = "prob",
    batch_size: int | None = None,
) -> Curves:
    """Token insertion and deletion curves of one sequence (protocol ``"tokens"``).

    Step ``k = 0..n`` keeps only (insertion) or erases (deletion) the ``k`` highest-scored real
    tokens; ``area`` is ``k / n``. Cost: ``2n`` forward passes (the two ends are shared).
    """
    ids, scores, targets, am, cand = _token_batch(input_ids, attr, target, attention_mask)
    if ids.shape[0] != 1:
        raise InputError(f"`input_ids` holds {ids.shape[0]} sequences; token_curves takes one (loop over the batch)")
    cand = cand[0]
    n = int(cand.sum())
    order = torch.argsort(-scores[0].masked_fill(~cand, float("-inf")), stable=True)[:n]
    reveal = torch.zeros(n + 1, cand.shape[0], dtype=torch.bool, device=ids.device)
    for k in range(1, n + 1):
        reveal[k, order[:k]] = True
    ins_keep = reveal | ~cand  # non-candidate positions (padding, specials) are never touched
    del_keep = ~reveal
    keep = torch.cat([ins_keep, del_keep[1:-1]])
    s = masked_token_scores(
        model,
        ids[0],
        keep,
        targets[0],
        replace_id=replace_id,
        attention_mask=None if am is None else am[0],
        position=position,
        output=output,
        batch_size=batch_size,
    ).double()
    if not bool(torch.isfinite(s).all()):
        raise InputError("the model returned NaN or infinite scores on the erased inputs")
    insertion = s[: n + 1]
    deletion = torch.cat([s[n : n + 1], s[n + 1 :], s[:1]])
    area = torch.arange(n + 1, dtype=torch.float64) / n
    return Curves(area, insertion, deletion, "tokens", targets[0], order.cpu(), keep.shape[0])


def token_deletion_curve(
    model: Callable[..., object],
    input_ids: Any,
    attr: Attribution | torch.Tensor,
    target: Any = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(fraction erased [n+1], score [n+1])`` as the top tokens are erased one by one (see :func:`token_curves`)."""
    c = token_curves(model, input_ids, attr, target, **kwargs)
    return c.area, c.deletion


def aopc(
    model: Callable[..., object],
    input_ids: Any,
    attr: Attribution | torch.Tensor,
    target: Any = None,
    *,
    replace_id: int | torch.Tensor,
    k_max: int | None = None,
    attention_mask: Any = None,
    position: int = -1,
    output: str = "prob",
    batch_size: int | None = None,
) -> torch.Tensor:
    """Area over the perturbation curve (Samek et al., 2017) for deletion of the top tokens: ``[B]``.

    ``AOPC = 1/(K+1) * sum_{k=0..K} (f(x) - f(x with the top k tokens erased))``, ``K = k_max``
    (default: every real token). Higher is better.
    """
    ids, scores, targets, am, cand = _token_batch(input_ids, attr, target, attention_mask)
    out = torch.empty(ids.shape[0], dtype=torch.float64)
    for i in range(ids.shape[0]):
        n = int(cand[i].sum())
        k = n if k_max is None else min(n, check_int(k_max, "k_max", low=1))
        order = torch.argsort(-scores[i].masked_fill(~cand[i], float("-inf")), stable=True)[:k]
        keep = torch.ones(k + 1, cand.shape[1], dtype=torch.bool, device=ids.device)
        for j in range(1, k + 1):
            keep[j, order[:j]] = False
        s = masked_token_scores(
            model,
            ids[i],
            keep,
            targets[i],
            replace_id=replace_id,
            attention_mask=None if am is None else am[i],
            position=position,
            output=output,
            batch_size=batch_size,
        ).double()
        out[i] = (s[0] - s).mean()
    if not bool(torch.isfinite(out).all()):
        raise InputError("the model returned NaN or infinite scores on the erased inputs")
    return out


def _distance(p_full: torch.Tensor, p: torch.Tensor, target: int, how: str) -> torch.Tensor:
    if how == "prob":
        return (p_full[target] - p[:, target]).clamp_min(0)
    # The ReAGent repository's variant: sum of squared root differences divided by sqrt(2) (no outer root).
    return ((p_full.sqrt() - p.sqrt()) ** 2).sum(-1) / math.sqrt(2)


def _soft(
    model: nn.Module,
    input_ids: Any,
    attr: Any,
    target: Any,
    *,
    attention_mask: Any,
    embeddings: nn.Module | None,
    draws: int,
    seed: int,
    normalized: bool,
    distance: str,
    position: int,
    which: str,
) -> torch.Tensor:
    check_choice(distance, ("prob", "hellinger"), "distance")
    draws = check_int(draws, "draws", low=1)
    seed = check_int(seed, "seed", low=0)
    ids, scores, targets, am, cand = _token_batch(input_ids, attr, target, attention_mask)
    if embeddings is None:
        get = getattr(model, "get_input_embeddings", None)
        embeddings = get() if callable(get) else None
        if not isinstance(embeddings, nn.Module):
            raise InputError("`embeddings` is required: the model has no get_input_embeddings()")
    position = check_int(position, "position")
    real = torch.ones_like(cand) if am is None else am.bool()
    pos = real_positions(real, position)
    out = torch.empty(ids.shape[0], dtype=torch.float64)
    with torch.no_grad():
        for i in range(ids.shape[0]):
            c, r = cand[i], real[i]
            s = scores[i].double()
            lo, hi = s[c].min(), s[c].max()
            q = ((s - lo) / (hi - lo)).clamp(0, 1) if hi > lo else torch.ones_like(s)
            if which == "comprehensiveness":
                q = 1 - q
            q = torch.where(c, q, torch.ones_like(q))  # non-candidates are always kept
            e = embeddings(ids[i : i + 1])  # [1, T, D]
            am_i = None if am is None else am[i]

            def probs(
                emb: torch.Tensor, am_i: torch.Tensor | None = am_i, t_i: int = targets[i], p_i: int = int(pos[i])
            ) -> torch.Tensor:
                am_b = None if am_i is None else am_i.unsqueeze(0).expand(emb.shape[0], -1)
                logits = _logits(model(inputs_embeds=emb, attention_mask=am_b))
                _target_scores(logits, t_i, p_i, "logit")  # checks the shape, position and target
                if logits.ndim == 3:
                    logits = logits[:, p_i]
                return logits.double().softmax(-1)

            p_full = probs(e)[0]
            # Each example draws from its own stream seeded by `seed`, over its real positions only,
            # so its score does not depend on the batch it sits in nor on the padding around it.
            u = torch.zeros((draws, *e.shape[1:]), dtype=torch.float32)
            u[:, r.cpu()] = torch.rand((draws, int(r.sum()), e.shape[2]), generator=torch.Generator().manual_seed(seed))
            keep = u.to(e.device) < q.to(e.device)[None, :, None]
            d = _distance(p_full, probs(e * keep.to(e.dtype)), targets[i], distance).mean()
            zero = e * (~c).to(e.dtype)[None, :, None]
            s0 = 1 - _distance(p_full, probs(zero), targets[i], distance)[0]
            if which == "sufficiency":
                val = 1 - d
                out[i] = (val - s0).clamp_min(0) / (1 - s0).clamp_min(1e-12) if normalized else val
            else:
                out[i] = d / (1 - s0).clamp_min(1e-12) if normalized else d
    if not bool(torch.isfinite(out).all()):
        raise InputError("the model returned NaN or infinite scores on the soft-erased inputs")
    return out


def soft_sufficiency(
    model: nn.Module,
    input_ids: Any,
    attr: Attribution | torch.Tensor,
    target: Any = None,
    *,
    attention_mask: Any = None,
    embeddings: nn.Module | None = None,
    draws: int = 20,
    seed: int = 0,
    normalized: bool = True,
    distance: str = "prob",
    position: int = -1,
) -> torch.Tensor:
    """Soft (normalised) sufficiency of Zhao & Aletras (2023): ``[B]``, higher is better.

    Importance is min-max normalised per example to ``q`` in [0, 1]; each embedding dimension of
    token ``t`` is kept with probability ``q_t`` (dropped ones set to 0), ``draws`` times with a
    seeded generator. ``S = 1 - d(p(x), p(x_soft))`` averaged over draws, where ``d`` is
    ``max(0, p_y(x) - p_y(x_soft))`` (``distance="prob"``, the paper) or the ReAGent repository's
    ``sum (sqrt p - sqrt q)^2 / sqrt 2`` over the whole distribution (``"hellinger"``).
    ``normalized=True`` returns Soft-NS ``= max(0, S - S0) / (1 - S0)``, ``S0`` being the
    sufficiency of the input with every real token's embedding zeroed.

    The model must accept ``model(inputs_embeds=[B, T, D], attention_mask=...)`` (HF models do)
    and ``embeddings`` maps ids to ``[B, T, D]`` (default ``model.get_input_embeddings()``).
    """
    return _soft(
        model,
        input_ids,
        attr,
        target,
        attention_mask=attention_mask,
        embeddings=embeddings,
        draws=draws,
        seed=seed,
        normalized=normalized,
        distance=distance,
        position=position,
        which="sufficiency",
    )


def soft_comprehensiveness(
    model: nn.Module,
    input_ids: Any,
    attr: Attribution | torch.Tensor,
    target: Any = None,
    *,
    attention_mask: Any = None,
    embeddings: nn.Module | None = None,
    draws: int = 20,
    seed: int = 0,
    normalized: bool = True,
    distance: str = "prob",
    position: int = -1,
) -> torch.Tensor:
    """Soft (normalised) comprehensiveness of Zhao & Aletras (2023): ``[B]``, higher is better.

    As :func:`soft_sufficiency` but each dimension of token ``t`` is kept with probability
    ``1 - q_t`` (important tokens are erased): ``C = d(p(x), p(x_soft))`` averaged over draws;
    ``normalized=True`` returns Soft-NC ``= C / (1 - S0)``.
    """
    return _soft(
        model,
        input_ids,
        attr,
        target,
        attention_mask=attention_mask,
        embeddings=embeddings,
        draws=draws,
        seed=seed,
        normalized=normalized,
        distance=distance,
        position=position,
        which="comprehensiveness",
    )


# --------------------------------------------------------------------------------------------
# Agreement between two attributions
# --------------------------------------------------------------------------------------------


def _paired(a: Any, b: Any, *, ranks: bool = True) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per-example flattened score vectors of two attributions of the same inputs."""

    def scores_and_mask(v: Any, name: str) -> tuple[torch.Tensor, torch.Tensor | None]:
        if isinstance(v, Attribution):
            return v.scores, v.mask
        return check_tensor(v, name, ndim=(2, 3), dtype="float", layout="[B, ...] (a batch dimension first)"), None

    sa, ma = scores_and_mask(a, "a")
    sb, mb = scores_and_mask(b, "b")
    if sa.shape != sb.shape:
        raise InputError(f"`a` and `b` must score the same units; got shapes {tuple(sa.shape)} and {tuple(sb.shape)}")
    mask = ma if mb is None else (mb if ma is None else ma & mb)
    pairs = []
    for i in range(sa.shape[0]):
        x, y = sa[i].flatten(), sb[i].flatten()
        if mask is not None:
            x, y = x[mask[i]], y[mask[i]]
        if x.numel() < 2:
            raise InputError(f"example {i} has {x.numel()} scored unit(s); a rank correlation needs at least 2")
        for name, v in (("a", x), ("b", y)):
            if ranks and bool((v == v[0]).all()):
                raise InputError(f"`{name}` is constant on example {i}: its rank correlation is undefined")
        pairs.append((x.double().cpu().numpy(), y.double().cpu().numpy()))
    return pairs


def spearman(a: Attribution | torch.Tensor, b: Attribution | torch.Tensor) -> torch.Tensor:
    """Spearman rank correlation between two attributions, per example: ``[B]`` (``scipy.stats.spearmanr``).

    ``a`` and ``b`` are Attributions or tensors ``[B, ...]`` over the same units; token padding
    (an Attribution's ``mask``) is left out. Identical maps give 1, reversed ones -1.
    """
    from scipy.stats import spearmanr

    return torch.tensor([float(spearmanr(x, y).statistic) for x, y in _paired(a, b)], dtype=torch.float64)


def kendall(a: Attribution | torch.Tensor, b: Attribution | torch.Tensor) -> torch.Tensor:
    """Kendall's tau-b between two attributions, per example: ``[B]`` (``scipy.stats.kendalltau``)."""
    from scipy.stats import kendalltau

    return torch.tensor([float(kendalltau(x, y).statistic) for x, y in _paired(a, b)], dtype=torch.float64)


def topk_overlap(a: Attribution | torch.Tensor, b: Attribution | torch.Tensor, k: int) -> torch.Tensor:
    """Share of the ``k`` highest-scored units that two attributions agree on, per example: ``[B]`` in [0, 1].

    Ties are broken by position (stable sort), so the result is deterministic.
    """
    pairs = _paired(a, b, ranks=False)
    n = min(len(x) for x, _ in pairs)
    k = check_int(k, "k", low=1, high=n)
    out = []
    for x, y in pairs:
        tx = set(np.argsort(-x, kind="stable")[:k].tolist())
        ty = set(np.argsort(-y, kind="stable")[:k].tolist())
        out.append(len(tx & ty) / k)
    return torch.tensor(out, dtype=torch.float64)


# --------------------------------------------------------------------------------------------
# Grid localization (GridPG / DiFull): how much positive attribution lands in the target's cell
# --------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------
# Matching learned latents to ground-truth factors
# --------------------------------------------------------------------------------------------


def _matrix(x: Any, name: str) -> np.ndarray:
    arr = x.detach().cpu().double().numpy() if isinstance(x, torch.Tensor) else np.asarray(x, dtype=np.float64)
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


__all__ += ["matched_correlations", "mcc"]
