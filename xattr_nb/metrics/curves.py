"""Faithfulness curves over images: insertion/deletion, their AUCs and LiMA's highest confidence.

An attribution ranks parts of the image. *Insertion* starts from the baseline image (nothing
shown) and reveals the parts from most to least important; *deletion* starts from the full image
and removes them in the same order. Both curves are drawn against the revealed (resp. removed)
**area fraction**, from 0 to 1, and summarised by their area under the curve
(``sklearn.metrics.auc``). A good attribution makes the class score rise fast under insertion
(high AUC) and fall fast under deletion (low AUC). Two protocols:

- ``"region"``: the image is partitioned into disjoint regions; a region ordering (or a pixel map
  summed inside each region, :func:`region_scores`) is revealed one region per step.
- ``"pixel"``: pixels ranked by the map, revealed ``pixel_step`` (2%) of the image per step,
  i.e. 50 steps, as in the LiMA/SMDL evaluation scripts for pixel-map baselines.

:class:`Curves` (one input) and :class:`CurveSet` (a batch) are also what the token curves of
:mod:`xattr_nb.metrics.text` return.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from xattr_nb.attribution.result import Attribution
from xattr_nb.checks import InputError, check_choice, check_float, check_int, check_target, check_tensor
from xattr_nb.kernels import (
    DEFAULT_MAX_BYTES,
    check_order,
    check_regions,
    cumulative_keep,
    grid_regions,
    masked_scores,
)
from xattr_nb.metrics._common import _vector

__all__ = [
    "CurveSet",
    "Curves",
    "auc",
    "highest_confidence",
    "insertion_deletion",
    "insertion_deletion_batch",
    "order_from_scores",
    "region_scores",
]


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
