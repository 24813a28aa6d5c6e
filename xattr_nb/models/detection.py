"""A tiny grid detector for ShapesWorld scenes, with box IoU, NMS, mAP and VPS's detection score.

:class:`TinyGridDetector` is a one-stage, YOLO-v1-like detector small enough to train in seconds
on :func:`xattr_nb.worlds.shapes.make_scenes`: a conv stack downsamples the image to a
``grid x grid`` map and every cell is one *proposal* that predicts

- class logits over ``n_classes + 1`` labels (the last one is *background*), and
- a box: centre ``(cx, cy)`` as sigmoid offsets inside the cell, width and height as sigmoid
  fractions of the image; returned as ``xyxy`` pixels.

A cell is responsible for an object when the object's box centre falls in it
(:func:`encode_targets`); the loss is cross-entropy over all cells (background down-weighted)
plus L1 on the boxes of responsible cells (:func:`detection_loss`).

Box IoU, NMS and average precision are written here with torch because ``torchvision`` is not a
dependency (its ``box_iou``/``batched_nms`` compute the same things).

:func:`detection_score` is the object score of VPS (Chen et al., CVPR 2025) and D-RISE:
``sigma(x') = max_i IoU(b_i(x'), b_target) * p_i(target class | x')`` over the proposals of the
(masked) image ``x'``, as a function of a batch of images.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from xattr_nb.checks import InputError, check_choice, check_float, check_int, check_tensor
from xattr_nb.models.fit import FitHistory, fit
from xattr_nb.models.io import check_model, eval_mode
from xattr_nb.models.vision import ConvBlock, check_images

__all__ = [
    "DetectionResult",
    "Detections",
    "TinyGridDetector",
    "average_precision",
    "batched_nms",
    "box_iou",
    "decode",
    "detection_loss",
    "detection_score",
    "encode_targets",
    "evaluate_detector",
    "nms",
    "pairwise_box_iou",
    "train_detector",
]


# --------------------------------------------------------------------------------------------
# Boxes
# --------------------------------------------------------------------------------------------


def _boxes(b: Any, name: str) -> torch.Tensor:
    if isinstance(b, (list, tuple)):
        b = torch.as_tensor(b, dtype=torch.float32)
    b = check_tensor(b, name, dtype="float", nonempty=False, layout="[..., 4] xyxy")
    if b.ndim == 0 or b.shape[-1] != 4:
        raise InputError(f"`{name}` must be boxes [..., 4] (x0, y0, x1, y1); got shape {tuple(b.shape)}")
    return b


def box_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Intersection over union of boxes ``[..., 4]`` (``xyxy``), broadcast elementwise: ``[...]``.

    ``box_iou(boxes [B, P, 4], target [4])`` gives ``[B, P]``. Degenerate boxes (zero area) have
    IoU 0 with everything. Differentiable (used by the gradient baselines of VPS).
    """
    a, b = _boxes(a, "a"), _boxes(b, "b")
    lt = torch.maximum(a[..., :2], b[..., :2])
    rb = torch.minimum(a[..., 2:], b[..., 2:])
    inter = (rb - lt).clamp_min(0).prod(-1)
    area_a = (a[..., 2:] - a[..., :2]).clamp_min(0).prod(-1)
    area_b = (b[..., 2:] - b[..., :2]).clamp_min(0).prod(-1)
    union = area_a + area_b - inter
    return torch.where(union > 0, inter / union.clamp_min(1e-12), torch.zeros_like(union))


def pairwise_box_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """IoU of every box of ``a`` ``[N, 4]`` with every box of ``b`` ``[M, 4]``: ``[N, M]`` (torchvision's ``box_iou``)."""
    a, b = _boxes(a, "a"), _boxes(b, "b")
    if a.ndim != 2 or b.ndim != 2:
        raise InputError(f"`a` and `b` must be [N, 4] and [M, 4]; got {tuple(a.shape)} and {tuple(b.shape)}")
    return box_iou(a[:, None, :], b[None, :, :])


