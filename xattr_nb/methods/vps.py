"""VPS: explaining one *detection* by searching the image regions that make the detector re-find it.

Chen et al., "Interpreting Object-level Foundation Models via Visual Precision Search", CVPR 2025
(arXiv:2411.16198; code github.com/RuoyuChen10/VPS, read, not copied).

An object-level model (a detector, a visual-grounding model) outputs many proposals, each a box
``b_i`` and class scores ``s_i``. To explain one detection ``(b_t, c)``, VPS scores a masked image
``x'`` with the *object score*

    sigma(x') = max_i IoU(b_i(x'), b_t) * s_{i,c}(x')

(:func:`xattr_nb.models.detection.detection_score`; ``mode="cls"`` uses ``1[IoU > 0.5]`` instead
of the IoU). Only outputs are used, so nothing depends on the model's internals (multimodal fusion,
900 queries...). The image is cut into regions (superpixels) and a set ``S`` of regions scores

    F(S) = lambda_1 * sigma(x_S) + lambda_2 * (1 - sigma(x_{V \\ S}))

*consistency* (the regions alone re-create the detection) plus *collaboration* (removing them
destroys it). A plain greedy search (:func:`xattr_nb.attribution.subsets.greedy_search`) orders all
regions by ``F``; the region at rank ``t`` gets ``v_t = -sum_{tau <= t} |F_tau - F_{tau-1}|``,
min-max normalised (``F_0 = F(empty) = sigma(empty) + 1 - sigma(x)``), so regions picked while ``F``
still moves are bright and the rest fall to about 0.

Removed pixels take the *mean colour* of the data (VPS zeroes the normalised tensor, which is the
mean colour; LiMA zeroes raw pixels, which is black): :func:`mean_colour`.

The steps, in the order the notebook calls them:
:func:`make_data` → :func:`train` → :func:`mean_colour` → :func:`select_targets` → :func:`partition`
→ :func:`object_scorer` → :func:`search` → :func:`attribution_map` (:func:`explain` chains the last
four) → :func:`baseline_maps` (D-RISE, Grad-CAM, IG, occlusion) → :func:`evaluate` (insertion /
deletion AUC of ``sigma`` on the area axis, pointing game, energy pointing game).

``scale="full"`` (Grounding DINO on COCO): :func:`load_grounding_detector` wraps a Hugging Face
zero-shot detector as a module returning per-class scores, and :func:`grounding_score` is ``sigma``
for it (class score = max over the class phrase's tokens); :func:`explain_score` runs VPS on any
such score function.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from xattr_nb import plots
from xattr_nb.attribution import attribute
from xattr_nb.attribution.result import Attribution
from xattr_nb.attribution.rise import drise
from xattr_nb.attribution.subsets import Ranking, SetScorer, Term, greedy_search, ranking_to_map
from xattr_nb.checks import InputError, check_choice, check_float, check_int, check_tensor
from xattr_nb.kernels import check_regions, grid_regions, slic_regions
from xattr_nb.metrics import Curves, energy_pointing_game, insertion_deletion, pointing_game
from xattr_nb.models.detection import (
    Detections,
    TinyGridDetector,
    box_iou,
    detection_score,
    evaluate_detector,
    train_detector,
)
from xattr_nb.models.io import check_model, eval_mode
from xattr_nb.runtime import Cost, progress
from xattr_nb.worlds.shapes import SceneData, make_scenes

__all__ = [
    "BASELINES",
    "ClassScores",
    "DetectionMetrics",
    "GroundingDetector",
    "ProposalScore",
    "Target",
    "attribution_map",
    "baseline_maps",
    "box_mask",
    "deletion_at_budget",
    "energy_pg",
    "evaluate",
    "explain",
    "explain_score",
    "grounding_score",
    "load_coco",
    "load_grounding_detector",
    "make_data",
    "mean_colour",
    "object_curves",
    "object_score",
    "object_scorer",
    "object_terms",
    "paint_regions",
    "partition",
    "plot_regions",
    "plot_scenes",
    "search",
    "select_targets",
    "train",
]

#: The baselines of the small-scale reproduction (spec §7.5), in plotting order.
BASELINES: tuple[str, ...] = ("D-RISE", "Grad-CAM", "IG", "Occlusion")


def _image(x: Any, name: str = "x") -> torch.Tensor:
    x = check_tensor(x, name, ndim=(3, 4), dtype="float", layout="[C, H, W]")
    if x.ndim == 4:
        if x.shape[0] != 1:
            raise InputError(f"`{name}` must be one image [C, H, W]; got a batch of {x.shape[0]}")
        x = x[0]
    return x


def _box(box: Any, name: str = "box") -> torch.Tensor:
    if isinstance(box, (list, tuple)):
        box = torch.as_tensor(box, dtype=torch.float32)
    box = check_tensor(box, name, shape=(4,), dtype="float", layout="[4] (x0, y0, x1, y1)")
    if not bool((box[2:] > box[:2]).all()):
        raise InputError(f"`{name}` needs x1 > x0 and y1 > y0; got {box.tolist()}")
    return box


def _score_fn(score_fn: Any) -> Callable[[torch.Tensor], torch.Tensor]:
    if not callable(score_fn):
        raise InputError(f"`score_fn` must be callable images [B, C, H, W] -> sigma [B]; got {type(score_fn).__name__}")
    return score_fn


# --------------------------------------------------------------------------------------------
# Data, detector, targets
# --------------------------------------------------------------------------------------------


def make_data(n_train: int = 1500, n_test: int = 300, *, size: int = 48, seed: int = 0) -> tuple[SceneData, SceneData]:
    """Training and held-out ShapesWorld scenes (1-3 objects of 3 classes on noise, 3 dot distractors).

    The held-out scenes are an independent draw (seed ``seed + 10_000``).
    """
    n_train = check_int(n_train, "n_train", low=1)
    n_test = check_int(n_test, "n_test", low=1)
    seed = check_int(seed, "seed", low=0, high=2**32 - 10_001)
    train_scenes = make_scenes(n_train, size=size, seed=seed)
    test_scenes = make_scenes(n_test, size=size, seed=seed + 10_000)
    return train_scenes, test_scenes


def train(
    scenes: SceneData, test: SceneData | None = None, *, epochs: int = 15, seed: int = 0
) -> tuple[TinyGridDetector, dict[str, float]]:
    """Train a :class:`~xattr_nb.models.detection.TinyGridDetector` on ``scenes``; report mAP@0.5,
    recall and precision on ``test`` (if given) as ``{"map", "recall", "precision"}``."""
    if not isinstance(scenes, SceneData):
        raise InputError(f"`scenes` must be SceneData from make_scenes; got {type(scenes).__name__}")
    det, _ = train_detector(
        scenes.images, scenes.boxes, scenes.labels, n_classes=len(scenes.classes), epochs=epochs, seed=seed
    )
    if test is None:
        return det, {}
    if not isinstance(test, SceneData):
        raise InputError(f"`test` must be SceneData from make_scenes; got {type(test).__name__}")
    ev = evaluate_detector(det, test.images, test.boxes, test.labels)
    return det, {"map": ev["map"], "recall": ev["recall"], "precision": ev["precision"]}


def mean_colour(images: torch.Tensor) -> torch.Tensor:
    """VPS's removal baseline: the per-channel mean colour of ``images`` ``[N, C, H, W]`` as an image ``[C, H, W]``.

    VPS multiplies the *normalised* tensor by the region mask, so removed pixels become the
    normalisation mean, i.e. the data's mean colour (not black).
    """
    x = check_tensor(images, "images", ndim=4, dtype="float", layout="[N, C, H, W]")
    return x.mean((0, 2, 3))[:, None, None].expand(x.shape[1:]).contiguous()


@dataclass
class Target:
    """One detection to explain: scene ``image`` of the data, object ``obj`` in it.

    ``x`` ``[C, H, W]``, ground-truth ``box`` ``[4]`` (xyxy pixels) and ``cls``; ``proposal`` is the
    proposal ``i*`` that attains ``sigma`` on the clean image (the gradient baselines' scalar),
    ``sigma`` the clean object score and ``iou`` that proposal's IoU with ``box``.
    """

    image: int
    obj: int
    x: torch.Tensor
    box: torch.Tensor
    cls: int
    proposal: int
    sigma: float
    iou: float


def _proposals(detector: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(boxes [P, 4], class scores [P, K], predicted class [P])`` of one image; for a closed-set
    detector the prediction includes background (index ``K``), so a background win is no detection."""
    out = detector(x[None])
    if isinstance(out, Detections):
        probs = out.probs[0]
        return out.boxes[0], probs[:, :-1], probs.argmax(-1)
    if isinstance(out, ClassScores):
        return out.boxes[0], out.scores[0], out.scores[0].argmax(-1)
    raise InputError(f"the detector must return Detections or ClassScores; got {type(out).__name__}")


@torch.no_grad()
def select_targets(
    detector: nn.Module,
    scenes: SceneData | tuple[torch.Tensor, Sequence[torch.Tensor], Sequence[torch.Tensor]],
    n: int = 15,
    *,
    iou_threshold: float = 0.5,
    min_sigma: float = 0.5,
    mode: str = "object",
) -> list[Target]:
    """The first ``n`` objects of ``scenes`` (scene by scene, object by object) that the detector finds
    *correctly and confidently*: the proposal ``i*`` maximising ``sigma`` overlaps the true box with
    IoU > ``iou_threshold``, predicts its class (argmax over classes, and background for a closed-set
    detector), and ``sigma(x) >= min_sigma`` (VPS explains confident correct detections; with
    ``min_sigma=0`` a correct but hesitant detection, e.g. IoU 0.6 x probability 0.7 = 0.42, is kept).

    ``scenes`` is :class:`~xattr_nb.worlds.shapes.SceneData` or ``(images [N, C, H, W], boxes, labels)``
    (e.g. from :func:`load_coco`).
    """
    check_model(detector, "detector")
    if isinstance(scenes, SceneData):
        images, boxes, labels = scenes.images, scenes.boxes, scenes.labels
    elif isinstance(scenes, tuple) and len(scenes) == 3:
        images, boxes, labels = scenes
        images = check_tensor(images, "scenes[0]", ndim=4, dtype="float", layout="[N, C, H, W]")
        if len(boxes) != images.shape[0] or len(labels) != images.shape[0]:
            raise InputError("`scenes` boxes and labels must hold one entry per image")
    else:
        raise InputError(
            f"`scenes` must be SceneData from make_scenes or (images, boxes, labels); got {type(scenes).__name__}"
        )
    n = check_int(n, "n", low=1)
    thr = check_float(iou_threshold, "iou_threshold", low=0.0, high=1.0)
    min_sigma = check_float(min_sigma, "min_sigma", low=0.0, high=1.0)
    check_choice(mode, ("object", "cls"), "mode")
    out: list[Target] = []
    with eval_mode(detector):
        for i in range(images.shape[0]):
            x = images[i]
            pb, scores, pred = _proposals(detector, x)
            for j, (box, lab) in enumerate(zip(boxes[i], labels[i], strict=True)):
                c = int(lab)
                iou = box_iou(pb, box.to(pb))
                s = (iou > thr).float() * scores[:, c] if mode == "cls" else iou * scores[:, c]
                p = int(torch.argmax(s))
                if float(iou[p]) > thr and int(pred[p]) == c and float(s[p]) >= min_sigma:
                    out.append(Target(i, j, x, box.clone().float(), c, p, float(s[p]), float(iou[p])))
                    if len(out) == n:
                        return out
    raise InputError(f"only {len(out)} correctly detected objects in {images.shape[0]} scenes; `n` = {n} asks for more")


def object_score(
    detector: nn.Module,
    box: torch.Tensor | Sequence[float],
    cls: int,
    *,
    mode: str = "object",
    proposal: int | None = None,
) -> Callable[[torch.Tensor], torch.Tensor]:
    """``sigma`` for either kind of detector: :func:`~xattr_nb.models.detection.detection_score` for a
    closed-set detector (``Detections``), :func:`grounding_score` for a :class:`GroundingDetector`."""
    if isinstance(detector, GroundingDetector):
        return grounding_score(detector, box, cls, mode=mode, proposal=proposal)
    return detection_score(detector, _box(box), cls, mode=mode, proposal=proposal)


# --------------------------------------------------------------------------------------------
# VPS: partition, set function, search, map
# --------------------------------------------------------------------------------------------


def partition(x: torch.Tensor, n_regions: int = 36, how: str = "slic", *, compactness: float = 30.0) -> torch.Tensor:
    """Regions ``[R, H, W]`` of one image: SLIC superpixels (VPS's choice, ``R`` close to ``n_regions``) or
    a square ``grid`` (``n_regions`` must be a square number)."""
    x = _image(x)
    check_choice(how, ("slic", "grid"), "how")
    n = check_int(n_regions, "n_regions", low=1, high=x.shape[1] * x.shape[2])
    if how == "slic":
        return slic_regions(x, n, compactness=compactness)
    side = math.isqrt(n)
    if side * side != n:
        raise InputError(f"`n_regions` must be a square number for how='grid'; got {n}")
    return grid_regions(x.shape[1], x.shape[2], side, side, device=x.device)


def object_terms() -> dict[str, Term]:
    """VPS's two terms over the object score ``sigma`` (what the scorer's ``fn`` returns, ``[M]``):
    ``cons = sigma(x_S)`` and ``colla = 1 - sigma(x_{V \\ S})``."""

    def _sigma(out: torch.Tensor | None, which: str) -> torch.Tensor:
        if out is None:
            raise InputError(
                "VPS's collaboration needs the complement images: build the SetScorer with complement=True"
            )
        if out.ndim != 1:
            raise InputError(f"the object score must return one value per image [M]; {which} got {tuple(out.shape)}")
        return out

    return {
        "cons": lambda kept, comp, members: _sigma(kept, "consistency"),
        "colla": lambda kept, comp, members: 1.0 - _sigma(comp, "collaboration"),
    }


def object_scorer(
    score_fn: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    regions: torch.Tensor,
    *,
    baseline: float | torch.Tensor = 0.0,
    lambdas: tuple[float, float] = (1.0, 1.0),
    batch_size: int | None = None,
) -> SetScorer:
    """VPS's set function ``F(S) = lambda_1 * sigma(x_S) + lambda_2 * (1 - sigma(x_{V \\ S}))`` as a
    :class:`~xattr_nb.attribution.subsets.SetScorer`: each call pushes the kept and the complement
    image of every subset through ``score_fn`` in one batch (``batch_size`` images, default by memory)."""
    score_fn = _score_fn(score_fn)
    if not isinstance(lambdas, (tuple, list)) or len(lambdas) != 2:
        raise InputError(f"`lambdas` must be a pair (lambda_cons, lambda_colla); got {lambdas!r}")
    l1, l2 = check_float(lambdas[0], "lambdas[0]", low=0.0), check_float(lambdas[1], "lambdas[1]", low=0.0)
    if l1 == 0 and l2 == 0:
        raise InputError("`lambdas` are both 0: F would be constant")
    return SetScorer(
        score_fn,
        _image(x),
        regions,
        object_terms(),
        {"cons": l1, "colla": l2},
        baseline=baseline,
        complement=True,
        batch_size=batch_size,
    )


def search(scorer: SetScorer, *, k: int | None = None, show_progress: bool = False) -> Ranking:
    """Plain greedy over all regions (VPS uses ``k = m``), scoring ``F(empty)`` first for the map's ``F_0``.

    Cost: ``1 + R(R+1)/2`` subset evaluations, two images each (kept and complement).
    """
    if not isinstance(scorer, SetScorer):
        raise InputError(f"`scorer` must be a SetScorer (see object_scorer); got {type(scorer).__name__}")
    return greedy_search(scorer, scorer.n_regions, k=k, evaluate_empty=True, show_progress=show_progress)


def attribution_map(ranking: Ranking, regions: torch.Tensor) -> torch.Tensor:
    """VPS's map ``[H, W]`` in [0, 1]: the region at rank ``t`` gets ``-sum_{tau<=t} |F_tau - F_{tau-1}|``
    (``F_0 = F(empty)``), min-max normalised (``evals/eval_energy_pg.py::add_value``)."""
    if not isinstance(ranking, Ranking):
        raise InputError(f"`ranking` must be a Ranking from search(); got {type(ranking).__name__}")
    if ranking.start_score is None:
        raise InputError("`ranking` has no F(empty): search with evaluate_empty=True (vps.search does)")
    return ranking_to_map(ranking, regions, how="cumulative_gain")


def explain_score(
    score_fn: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    regions: torch.Tensor,
    *,
    baseline: float | torch.Tensor = 0.0,
    lambdas: tuple[float, float] = (1.0, 1.0),
    batch_size: int | None = None,
    show_progress: bool = False,
) -> Attribution:
    """VPS for any object score ``score_fn(images [B, C, H, W]) -> sigma [B]`` on one image ``x``.

    Returns a pixel :class:`~xattr_nb.attribution.result.Attribution` ``[1, H, W]`` (target 0: the
    explained detection) whose ``meta`` holds ``order``, ``ranking`` and ``regions``; the cost counts
    the images pushed through ``score_fn``.
    """
    x = _image(x)
    regions = check_regions(regions, hw=tuple(x.shape[1:]))
    scorer = object_scorer(score_fn, x, regions, baseline=baseline, lambdas=lambdas, batch_size=batch_size)
    ranking = search(scorer, show_progress=show_progress)
    m = attribution_map(ranking, regions)
    return Attribution(
        scores=m[None].float(),
        kind="pixels",
        method="vps",
        target=torch.zeros(1, dtype=torch.long),
        cost=ranking.cost,
        meta={"regions": regions, "order": ranking.order, "ranking": ranking, "lambdas": tuple(lambdas)},
    )


def explain(
    detector: nn.Module,
    x: torch.Tensor,
    box: torch.Tensor | Sequence[float],
    cls: int,
    *,
    regions: torch.Tensor | None = None,
    n_regions: int = 36,
    how: str = "slic",
    mode: str = "object",
    baseline: float | torch.Tensor = 0.0,
    lambdas: tuple[float, float] = (1.0, 1.0),
    batch_size: int | None = None,
    show_progress: bool = False,
) -> Attribution:
    """Explain the detection ``(box, cls)`` of ``detector`` on one image ``x`` ``[C, H, W]`` with VPS.

    Chains :func:`partition` (unless ``regions`` are given), ``sigma`` =
    :func:`~xattr_nb.models.detection.detection_score` in ``mode`` (``"object"``: IoU x class
    probability; ``"cls"``: ``1[IoU > 0.5]`` x class probability), :func:`object_scorer`,
    :func:`search` and :func:`attribution_map`.
    """
    x = _image(x)
    box = _box(box)
    regions = partition(x, n_regions, how) if regions is None else regions
    sigma = object_score(check_model(detector, "detector"), box, cls, mode=mode)
    with eval_mode(detector):
        a = explain_score(
            sigma, x, regions, baseline=baseline, lambdas=lambdas, batch_size=batch_size, show_progress=show_progress
        )
    a.meta["mode"] = mode
    return a


# --------------------------------------------------------------------------------------------
# Baselines: D-RISE and captum's gradient / occlusion methods on sigma_{i*}
# --------------------------------------------------------------------------------------------


class ProposalScore(nn.Module):
    """``sigma_{i*}(x) = IoU(b_{i*}(x), b_t) * p_{i*}(c | x)`` as a one-logit model ``[B, 1]``.

    The max over proposals in ``sigma`` is not differentiable in a useful way, so the gradient
    baselines follow the proposal ``i*`` that wins on the clean image (the spec's choice, as in
    ODAM). As an ``nn.Module`` returning ``[B, 1]``, captum methods reach it through
    :func:`xattr_nb.attribution.attribute` with ``target=0``; the detector is the submodule ``det``
    (Grad-CAM: ``layer="det.<name>"``).
    """

    def __init__(self, detector: nn.Module, box: torch.Tensor | Sequence[float], cls: int, proposal: int) -> None:
        super().__init__()
        self.det = detector
        self.score = object_score(detector, box, cls, proposal=proposal)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.score(x)[:, None]


def _layer_name(root: nn.Module, layer: nn.Module) -> str:
    return next(n for n, m in root.named_modules() if m is layer)


def baseline_maps(
    detector: nn.Module,
    target: Target,
    *,
    methods: Sequence[str] = BASELINES,
    baseline: torch.Tensor | float = 0.0,
    drise_masks: int = 500,
    drise_grid: int = 6,
    ig_steps: int = 32,
    occlusion_window: int = 8,
    occlusion_stride: int = 4,
    seed: int = 0,
) -> dict[str, Attribution]:
    """Maps ``[1, H, W]`` of the spec's baselines for one target, each with its cost.

    - ``"D-RISE"``: :func:`xattr_nb.attribution.rise.drise` with ``drise_masks`` smooth random
      masks on a ``drise_grid`` grid, weighted by the same ``sigma`` (IoU x class prob) as VPS;
    - ``"Grad-CAM"`` (ODAM-like), ``"IG"``, ``"Occlusion"``: captum's through
      :func:`~xattr_nb.attribution.attribute` on :class:`ProposalScore` (IG from the mean-colour
      ``baseline``; occlusion with a ``occlusion_window`` square window, stride ``occlusion_stride``).
    """
    if not isinstance(target, Target):
        raise InputError(f"`target` must be a Target from select_targets; got {type(target).__name__}")
    if isinstance(methods, str) or not all(m in BASELINES for m in methods) or not methods:
        raise InputError(f"`methods` must be a non-empty subset of {BASELINES}; got {methods!r}")
    x = target.x[None]
    model = ProposalScore(detector, target.box, target.cls, target.proposal).eval()
    out: dict[str, Attribution] = {}
    for name in methods:
        if name == "D-RISE":
            sigma = object_score(detector, target.box, target.cls)
            t0 = time.perf_counter()
            m = drise(sigma, target.x, n_masks=drise_masks, grid=drise_grid, baseline=baseline, seed=seed)
            cost = Cost(forward=drise_masks, backward=0, wall_s=time.perf_counter() - t0)
            out[name] = Attribution(m[None], "pixels", "drise", torch.zeros(1, dtype=torch.long), cost=cost)
        elif name == "Grad-CAM":
            layer = "det." + _layer_name(detector, detector.last_conv) if hasattr(detector, "last_conv") else None
            out[name] = attribute(model, x, 0, method="grad_cam", layer=layer)
        elif name == "IG":
            out[name] = attribute(model, x, 0, method="integrated_gradients", baselines=baseline, n_steps=ig_steps)
        else:
            out[name] = attribute(
                model, x, 0, method="occlusion", window=occlusion_window, stride=occlusion_stride, baselines=baseline
            )
    return out


# --------------------------------------------------------------------------------------------
# Evaluation
# --------------------------------------------------------------------------------------------


class _AsLogit(nn.Module):
    """A score function ``[B] `` viewed as a one-logit model ``[B, 1]`` (the metrics read logits)."""

    def __init__(self, score_fn: Callable[[torch.Tensor], torch.Tensor]) -> None:
        super().__init__()
        self.score_fn = score_fn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.score_fn(x)[:, None]


def object_curves(
    score_fn: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    order_or_map: torch.Tensor | Attribution,
    regions: torch.Tensor,
    *,
    baseline: float | torch.Tensor = 0.0,
) -> Curves:
    """Insertion and deletion curves of the object score ``sigma`` on the area axis (region protocol):
    :func:`xattr_nb.metrics.insertion_deletion` with ``sigma`` read as the model's single logit.

    A pixel map is summed inside each region to order the regions (the protocol the VPS evaluator
    uses for pixel-map baselines when they are scored on regions); an order ``[R]`` is used as is.
    """
    score_fn = _score_fn(score_fn)
    return insertion_deletion(
        _AsLogit(score_fn), _image(x), order_or_map, 0, regions=regions, baseline=baseline, output="logit"
    )


def _minmax(m: torch.Tensor) -> torch.Tensor:
    lo, hi = m.min(), m.max()
    return (m - lo) / (hi - lo) if hi > lo else torch.zeros_like(m)


def box_mask(box: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
    """Bool mask ``[H, W]`` of the pixels inside ``box`` (xyxy pixels, end-exclusive, as the VPS evaluator slices)."""
    box = _box(box)
    if not isinstance(hw, (tuple, list)) or len(hw) != 2:
        raise InputError(f"`hw` must be (H, W); got {hw!r}")
    hw = (check_int(hw[0], "hw[0]", low=1), check_int(hw[1], "hw[1]", low=1))
    rows = torch.arange(hw[0], dtype=box.dtype, device=box.device)
    cols = torch.arange(hw[1], dtype=box.dtype, device=box.device)
    iny = (rows >= box[1]) & (rows < box[3])
    inx = (cols >= box[0]) & (cols < box[2])
    return iny[:, None] & inx[None, :]


def energy_pg(attr_map: torch.Tensor, box: torch.Tensor | Sequence[float]) -> float:
    """VPS's energy point game: min-max normalise the map to [0, 1], then the share of its mass inside
    the box (:func:`xattr_nb.metrics.energy_pointing_game` on the normalised map). The normalisation
    (as in ``evals/eval_energy_pg.py``) removes a constant floor, so signed and unsigned maps compare."""
    m = check_tensor(attr_map, "attr_map", ndim=2, dtype="float", layout="[H, W]")
    return float(energy_pointing_game(_minmax(m.double()), _box(box).double()))


@dataclass
class DetectionMetrics:
    """Per-target metrics of every method's detection explanations: ``values[metric][method]`` is a ``[T]`` tensor.

    Metrics: ``insertion`` / ``deletion`` (AUC of ``sigma`` on the area axis), ``pointing``
    (:func:`xattr_nb.metrics.pointing_game` with ``ties="any"``, VPS's evaluator: 0/1) and ``energy`` (:func:`energy_pg`, share of the min-max normalised
    map's mass inside the box).
    ``curves[method]`` holds the per-target :class:`~xattr_nb.metrics.Curves`; ``cost[method]`` the
    summed forward/backward passes.
    """

    values: dict[str, dict[str, torch.Tensor]]
    curves: dict[str, list[Curves]] = field(default_factory=dict)
    cost: dict[str, Cost] = field(default_factory=dict)

    @property
    def methods(self) -> list[str]:
        return list(self.values["insertion"])

    def mean(self, metric: str) -> dict[str, float]:
        check_choice(metric, tuple(self.values), "metric")
        return {m: float(v.double().mean()) for m, v in self.values[metric].items()}

    def table(self) -> dict[str, dict[str, float]]:
        """``{method: {metric: mean}}`` (a DataFrame-ready dict)."""
        return {m: {k: float(self.values[k][m].double().mean()) for k in self.values} for m in self.methods}


def evaluate(
    detector: nn.Module,
    targets: Sequence[Target],
    maps: Mapping[str, Sequence[Attribution | torch.Tensor]],
    regions: Sequence[torch.Tensor],
    *,
    baseline: float | torch.Tensor = 0.0,
    mode: str = "object",
    show_progress: bool = False,
) -> DetectionMetrics:
    """Score every method's maps on every target: insertion/deletion AUC of ``sigma`` (``mode``) over
    the target's ``regions``, pointing game and energy pointing game against the true box.

    ``maps[method][t]`` is target ``t``'s map (an Attribution of one image or ``[H, W]``). VPS's maps
    carry their greedy order in ``meta["order"]``, which is used as is; the others are summed per region.
    """
    if not isinstance(maps, Mapping) or not maps:
        raise InputError("`maps` must be a non-empty dict: method -> one map per target")
    targets = list(targets)
    if not targets or not all(isinstance(t, Target) for t in targets):
        raise InputError("`targets` must be a non-empty list of Target (see select_targets)")
    if len(regions) != len(targets):
        raise InputError(f"`regions` must hold one partition per target ({len(targets)}); got {len(regions)}")
    for k, v in maps.items():
        if len(v) != len(targets):
            raise InputError(f"`maps[{k!r}]` has {len(v)} maps but there are {len(targets)} targets")
    names = ("insertion", "deletion", "pointing", "energy")
    values: dict[str, dict[str, list[float]]] = {n: {m: [] for m in maps} for n in names}
    curves: dict[str, list[Curves]] = {m: [] for m in maps}
    cost: dict[str, Cost] = {}
    with eval_mode(check_model(detector, "detector")):
        for t, tgt in progress(list(enumerate(targets)), disable=not show_progress, desc="evaluate"):
            sigma = object_score(detector, tgt.box, tgt.cls, mode=mode)
            for m, seq in maps.items():
                a = seq[t]
                if isinstance(a, Attribution):
                    pix = a.scores[0]
                    ranking = a.meta.get("order", a.scores[0])
                    c = cost.get(m, Cost())
                    cost[m] = Cost(c.forward + a.cost.forward, c.backward + a.cost.backward, c.wall_s + a.cost.wall_s)
                else:
                    pix = ranking = check_tensor(a, f"maps[{m!r}][{t}]", ndim=2, dtype="float", layout="[H, W]")
                cur = object_curves(sigma, tgt.x, ranking, regions[t], baseline=baseline)
                curves[m].append(cur)
                values["insertion"][m].append(cur.insertion_auc)
                values["deletion"][m].append(cur.deletion_auc)
                values["pointing"][m].append(float(pointing_game(pix.float(), tgt.box, ties="any")))
                values["energy"][m].append(energy_pg(pix.float(), tgt.box))
    tensors = {n: {m: torch.tensor(v, dtype=torch.float64) for m, v in d.items()} for n, d in values.items()}
    return DetectionMetrics(tensors, curves, cost)


def _same_cut(c: Curves, r: Curves, k: int) -> bool:
    """The first ``k`` deletion steps of two curves remove the same areas and leave the same ``sigma`` (within 1e-4)."""
    a, b = c.area[1 : k + 1].double(), r.area[1 : k + 1].double()
    return bool(
        torch.allclose(a, b, atol=1e-9)
        and torch.allclose(c.deletion[1 : k + 1].double(), r.deletion[1 : k + 1].double(), atol=1e-4)
    )


def deletion_at_budget(metrics: DetectionMetrics, k: int = 1, *, reference: str = "VPS") -> dict[str, dict[str, float]]:
    """Deletion read at a fixed small budget, per method (means over targets): the share of ``sigma(x)``
    left after removing only the first ``k`` regions of the method's order (``sigma_left``), the area
    those regions cover (``area_removed``), and the share of targets whose first ``k`` deletion steps
    match ``reference``'s (``same_cut_as_<reference>``: the same areas removed and ``sigma`` within 1e-4
    at each step, i.e. the same regions removed first, to the curve's precision).

    A control for deletion AUCs that tie at a floor: methods that remove the same first region and
    lose the detection at once cannot be ranked by deletion.
    """
    if not isinstance(metrics, DetectionMetrics):
        raise InputError(f"`metrics` must be the DetectionMetrics of evaluate(...); got {type(metrics).__name__}")
    k = check_int(k, "k", low=1)
    check_choice(reference, tuple(metrics.curves), "reference")
    ref = metrics.curves[reference]
    out: dict[str, dict[str, float]] = {}
    for m, curves in metrics.curves.items():
        if any(len(c.deletion) - 1 <= k for c in curves):
            raise InputError(f"`k` = {k} removes every region of some target of {m!r}; use a smaller k")
        left = [float(c.deletion[k] / c.deletion[0]) if float(c.deletion[0]) > 0 else float("nan") for c in curves]
        out[m] = {
            "sigma_left": sum(left) / len(left),
            "area_removed": sum(float(c.area[k]) for c in curves) / len(curves),
            f"same_cut_as_{reference}": sum(_same_cut(c, r, k) for c, r in zip(curves, ref, strict=True)) / len(curves),
        }
    return out


# --------------------------------------------------------------------------------------------
# Figures specific to detection (boxes drawn on images, superpixels); the rest come from xattr_nb.plots
# --------------------------------------------------------------------------------------------


def _draw_box(ax: Any, box: Sequence[float], label: str | None = None, color: str = "lime") -> None:
    from matplotlib.patches import Rectangle

    x0, y0, x1, y1 = (float(v) for v in box)
    ax.add_patch(Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False, color=color, lw=1.2))
    if label:
        ax.text(
            x0 - 0.5,
            y0 - 1.5,
            label,
            color=color,
            fontsize=9,
            bbox={"facecolor": "black", "alpha": 0.6, "pad": 1, "lw": 0},
        )


def plot_scenes(
    images: torch.Tensor,
    boxes: Sequence[torch.Tensor],
    labels: Sequence[torch.Tensor],
    classes: Sequence[str],
    *,
    n: int = 3,
    cell: float = 1.8,
) -> Any:
    """The first ``n`` scenes with their ground-truth boxes and class names (a figure, shown in notebooks)."""
    images = check_tensor(images, "images", ndim=4, dtype="float", layout="[N, C, H, W]")
    n = min(check_int(n, "n", low=1), images.shape[0])
    if len(boxes) < n or len(labels) < n:
        raise InputError(f"`boxes` and `labels` must hold one entry per shown scene ({n})")
    with plots.style():
        fig = plots.figure(cell * n, cell + 0.2)
        for i, ax in enumerate(fig.subplots(1, n, squeeze=False)[0]):
            ax.imshow(images[i].detach().permute(1, 2, 0).clamp(0, 1).cpu().numpy())
            for b, lab in zip(boxes[i].tolist(), labels[i].tolist(), strict=True):
                _draw_box(ax, b, str(classes[int(lab)]))
            ax.set_xticks([])
            ax.set_yticks([])
            ax.grid(False)
    return plots.show(fig)


def paint_regions(values: torch.Tensor, regions: torch.Tensor) -> torch.Tensor:
    """A map ``[H, W]`` where every pixel of region ``r`` shows ``values[r]`` (``values`` ``[R]``)."""
    regions = check_regions(regions)
    values = check_tensor(values, "values", shape=(regions.shape[0],), layout="[R]")
    return torch.einsum("r,rhw->hw", values.float().cpu(), regions.float().cpu())


def plot_regions(
    x: torch.Tensor, regions: torch.Tensor, box: torch.Tensor | Sequence[float], *, title: str = ""
) -> Any:
    """The image with the target box, beside its partition (one colour per region)."""
    x = _image(x)
    regions = check_regions(regions, hw=tuple(x.shape[1:]))
    ids = paint_regions(torch.arange(regions.shape[0], dtype=torch.float32), regions)
    with plots.style():
        fig = plots.figure(4.4, 2.4)
        ax1, ax2 = fig.subplots(1, 2)
        ax1.imshow(x.detach().permute(1, 2, 0).clamp(0, 1).cpu().numpy())
        ax2.imshow(ids.numpy(), cmap="tab20", interpolation="nearest")
        for ax, name in ((ax1, title or "image"), (ax2, f"{regions.shape[0]} regions")):
            _draw_box(ax, _box(box).tolist())
            ax.set_title(name)
            ax.set_xticks([])
            ax.set_yticks([])
            ax.grid(False)
    return plots.show(fig)


# --------------------------------------------------------------------------------------------
# Full scale: Grounding DINO (or any HF zero-shot detector) through transformers
# --------------------------------------------------------------------------------------------


@dataclass
class ClassScores:
    """Proposals of an open-vocabulary detector: ``boxes`` ``[B, Q, 4]`` xyxy pixels and per-class
    scores ``scores`` ``[B, Q, K]`` in [0, 1] (max over each class phrase's tokens of the sigmoid)."""

    boxes: torch.Tensor
    scores: torch.Tensor


class GroundingDetector(nn.Module):
    """A Hugging Face zero-shot object detector (``GroundingDinoForObjectDetection``) as a module from
    images ``[B, 3, H, W]`` in [0, 1] to :class:`ClassScores` for a fixed list of class names.

    The prompt is the class names joined by ``" . "`` (the paper's COCO prompt). Each class's score
    on a query is the max over its phrase's tokens of ``sigmoid(logits)``, as in VPS's grounding code.
    Images are normalised with the processor's mean and std (so masking in [0, 1] with the mean
    colour equals VPS's zeroing of the normalised tensor) and resized to ``image_size``.
    """

    def __init__(self, model: nn.Module, processor: Any, classes: Sequence[str], *, image_size: int | None = None):
        super().__init__()
        if not classes or any(not isinstance(c, str) or not c.strip() for c in classes):
            raise InputError(f"`classes` must be non-empty class names; got {classes!r}")
        self.model = model.eval()
        self.classes = tuple(classes)
        self.n_classes = len(self.classes)
        prompt = " . ".join(c.strip().lower() for c in self.classes) + " ."
        enc = processor.tokenizer(prompt, return_tensors="pt")
        self.register_buffer("input_ids", enc["input_ids"], persistent=False)
        self.register_buffer("attention_mask", enc["attention_mask"], persistent=False)
        ip = processor.image_processor
        self.register_buffer("mean", torch.tensor(ip.image_mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(ip.image_std).view(1, 3, 1, 1), persistent=False)
        self.image_size = image_size
        # Token positions of each class phrase: tokens between the separators " . ".
        ids = enc["input_ids"][0].tolist()
        sep = set(processor.tokenizer.convert_tokens_to_ids(["."]))
        special = set(processor.tokenizer.all_special_ids)
        spans: list[list[int]] = [[]]
        for pos, tok in enumerate(ids):
            if tok in sep:
                spans.append([])
            elif tok not in special:
                spans[-1].append(pos)
        spans = [s for s in spans if s]
        if len(spans) != self.n_classes:
            raise InputError(f"the prompt splits into {len(spans)} phrases but there are {self.n_classes} classes")
        member = torch.zeros(self.n_classes, len(ids), dtype=torch.bool)
        for k, s in enumerate(spans):
            member[k, s] = True
        self.register_buffer("member", member, persistent=False)

    def forward(self, images: torch.Tensor) -> ClassScores:
        x = check_tensor(images, "images", ndim=4, dtype="float", layout="[B, 3, H, W]")
        b, _, h, w = x.shape
        if self.image_size is not None:
            x = nn.functional.interpolate(
                x, size=(self.image_size, self.image_size), mode="bilinear", align_corners=False
            )
        x = (x - self.mean) / self.std
        out = self.model(
            pixel_values=x,
            input_ids=self.input_ids.expand(b, -1),
            attention_mask=self.attention_mask.expand(b, -1),
            pixel_mask=torch.ones(b, x.shape[2], x.shape[3], dtype=torch.long, device=x.device),
        )
        prob = out.logits.sigmoid()  # [B, Q, T]
        t = min(prob.shape[-1], self.member.shape[1])
        m = self.member[:, :t]
        scores = (prob[..., None, :t] * m).masked_fill(~m, -1.0).amax(-1)  # [B, Q, K]
        cx, cy, bw, bh = out.pred_boxes.unbind(-1)
        boxes = torch.stack([(cx - bw / 2) * w, (cy - bh / 2) * h, (cx + bw / 2) * w, (cy + bh / 2) * h], -1)
        return ClassScores(boxes, scores.clamp_min(0.0))


def grounding_score(
    detector: nn.Module,
    box: torch.Tensor | Sequence[float],
    cls: int,
    *,
    mode: str = "object",
    iou_threshold: float = 0.5,
    proposal: int | None = None,
) -> Callable[[torch.Tensor], torch.Tensor]:
    """``sigma`` for a :class:`GroundingDetector` (or any module returning :class:`ClassScores`):
    ``max_q IoU(b_q, box) * s_{q, cls}``; ``mode="cls"`` uses ``1[IoU > iou_threshold]``;
    ``proposal=q`` scores only query ``q`` (the gradient baselines' fixed ``i*``)."""
    check_model(detector, "detector")
    box = _box(box)
    k = getattr(detector, "n_classes", None)
    cls = check_int(cls, "cls", low=0, high=None if k is None else k - 1)
    check_choice(mode, ("object", "cls"), "mode")
    thr = check_float(iou_threshold, "iou_threshold", low=0.0, high=1.0)
    if proposal is not None:
        proposal = check_int(proposal, "proposal", low=0)

    def score(images: torch.Tensor) -> torch.Tensor:
        out = detector(images)
        if isinstance(out, Detections):
            boxes, s = out.boxes, out.probs[..., cls]
        elif isinstance(out, ClassScores):
            boxes, s = out.boxes, out.scores[..., cls]
        else:
            raise InputError(f"the detector must return ClassScores or Detections; got {type(out).__name__}")
        iou = box_iou(boxes, box.to(boxes))
        if mode == "cls":
            iou = (iou > thr).to(boxes.dtype)
        return (iou * s)[:, proposal] if proposal is not None else (iou * s).amax(1)

    return score


def load_grounding_detector(
    name_or_path: str | os.PathLike,
    classes: Sequence[str],
    *,
    device: str | torch.device = "cpu",
    image_size: int | None = None,
) -> GroundingDetector:
    """Load a zero-shot detector and its processor (``AutoModelForZeroShotObjectDetection`` /
    ``AutoProcessor``; e.g. ``"IDEA-Research/grounding-dino-tiny"``, or a local folder written by
    ``save_pretrained``) and wrap them as a :class:`GroundingDetector` for ``classes``."""
    from transformers import AutoModelForZeroShotObjectDetection, AutoProcessor

    if not isinstance(name_or_path, (str, os.PathLike)) or not str(name_or_path):
        raise InputError(f"`name_or_path` must be a model name or a folder; got {name_or_path!r}")
    if isinstance(classes, str) or not isinstance(classes, Sequence):
        raise InputError(f"`classes` must be a list of class names; got {classes!r}")
    processor = AutoProcessor.from_pretrained(str(name_or_path))
    model = AutoModelForZeroShotObjectDetection.from_pretrained(str(name_or_path), use_safetensors=True)
    return GroundingDetector(model, processor, list(classes), image_size=image_size).to(device).eval()


def load_coco(
    annotation_json: str | os.PathLike,
    image_folder: str | os.PathLike,
    *,
    n_images: int = 50,
    size: int = 512,
    min_area: float = 0.01,
) -> tuple[torch.Tensor, list[torch.Tensor], list[torch.Tensor], list[str]]:
    """COCO-format detection data for ``scale="full"``: ``(images [N, 3, size, size] in [0, 1], boxes, labels, classes)``.

    Reads ``annotation_json`` (e.g. ``instances_val2017.json``), takes the first ``n_images``
    images (by id) that have a non-crowd object covering at least ``min_area`` of the image, resizes
    them to ``size x size`` (boxes scaled to match, xyxy pixels) and maps category ids to
    ``0..K-1`` in the file's category order; ``classes`` are their names (the prompt of
    :class:`GroundingDetector`).
    """
    import json

    from PIL import Image

    ann_path, folder = os.fspath(annotation_json), os.fspath(image_folder)
    if not os.path.isfile(ann_path):
        raise InputError(f"`annotation_json` {ann_path!r} is not a file")
    if not os.path.isdir(folder):
        raise InputError(f"`image_folder` {folder!r} is not a folder")
    n_images = check_int(n_images, "n_images", low=1)
    size = check_int(size, "size", low=8)
    min_area = check_float(min_area, "min_area", low=0.0, high=1.0)
    with open(ann_path, encoding="utf-8") as f:
        coco = json.load(f)
    cats = coco["categories"]
    cat_index = {c["id"]: k for k, c in enumerate(cats)}
    by_image: dict[int, list[dict[str, Any]]] = {}
    for a in coco["annotations"]:
        if not a.get("iscrowd", 0):
            by_image.setdefault(a["image_id"], []).append(a)
    images, boxes, labels = [], [], []
    for info in sorted(coco["images"], key=lambda d: d["id"]):
        w, h = info["width"], info["height"]
        anns = [a for a in by_image.get(info["id"], []) if a["bbox"][2] * a["bbox"][3] >= min_area * w * h]
        if not anns:
            continue
        img = Image.open(os.path.join(folder, info["file_name"])).convert("RGB").resize((size, size))
        images.append(torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0).permute(2, 0, 1))
        sx, sy = size / w, size / h
        boxes.append(
            torch.tensor(
                [
                    [
                        a["bbox"][0] * sx,
                        a["bbox"][1] * sy,
                        (a["bbox"][0] + a["bbox"][2]) * sx,
                        (a["bbox"][1] + a["bbox"][3]) * sy,
                    ]
                    for a in anns
                ]
            )
        )
        labels.append(torch.tensor([cat_index[a["category_id"]] for a in anns], dtype=torch.long))
        if len(images) == n_images:
            break
    if not images:
        raise InputError(f"no image of {ann_path!r} has an object covering {min_area} of it")
    return torch.stack(images), boxes, labels, [c["name"] for c in cats]