def nms(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float = 0.5) -> torch.Tensor:
    """Greedy non-maximum suppression: indices of the kept boxes, highest score first.

    Repeatedly keep the highest-scoring remaining box and drop every box whose IoU with it is
    *greater* than ``iou_threshold`` (torchvision's convention). Ties in score keep the lower index.
    """
    boxes = _boxes(boxes, "boxes")
    if boxes.ndim != 2:
        raise InputError(f"`boxes` must be [N, 4]; got {tuple(boxes.shape)}")
    scores = check_tensor(scores, "scores", ndim=1, dtype="float", nonempty=False, layout="[N]")
    if scores.shape[0] != boxes.shape[0]:
        raise InputError(f"`scores` has {scores.shape[0]} entries but `boxes` has {boxes.shape[0]}")
    thr = check_float(iou_threshold, "iou_threshold", low=0.0, high=1.0)
    order = torch.argsort(-scores, stable=True)
    iou = pairwise_box_iou(boxes, boxes)
    suppressed = torch.zeros(boxes.shape[0], dtype=torch.bool, device=boxes.device)
    keep = []
    for i in order.tolist():
        if suppressed[i]:
            continue
        keep.append(i)
        suppressed |= iou[i] > thr
    return torch.tensor(keep, dtype=torch.long, device=boxes.device)


def batched_nms(
    boxes: torch.Tensor, scores: torch.Tensor, labels: torch.Tensor, iou_threshold: float = 0.5
) -> torch.Tensor:
    """NMS within each label separately (boxes of different labels never suppress each other)."""
    boxes = _boxes(boxes, "boxes")
    labels = check_tensor(labels, "labels", ndim=1, dtype="int", nonempty=False, layout="[N]")
    if labels.shape[0] != boxes.shape[0]:
        raise InputError(f"`labels` has {labels.shape[0]} entries but `boxes` has {boxes.shape[0]}")
    if boxes.shape[0] == 0:
        return torch.zeros(0, dtype=torch.long, device=boxes.device)
    # Shift each label's boxes to their own far-away region of the plane: then one NMS does all labels.
    offset = labels.to(boxes) * (boxes.max() - boxes.min() + 1)
    return nms(boxes + offset[:, None], scores, iou_threshold)


# --------------------------------------------------------------------------------------------
# The detector
# --------------------------------------------------------------------------------------------


class Detections(NamedTuple):
    """Raw per-cell outputs of :class:`TinyGridDetector`: ``boxes`` ``[B, P, 4]`` xyxy pixels and class
    ``logits`` ``[B, P, K + 1]`` (index ``K`` is background), ``P = grid**2`` cells in row-major order."""

    boxes: torch.Tensor
    logits: torch.Tensor

    @property
    def probs(self) -> torch.Tensor:
        """Class probabilities ``[B, P, K + 1]`` (softmax of the logits; the last column is background)."""
        return self.logits.softmax(-1)


class _StridedBlock(nn.Module):
    """3x3 convolution with stride 2, batch norm, ReLU (the stem: halves the resolution at a quarter of the cost)."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, kernel_size=3, stride=2, padding=1)
        self.norm = nn.BatchNorm2d(c_out)
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.norm(self.conv(x)))


class TinyGridDetector(nn.Module):
    """A one-stage grid detector: a stride-2 conv stem, then conv blocks with 2x2 max-pooling down to a
    ``grid x grid`` map, then a 3x3 conv and a 1x1 conv predicting ``4 + n_classes + 1`` numbers per cell.

    ``image_size / grid`` must be a power of two, at least 2 (48 / 6 = 8: the stem and two
    poolings). ``widths`` are the conv widths (the last one repeats if more blocks are needed).
    ``forward(x)`` returns :class:`Detections`; ``model.last_conv`` is the last conv block (for
    Grad-CAM). The strided stem makes training ~4x cheaper than a full-resolution first block.
    """

    def __init__(
        self,
        n_classes: int,
        image_size: int = 48,
        grid: int = 6,
        widths: Sequence[int] = (16, 32, 64),
        in_ch: int = 3,
    ) -> None:
        super().__init__()
        self.n_classes = check_int(n_classes, "n_classes", low=1)
        self.image_size = check_int(image_size, "image_size", low=2)
        self.grid = check_int(grid, "grid", low=1, high=self.image_size)
        self.in_ch = check_int(in_ch, "in_ch", low=1)
        ratio = self.image_size / self.grid
        n_down = round(math.log2(ratio)) if ratio >= 1 else -1
        if n_down < 1 or 2**n_down * self.grid != self.image_size:
            raise InputError(f"`image_size / grid` must be a power of two >= 2; got {self.image_size} / {self.grid}")
        if isinstance(widths, (str, bytes)) or not isinstance(widths, Sequence) or len(widths) == 0:
            raise InputError(f"`widths` must be a non-empty sequence of positive ints; got {widths!r}")
        self.widths = tuple(check_int(w, f"widths[{i}]", low=1) for i, w in enumerate(widths))
        chans = [self.widths[min(i, len(self.widths) - 1)] for i in range(n_down)]
        self.stem = _StridedBlock(self.in_ch, chans[0])
        self.blocks = nn.ModuleList(ConvBlock(c, w) for c, w in itertools.pairwise(chans))
        self.pool = nn.MaxPool2d(2)
        self.neck = nn.Sequential(nn.Conv2d(chans[-1], chans[-1], 3, padding=1), nn.ReLU())
        self.head = nn.Conv2d(chans[-1], 4 + self.n_classes + 1, 1)

    @property
    def last_conv(self) -> nn.Module:
        return self.blocks[-1] if len(self.blocks) else self.stem

    @property
    def n_proposals(self) -> int:
        return self.grid * self.grid

    @property
    def arch_config(self) -> dict[str, Any]:
        """The config :func:`xattr_nb.models.build` rebuilds this model from (zoo checkpoints)."""
        keys = ("n_classes", "image_size", "grid", "in_ch")
        return {
            "arch": "TinyGridDetector",
            "kwargs": {**{k: getattr(self, k) for k in keys}, "widths": list(self.widths)},
        }

    def forward(self, x: torch.Tensor) -> Detections:
        x = check_images(x, self.in_ch)
        if tuple(x.shape[-2:]) != (self.image_size, self.image_size):
            raise InputError(f"`x` must be {self.image_size}x{self.image_size} images; got {tuple(x.shape)}")
        h = self.stem(x)
        for block in self.blocks:
            h = block(self.pool(h))
        out = self.head(self.neck(h)).flatten(2).transpose(1, 2)  # [B, P, 4 + K + 1]
        g, cell = self.grid, self.image_size / self.grid
        ys, xs = torch.meshgrid(torch.arange(g, device=x.device), torch.arange(g, device=x.device), indexing="ij")
        cx = (xs.flatten() + torch.sigmoid(out[..., 0])) * cell
        cy = (ys.flatten() + torch.sigmoid(out[..., 1])) * cell
        w = torch.sigmoid(out[..., 2]) * self.image_size
        hh = torch.sigmoid(out[..., 3]) * self.image_size
        boxes = torch.stack([cx - w / 2, cy - hh / 2, cx + w / 2, cy + hh / 2], -1)
        return Detections(boxes, out[..., 4:])


# --------------------------------------------------------------------------------------------
# Targets and loss
# --------------------------------------------------------------------------------------------


def _check_annotations(boxes: Any, labels: Any, n: int | None = None) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    if not isinstance(boxes, (list, tuple)) or not isinstance(labels, (list, tuple)):
        raise InputError("`boxes` and `labels` must be lists with one tensor per image ([k, 4] and [k])")
    if len(boxes) != len(labels) or (n is not None and len(boxes) != n):
        raise InputError(f"`boxes` ({len(boxes)}) and `labels` ({len(labels)}) must have one entry per image ({n})")
    bs, ls = [], []
    for i, (b, lab) in enumerate(zip(boxes, labels, strict=True)):
        b = _boxes(b, f"boxes[{i}]")
        lab = check_tensor(lab, f"labels[{i}]", ndim=1, dtype="int", nonempty=False, layout="[k]")
        if b.ndim != 2 or b.shape[0] != lab.shape[0]:
            raise InputError(f"`boxes[{i}]` must be [k, 4] with k = len(labels[{i}]) = {lab.shape[0]}")
        bs.append(b.float())
        ls.append(lab.long())
    return bs, ls


def encode_targets(
    boxes: Sequence[torch.Tensor], labels: Sequence[torch.Tensor], *, n_classes: int, image_size: int, grid: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-cell training targets: ``(classes [N, P] long, boxes [N, P, 4])``.

    The cell containing an object's box centre gets its class and box; every other cell gets the
    background class ``n_classes`` (and a zero box, ignored by the loss). When two objects fall in
    one cell the later one wins (rare with ShapesWorld's spaced objects).
    """
    n_classes = check_int(n_classes, "n_classes", low=1)
    image_size = check_int(image_size, "image_size", low=1)
    grid = check_int(grid, "grid", low=1, high=image_size)
    bs, ls = _check_annotations(list(boxes), list(labels))
    cls = torch.full((len(bs), grid * grid), n_classes, dtype=torch.long)
    box = torch.zeros(len(bs), grid * grid, 4)
    cell = image_size / grid
    for i, (b, lab) in enumerate(zip(bs, ls, strict=True)):
        if lab.numel() and (int(lab.min()) < 0 or int(lab.max()) >= n_classes):
            raise InputError(f"`labels[{i}]` must lie in [0, {n_classes}); got {lab.tolist()}")
        for bb, lb in zip(b, lab, strict=True):
            cx, cy = float(bb[0] + bb[2]) / 2, float(bb[1] + bb[3]) / 2
            col = min(grid - 1, max(0, int(cx // cell)))
            row = min(grid - 1, max(0, int(cy // cell)))
            cls[i, row * grid + col] = int(lb)
            box[i, row * grid + col] = bb
    return cls, box


def detection_loss(
    out: Detections,
    target_classes: torch.Tensor,
    target_boxes: torch.Tensor,
    *,
    image_size: int,
    background_weight: float = 0.2,
    box_weight: float = 5.0,
) -> torch.Tensor:
    """Cross-entropy over every cell (background class weighted by ``background_weight``) plus
    ``box_weight`` x the L1 distance between predicted and true boxes (in image-size units) of the
    cells responsible for an object."""
    if not isinstance(out, Detections):
        raise InputError(f"`out` must be the detector's Detections; got {type(out).__name__}")
    k1 = out.logits.shape[-1]
    weight = torch.ones(k1, device=out.logits.device)
    weight[-1] = check_float(background_weight, "background_weight", low=0.0)
    ce = F.cross_entropy(out.logits.reshape(-1, k1), target_classes.reshape(-1), weight=weight)
    pos = target_classes < k1 - 1
    if not bool(pos.any()):
        return ce
    l1 = (out.boxes[pos] - target_boxes[pos]).abs().sum(-1).mean() / image_size
    return ce + check_float(box_weight, "box_weight", low=0.0) * l1


class _Packed(nn.Module):
    """The detector with its outputs packed into one tensor ``[B, P, 4 + K + 1]``, so :func:`fit` can train it."""

    def __init__(self, det: TinyGridDetector) -> None:
        super().__init__()
        self.det = det

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.det(x)
        return torch.cat([out.boxes, out.logits], -1)


def train_detector(
    images: torch.Tensor,
    boxes: Sequence[torch.Tensor],
    labels: Sequence[torch.Tensor],
    *,
    n_classes: int,
    grid: int = 6,
    widths: Sequence[int] = (16, 32, 64),
    epochs: int = 15,
    lr: float = 3e-3,
    batch_size: int = 64,
    background_weight: float = 0.2,
    box_weight: float = 5.0,
    seed: int = 0,
    show_progress: bool = False,
) -> tuple[TinyGridDetector, FitHistory]:
    """Train a :class:`TinyGridDetector` on square images ``[N, C, S, S]`` with per-image ``boxes`` / ``labels``
    (e.g. ``scenes.images, scenes.boxes, scenes.labels`` from :func:`~xattr_nb.worlds.shapes.make_scenes`).

    AdamW through :func:`~xattr_nb.models.fit.fit` (seeded: same seed, same detector). Returns the
    detector in eval mode and the training history. On 1,500 scenes of 48 px with the three default
    classes (``make_scenes(1500, seed=1)``), the default 15 epochs take ~15 s on one CPU thread and
    reach mAP@0.5 = 0.93, recall 0.92, precision 0.92 on 300 held-out scenes (seed 0).
    """
    x = check_tensor(images, "images", ndim=4, dtype="float", layout="[N, C, S, S]")
    if x.shape[2] != x.shape[3]:
        raise InputError(f"`images` must be square; got {tuple(x.shape)}")
    bs, ls = _check_annotations(list(boxes), list(labels), x.shape[0])
    seed = check_int(seed, "seed", low=0, high=2**32 - 1)
    torch.manual_seed(seed)  # the initial weights: same seed, same detector
    det = TinyGridDetector(n_classes, image_size=int(x.shape[2]), grid=grid, widths=widths, in_ch=int(x.shape[1]))
    cls, box = encode_targets(bs, ls, n_classes=det.n_classes, image_size=det.image_size, grid=det.grid)
    packed_target = torch.cat([box, cls.unsqueeze(-1).float()], -1)  # [N, P, 5]

    def loss_fn(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        d = Detections(out[..., :4], out[..., 4:])
        return detection_loss(
            d,
            y[..., 4].long(),
            y[..., :4],
            image_size=det.image_size,
            background_weight=background_weight,
            box_weight=box_weight,
        )

    hist = fit(
        _Packed(det),
        (x, packed_target),
        epochs=epochs,
        lr=lr,
        batch_size=batch_size,
        loss_fn=loss_fn,
        seed=seed,
        show_progress=show_progress,
    )
    return det.eval(), hist


# --------------------------------------------------------------------------------------------
# Decoding and evaluation
# --------------------------------------------------------------------------------------------


@dataclass
class DetectionResult:
    """Final detections of one image after thresholding and NMS: ``boxes [k, 4]``, ``scores [k]``, ``labels [k]``."""

    boxes: torch.Tensor
    scores: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return int(self.scores.shape[0])


def decode(
    out: Detections,
    *,
    score_threshold: float = 0.3,
    iou_threshold: float = 0.5,
    max_detections: int = 100,
) -> list[DetectionResult]:
    """Turn raw :class:`Detections` into final detections per image.

    Each cell proposes its most probable non-background class with that probability as score;
    proposals scoring below ``score_threshold`` are dropped, then per-class NMS
    (:func:`batched_nms`) and the ``max_detections`` best are kept, highest score first.
    """
    if not isinstance(out, Detections):
        raise InputError(f"`out` must be the detector's Detections; got {type(out).__name__}")
    thr = check_float(score_threshold, "score_threshold", low=0.0, high=1.0)
    iou_thr = check_float(iou_threshold, "iou_threshold", low=0.0, high=1.0)
    top = check_int(max_detections, "max_detections", low=1)
    probs = out.probs.detach()
    scores, labels = probs[..., :-1].max(-1)
    results = []
    for b in range(probs.shape[0]):
        keep = scores[b] >= thr
        bx, sc, lb = out.boxes[b].detach()[keep], scores[b][keep], labels[b][keep]
        idx = batched_nms(bx, sc, lb, iou_thr)[:top]
        results.append(DetectionResult(bx[idx], sc[idx], lb[idx]))
    return results


def average_precision(scores: torch.Tensor, is_tp: torch.Tensor, n_ground_truth: int) -> float:
    """Area under the precision-recall curve with all-point interpolation (PASCAL VOC 2010+).

    ``scores`` ``[D]`` and ``is_tp`` ``[D]`` (bool) describe every detection of one class across the
    dataset; ``n_ground_truth`` counts that class's objects (missed ones lower the recall).
    Written here because ``sklearn.metrics.average_precision_score`` cannot count missed objects.
    """
    scores = check_tensor(scores, "scores", ndim=1, dtype="float", nonempty=False, layout="[D]")
    is_tp = check_tensor(is_tp, "is_tp", ndim=1, dtype="bool", nonempty=False, layout="[D]")
    if is_tp.shape != scores.shape:
        raise InputError(f"`is_tp` has {is_tp.shape[0]} entries but `scores` has {scores.shape[0]}")
    n_gt = check_int(n_ground_truth, "n_ground_truth", low=0)
    if int(is_tp.sum()) > n_gt:
        raise InputError(f"{int(is_tp.sum())} true positives but only {n_gt} ground-truth objects")
    if n_gt == 0:
        return math.nan
    order = torch.argsort(-scores, stable=True)
    tp = is_tp[order].double().cumsum(0)
    fp = (~is_tp[order]).double().cumsum(0)
    recall = torch.cat([torch.zeros(1, dtype=torch.float64), tp / n_gt])
    precision = torch.cat([torch.ones(1, dtype=torch.float64), tp / (tp + fp).clamp_min(1)])
    # Precision envelope: the best precision at any recall at least this high.
    envelope = torch.flip(torch.cummax(torch.flip(precision, [0]), 0).values, [0])
    return float(((recall[1:] - recall[:-1]) * envelope[1:]).sum())


@torch.no_grad()
def evaluate_detector(
    detector: nn.Module,
    images: torch.Tensor,
    boxes: Sequence[torch.Tensor],
    labels: Sequence[torch.Tensor],
    *,
    iou_threshold: float = 0.5,
    score_threshold: float = 0.3,
    batch_size: int = 256,
) -> dict[str, Any]:
    """mAP@``iou_threshold``, recall and precision of a detector on annotated images.

    Detections are matched greedily (highest score first) to unmatched ground-truth objects of
    the same class with IoU >= ``iou_threshold``. ``map`` uses every detection with score >=
    0.01 (VOC all-point AP averaged over the classes present); ``recall`` / ``precision`` use the
    detections at ``score_threshold`` (what :func:`decode` returns by default). ``matched`` is one
    bool tensor per image: which ground-truth objects are found (class and box) at
    ``score_threshold`` (VPS explains those).
    """
    check_model(detector, "detector")
    x = check_tensor(images, "images", ndim=4, dtype="float", layout="[N, C, H, W]")
    bs, ls = _check_annotations(list(boxes), list(labels), x.shape[0])
    iou_thr = check_float(iou_threshold, "iou_threshold", low=0.0, high=1.0)
    thr = check_float(score_threshold, "score_threshold", low=0.0, high=1.0)
    batch_size = check_int(batch_size, "batch_size", low=1)
    dets: list[DetectionResult] = []
    with eval_mode(detector):
        for s in range(0, x.shape[0], batch_size):
            dets += decode(detector(x[s : s + batch_size]), score_threshold=0.01)
    n_cls = max(
        [int(lab.max()) + 1 for lab in ls if lab.numel()] + [int(d.labels.max()) + 1 for d in dets if len(d)] + [1]
    )
    per_class: dict[int, list[tuple[float, bool]]] = {c: [] for c in range(n_cls)}
    n_gt = torch.zeros(n_cls, dtype=torch.long)
    matched, tp_at, n_det_at = [], 0, 0
    for d, b, lab in zip(dets, bs, ls, strict=True):
        n_gt += torch.bincount(lab, minlength=n_cls)[:n_cls]
        used = torch.zeros(lab.shape[0], dtype=torch.bool)
        iou = pairwise_box_iou(d.boxes.cpu().float(), b) if len(d) and lab.numel() else torch.zeros(len(d), 0)
        found = torch.zeros(lab.shape[0], dtype=torch.bool)
        for j in torch.argsort(-d.scores.cpu(), stable=True).tolist():
            c, sc = int(d.labels[j]), float(d.scores[j])
            cand = (lab == c) & ~used & (iou[j] >= iou_thr) if lab.numel() else torch.zeros(0, dtype=torch.bool)
            hit = bool(cand.any())
            if hit:
                g = int(torch.argmax(torch.where(cand, iou[j], torch.full_like(iou[j], -1.0))))
                used[g] = True
                if sc >= thr:
                    found[g] = True
            per_class[c].append((sc, hit))
            if sc >= thr:
                n_det_at += 1
                tp_at += int(hit)
        matched.append(found)
    aps = {}
    for c in range(n_cls):
        if int(n_gt[c]) == 0:
            continue
        sc = torch.tensor([s for s, _ in per_class[c]], dtype=torch.float64)
        tp = torch.tensor([h for _, h in per_class[c]], dtype=torch.bool)
        aps[c] = average_precision(sc, tp, int(n_gt[c]))
    total_gt = int(n_gt.sum())
    return {
        "map": float(sum(aps.values()) / len(aps)) if aps else math.nan,
        "ap_per_class": aps,
        "recall": sum(int(m.sum()) for m in matched) / total_gt if total_gt else math.nan,
        "precision": tp_at / n_det_at if n_det_at else math.nan,
        "matched": matched,
        "n_objects": total_gt,
    }


# --------------------------------------------------------------------------------------------
# VPS / D-RISE object score
# --------------------------------------------------------------------------------------------


def detection_score(
    detector: nn.Module,
    target_box: torch.Tensor | Sequence[float],
    target_class: int,
    *,
    mode: str = "object",
    iou_threshold: float = 0.5,
    proposal: int | None = None,
) -> Callable[[torch.Tensor], torch.Tensor]:
    """VPS's object score as a function of a batch of images: ``images [B, C, H, W] -> [B]``.

    ``sigma(x') = max_i IoU(b_i(x'), target_box) * p_i(target_class | x')`` over the detector's
    proposals on ``x'`` (``mode="object"``); ``mode="cls"`` replaces the IoU by
    ``1[IoU > iou_threshold]``. It is 1 only if some proposal finds the same box with full
    confidence in the class; an object of the same class elsewhere scores low (its IoU with the
    target box is small). ``proposal=i`` scores only proposal ``i`` (fixed from the clean image),
    which makes the score differentiable for gradient baselines (Grad-CAM, IG) as the VPS spec asks.

    The returned function runs the detector as is (no ``no_grad``): the batched masked forwards
    of :mod:`xattr_nb.kernels` disable gradients themselves.
    """
    check_model(detector, "detector")
    box = _boxes(target_box, "target_box")
    if box.shape != (4,):
        raise InputError(f"`target_box` must be one box [4] (x0, y0, x1, y1); got shape {tuple(box.shape)}")
    if not bool((box[2:] > box[:2]).all()):
        raise InputError(f"`target_box` needs x1 > x0 and y1 > y0; got {box.tolist()}")
    k = getattr(detector, "n_classes", None)
    target_class = check_int(target_class, "target_class", low=0, high=None if k is None else k - 1)
    check_choice(mode, ("object", "cls"), "mode")
    thr = check_float(iou_threshold, "iou_threshold", low=0.0, high=1.0)
    n_prop = getattr(detector, "n_proposals", None)
    if proposal is not None:
        proposal = check_int(proposal, "proposal", low=0, high=None if n_prop is None else n_prop - 1)

    def score(images: torch.Tensor) -> torch.Tensor:
        out = detector(images)
        if not isinstance(out, Detections):
            raise InputError(f"the detector must return Detections(boxes, logits); got {type(out).__name__}")
        iou = box_iou(out.boxes, box.to(out.boxes))
        if mode == "cls":
            iou = (iou > thr).to(out.boxes.dtype)
        s = iou * out.probs[..., target_class]
        return s[:, proposal] if proposal is not None else s.amax(1)

    return score
