"""COMET: an inherently explainable selector–predictor model with a frozen feature detector.

Zhang, Lee, Wang, "Comprehensive Attribution: Inherently Explainable Vision Model with Feature
Detector", ECCV 2024 (arXiv 2407.19308; official code github.com/Zood123/COMET).

A **selector** ``S`` outputs a soft mask ``m(x) ∈ [0, 1]^{H×W}``; a **predictor** ``f_P`` classifies
only the selected pixels ``x_s = m⊙x + (1−m)⊙q``. Such models tend to select *a* sufficient subset
and leave other evidence outside (incompleteness). COMET adds a **frozen detector** ``f_D``,
trained beforehand on full images, that looks at the complement ``x_{1−s} = (1−m)⊙x + m⊙q``: the
selector is punished while the detector can still recognise the class there. The objective is the
hinged form of the official code (branch "2p"), not the abstract's unbounded subtraction:

    ℓ_P = CE(f_P(x_s), y)        ℓ_D = CE(f_D(x_{1−s}), y)        R = mean_b max(mean(m_b) − τ, 0)
    L_selector  = ℓ_P + a·max(ℓ_P − ℓ_D + g, 0) + b·R (+ β·mean(m), a tutorial choice, see below)
    L_predictor = ℓ_P

The steps, each usable on its own (the notebook walks through them):

- :func:`twin_shapes`: the small-scale world, each image with two copies of its class glyph;

- :class:`TinySelector` (the small-scale selector) and :func:`mask_of` (logits → mask ``[B, H, W]``);
- :func:`compose_views`: the selected view and the complement view of a batch;
- :func:`random_holes` / :func:`hole_augment`: the detector's augmentation (rectangles and
  glyph-shaped holes filled with ``q``), so a hole's *shape* carries no class information;
- :func:`train_detector`: the black-box/detector, trained on full images, then frozen;
- :func:`comet_loss`: the objective above, term by term;
- :func:`train_comet`: joint training of selector and predictor with separate optimizers
  (``a=0`` gives the selector–predictor baseline on the same data order and initialisation);
  :func:`straight_through` and :func:`predictor_from_detector` are its small-scale aids;
- :func:`evaluate`: accuracy, complement detectability, GT recall, both-copies rate, IoU, area;
  :func:`comprehensiveness` (ERASER's probability drop on the complement) and
  :func:`area_normalised_comprehensiveness` (the same minus that of random masks of the same size);
  :func:`evaluate_masks` scores any other masks the same way (post-hoc maps binarised at a matched
  area by :func:`topk_mask`, random masks, the all-ones mask);
- :func:`explain` (and ``attribute(model, x, y, method="comet")``, which calls :func:`selector_scores`;
  :mod:`xattr_nb.attribution.registry` lists it): the mask as an Attribution.

Small-scale choices, not in the paper: the spec's always-on ``β·mean(m)`` and τ = 0.10 (the usual
sparsity pressure of selector–predictor models, which makes incompleteness visible); a straight-through
binarised mask in training, with the area terms measured on it (``area_on="selected"``); a selector whose
logit map is instance-normalised (``TinySelector(normalise=True)``: the convolutions rank the pixels, one
offset sets how many are kept; without it the sparsity terms erase the glyphs first and the a=0 baseline
collapses to an empty mask); a predictor started from the detector's weights (six epochs instead of two hundred).
:func:`xattr_nb.worlds.folders.load_image_folder` and :func:`full_scale_models` wire the paper's setting (ImageNet-9
folders, a DeepLabv3 selector, ResNet-18 predictor and detector) through transformers.

The zoo ships the small-scale detector and both trained systems (``comet_detector``,
``comet_baseline``, ``comet_model``; recipes in :mod:`xattr_nb.models.comet_recipes`, trained with
:data:`SMALL_SCALE`); :func:`comet_model` is the architecture they are rebuilt from.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from xattr_nb.attribution import Attribution
from xattr_nb.checks import InputError, check_choice, check_float, check_int, check_tensor
from xattr_nb.metrics import mask_iou
from xattr_nb.models import ImageClassifier, TinyCNN, fit
from xattr_nb.models.io import check_model, device_of, eval_mode, logits_of
from xattr_nb.runtime import Cost, pick_device, progress
from xattr_nb.worlds.shapes import SHAPES, SIZES, ShapesData, make_shapes, render_masks, split

__all__ = [
    "SMALL_SCALE",
    "CometHistory",
    "CometModel",
    "TinySelector",
    "area_normalised_comprehensiveness",
    "comet_loss",
    "comet_model",
    "compose_views",
    "comprehensiveness",
    "evaluate",
    "evaluate_masks",
    "explain",
    "freeze",
    "full_scale_models",
    "hole_augment",
    "mask_of",
    "predictor_from_detector",
    "random_holes",
    "selector_scores",
    "split_copies",
    "straight_through",
    "topk_mask",
    "train_comet",
    "train_detector",
    "twin_shapes",
]

#: The official code's defaults (``conf/COMET.yaml``): a=m_closs, g=gap_th, b=m_m1, τ=mask_th.
PAPER_DEFAULTS: dict[str, float] = {"a": 4.0, "gap": 2.0, "b": 100.0, "tau": 0.6, "lr": 5e-4, "weight_decay": 0.03}

#: The small-scale setting of notebook 05 (the zoo's ``comet_*`` checkpoints are trained with it):
#: data sizes, detector and joint-training epochs, COMET's a, g, b (the paper's), the spec's τ = 0.10 (scaled to the
#: glyphs' ~7 % area) and always-on β = 1, q, and the selector's learning rate and initial logit offset
#: (with the instance-normalised logit map, -0.5 selects about a quarter of each image at the start).
SMALL_SCALE: dict[str, float] = {
    "n_train": 2000,
    "n_test": 400,
    "det_epochs": 6,
    "epochs": 6,
    "a": 4.0,
    "gap": 2.0,
    "b": 100.0,
    "tau": 0.10,
    "beta": 1.0,
    "q": 0.5,
    "selector_lr": 2e-3,
    "init_bias": -0.5,
}


# ----------------------------------------------------------------------------------------------
# Argument checks


def _images(x: Any, name: str = "x") -> torch.Tensor:
    return check_tensor(x, name, ndim=4, dtype="float", layout="[B, C, H, W]")


def _labels(y: Any, n: int, name: str = "y") -> torch.Tensor:
    y = check_tensor(y, name, ndim=1, dtype="int", layout="[B]")
    if y.shape[0] != n:
        raise InputError(f"`{name}` has {y.shape[0]} labels but the batch has {n} images")
    if bool((y < 0).any()):
        raise InputError(f"`{name}` must hold non-negative class indices")
    return y.long()


def _baseline_value(q: Any, channels: int, name: str = "baseline") -> torch.Tensor:
    """``q`` as a tensor broadcastable to ``[B, C, H, W]``: a number, a colour ``[C]`` or an image ``[C, H, W]``."""
    if isinstance(q, bool):
        raise InputError(f"`{name}` must be a number or a tensor; got bool")
    if isinstance(q, (int, float, np.integer, np.floating)):
        return torch.tensor(check_float(q, name)).reshape(1, 1, 1, 1)
    q = check_tensor(q, name, ndim=(1, 3), dtype="float", layout="[C] colour or [C, H, W] image")
    if q.shape[0] != channels:
        raise InputError(f"`{name}` has {q.shape[0]} channels but the images have {channels}")
    return q.reshape(1, channels, 1, 1) if q.ndim == 1 else q.unsqueeze(0)


# ----------------------------------------------------------------------------------------------
# The small-scale world: two copies of the evidence


def twin_shapes(n_train: int = 2000, n_test: int = 400, *, seed: int = 0) -> tuple[ShapesData, ShapesData]:
    """Training and held-out twin-glyph ShapesWorld images (32×32, 4 classes, small glyphs, 2 dots).

    Each image holds its class glyph **twice** (either copy alone is sufficient) on a black, grey or
    gradient background; ``masks`` is the union of both copies. One draw of ``n_train + n_test``
    images is split at random (``seed``), so the held-out part never overlaps the training part.
    """
    n_train, n_test = check_int(n_train, "n_train", low=1), check_int(n_test, "n_test", low=1)
    seed = check_int(seed, "seed", low=0)
    data = make_shapes(
        n_train + n_test,
        size=32,
        twin=True,
        n_distractors=2,
        sizes=("small",),
        backgrounds=("black", "gray", "gradient"),
        positions=("top left", "top right", "bottom left", "bottom right"),
        seed=seed,
    )
    train, test = split(data, (n_train / len(data), n_test / len(data)), seed=seed)
    return train, test


# ----------------------------------------------------------------------------------------------
# Step 1: the selector and the two views


class TinySelector(nn.Module):
    """The small-scale selector: four 3×3 convolutions of width ``width`` (the middle two dilated ×2,
    so the receptive field is 13 px and covers a whole glyph), ReLUs, and a 1-channel logit map at
    full resolution ``[B, 1, H, W]``. :func:`mask_of` turns it into the mask ``sigmoid(logits)``.
    ``init_bias`` sets the initial logit (0.5 → every pixel starts at m = 0.62, selected). The
    input is centred at mid-grey before the first convolution.

    ``normalise=True`` (a small-scale choice, not the paper's) standardises each image's logit map
    over its pixels and rescales it with one learnt scale and offset (``nn.InstanceNorm2d(1,
    affine=True)``, offset initialised to ``init_bias``): the convolutions then decide only *which*
    pixels rank first, and the offset alone decides *how many* are selected. A uniform area
    pressure cannot erase the ranking: without it, pushing every pixel's mask down moves the
    shared weights most where the features are largest (the high-contrast glyphs), so the glyphs
    fall below the cut first and the mask collapses. At init the logits are z-scores plus
    ``init_bias`` (``init_bias = -0.5`` selects roughly the top quarter of each image).
    """

    def __init__(self, in_ch: int = 3, width: int = 16, init_bias: float = 0.5, normalise: bool = False):
        super().__init__()
        in_ch, width = check_int(in_ch, "in_ch", low=1), check_int(width, "width", low=1)
        init_bias = check_float(init_bias, "init_bias")
        if not isinstance(normalise, bool):
            raise InputError(f"`normalise` must be True or False; got {normalise!r}")
        self.net = nn.Sequential(
            nn.Conv2d(in_ch, width, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(width, width, 3, padding=2, dilation=2),
            nn.ReLU(),
            nn.Conv2d(width, width, 3, padding=2, dilation=2),
            nn.ReLU(),
            nn.Conv2d(width, 1, 3, padding=1),
        )
        # Start just above the binarisation threshold, sigmoid(0.5) = 0.62: every pixel is selected
        # at first (the predictor sees whole images) and the sparsity terms then carve the mask.
        nn.init.constant_(self.net[-1].bias, init_bias)
        if normalise:
            norm = nn.InstanceNorm2d(1, affine=True)
            nn.init.constant_(norm.bias, init_bias)
            self.net.append(norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # centred input: pixels far from mid-grey (glyphs, dark backgrounds) get comparable feature
        # norms, so a uniform sparsity push does not erase the bright glyphs first
        return self.net(_images(x) - 0.5)


def mask_of(selector: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The selector's soft mask ``m = sigmoid(S(x))`` ``[B, H, W]`` in [0, 1] (upsampled to the image
    bilinearly when the selector's logits are coarser, as a DeepLabv3 head's are)."""
    selector, x = check_model(selector, "selector"), _images(x)
    out = selector(x)
    logits = logits_of(out)  # HF segmentation models return an output with .logits
    if logits.ndim != 4 or logits.shape[1] != 1:
        raise InputError(f"`selector` must return one logit map [B, 1, h, w]; got shape {tuple(logits.shape)}")
    if tuple(logits.shape[-2:]) != tuple(x.shape[-2:]):
        logits = F.interpolate(logits, size=tuple(x.shape[-2:]), mode="bilinear", align_corners=False)
    return torch.sigmoid(logits[:, 0])


def compose_views(
    x: torch.Tensor, m: torch.Tensor, baseline: float | torch.Tensor = 0.5
) -> tuple[torch.Tensor, torch.Tensor]:
    """The selected view ``x_s = m⊙x + (1−m)⊙q`` and the complement ``x_{1−s} = (1−m)⊙x + m⊙q``.

    ``x`` ``[B, C, H, W]``, ``m`` ``[B, H, W]`` in [0, 1] (soft or bool), ``baseline`` ``q``: a
    number, a colour ``[C]`` or an image ``[C, H, W]``. The official code uses q = 0 in normalised
    space, i.e. the dataset's mean colour; ShapesWorld's mean grey 0.5 is the same idea. Both views
    are differentiable in ``m``, which is how the selector learns from both models.
    """
    x = _images(x)
    m = check_tensor(m, "m", ndim=3, layout="[B, H, W]")
    if m.shape != (x.shape[0], *x.shape[2:]):
        raise InputError(f"`m` must be [B, H, W] = {(x.shape[0], *x.shape[2:])} to match `x`; got {tuple(m.shape)}")
    m = m.to(x.dtype).unsqueeze(1)
    if bool(((m < 0) | (m > 1)).any()):
        raise InputError("`m` must lie in [0, 1] (a mask, e.g. sigmoid of the selector's logits)")
    q = _baseline_value(baseline, x.shape[1]).to(x)
    return m * x + (1 - m) * q, (1 - m) * x + m * q


# ----------------------------------------------------------------------------------------------
# Step 2: the detector, trained on full images with holes so that a hole's shape tells nothing


def random_holes(
    n: int,
    size: int,
    *,
    classes: Sequence[str],
    max_glyphs: int = 2,
    radius: float | None = None,
    seed: int = 0,
) -> torch.Tensor:
    """``n`` random hole masks ``[n, size, size]`` (bool): half are 1–2 axis-aligned rectangles, half
    are 1–``max_glyphs`` glyph silhouettes of *random* classes from ``classes`` at random places.

    Glyph-shaped holes matter: without them a detector learns that a circle-shaped hole means
    "circle", and the complement ``x_{1−s}`` of a perfect mask would leak the class through its
    silhouette. ``radius`` defaults to ShapesWorld's "small" glyph radius at this ``size``.
    """
    n, size = check_int(n, "n", low=1), check_int(size, "size", low=8)
    max_glyphs = check_int(max_glyphs, "max_glyphs", low=1, high=4)
    if isinstance(classes, str) or not isinstance(classes, Sequence) or not classes:
        raise InputError(f"`classes` must be a non-empty sequence of shape names from {list(SHAPES)}")
    for c in classes:
        if c not in SHAPES:
            raise InputError(f"`classes` contains unknown shape {c!r}; choose from {list(SHAPES)}")
    r = SIZES["small"] * size / 32 if radius is None else check_float(radius, "radius", low=1.0)
    rng = np.random.default_rng(check_int(seed, "seed", low=0))
    holes = np.zeros((n, size, size), dtype=bool)
    glyph = rng.uniform(size=n) < 0.5
    for _ in range(max_glyphs):
        # every image draws the same random numbers whatever its branch, so one seed fixes all
        use = glyph & (rng.uniform(size=n) < (1.0 if _ == 0 else 0.5))
        names = [classes[i] for i in rng.integers(0, len(classes), n)]
        cx, cy = rng.uniform(r, size - 1 - r, n), rng.uniform(r, size - 1 - r, n)
        ang = rng.uniform(-np.pi, np.pi, n)
        holes |= render_masks(names, cx, cy, np.full(n, r), ang, size) & use[:, None, None]
    ys = np.arange(size)
    for k in range(2):
        use = ~glyph & (rng.uniform(size=n) < (1.0 if k == 0 else 0.5))
        w, h = rng.integers(size // 8, size // 3 + 1, (2, n))
        x0, y0 = rng.integers(0, size - w + 1), rng.integers(0, size - h + 1)
        inx = (ys[None] >= x0[:, None]) & (ys[None] < (x0 + w)[:, None])
        iny = (ys[None] >= y0[:, None]) & (ys[None] < (y0 + h)[:, None])
        holes |= iny[:, :, None] & inx[:, None, :] & use[:, None, None]
    return torch.from_numpy(holes)


def hole_augment(
    x: torch.Tensor,
    *,
    classes: Sequence[str],
    p: float = 0.5,
    baseline: float | torch.Tensor = 0.5,
    seed: int = 0,
) -> torch.Tensor:
    """A copy of ``x`` where a fraction ``p`` of the images get :func:`random_holes` filled with ``q``."""
    x = _images(x)
    if x.shape[2] != x.shape[3]:
        raise InputError(f"`x` must hold square images for the hole masks; got {tuple(x.shape)}")
    p = check_float(p, "p", low=0.0, high=1.0)
    holes = random_holes(x.shape[0], x.shape[2], classes=classes, seed=seed)
    use = torch.from_numpy(np.random.default_rng(seed + 1).uniform(size=x.shape[0]) < p)
    _, filled = compose_views(x, (holes & use[:, None, None]).to(x.device), baseline)
    return filled


def train_detector(
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    classes: Sequence[str],
    epochs: int = 6,
    hole_p: float = 0.5,
    baseline: float | torch.Tensor = 0.5,
    lr: float = 5e-3,
    batch_size: int = 64,
    decay_at: float = 0.75,
    seed: int = 0,
    device: str = "cpu",
    show_progress: bool = True,
) -> nn.Module:
    """Train a :class:`~xattr_nb.models.TinyCNN` on full images with hole augmentation; return it frozen.

    Each epoch sees fresh holes (``epochs`` augmented copies of the set, trained on by
    :func:`~xattr_nb.models.fit` in a seeded order); the last ``1 - decay_at`` of the steps run at
    ``lr × 0.2`` (the paper's multi-step decay), which settles the batch-norm net. This model is both the black box the post-hoc
    baselines explain and COMET's detector ``f_D``: frozen means eval mode (batch-norm statistics
    fixed) and ``requires_grad=False``; gradients still flow *through* it to its input.
    """
    x = _images(x)
    y = _labels(y, x.shape[0])
    epochs = check_int(epochs, "epochs", low=1)
    aug = torch.cat(
        [hole_augment(x, classes=classes, p=hole_p, baseline=baseline, seed=seed + 7 * e) for e in range(epochs)]
    )
    ys = y.repeat(epochs)
    cut = round(check_float(decay_at, "decay_at", low=0.0, high=1.0) * aug.shape[0])
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        det = TinyCNN(n_classes=len(classes), in_ch=x.shape[1])
    for part, rate in ((slice(0, cut), lr), (slice(cut, None), 0.2 * lr)):
        if aug[part].shape[0]:
            fit(det, (aug[part], ys[part]), epochs=1, lr=rate, batch_size=batch_size, seed=seed, device=device,
                show_progress=show_progress)  # fmt: skip
    return freeze(det)


def freeze(model: nn.Module) -> nn.Module:
    """Put ``model`` in eval mode with every parameter's ``requires_grad`` off (in place); return it."""
    check_model(model, "model").eval()
    for prm in model.parameters():
        prm.requires_grad_(False)
    return model


# ----------------------------------------------------------------------------------------------
# Step 3: the objective


def comet_loss(
    logits_p: torch.Tensor,
    logits_d: torch.Tensor,
    y: torch.Tensor,
    m: torch.Tensor,
    *,
    a: float = 4.0,
    gap: float = 2.0,
    b: float = 100.0,
    tau: float = 0.6,
    beta: float = 0.0,
    form: str = "hinge",
) -> dict[str, torch.Tensor]:
    """COMET's selector objective, term by term (each a scalar, batch mean).

    - ``l_p`` = CE of the predictor on ``x_s``; ``l_d`` = CE of the frozen detector on ``x_{1−s}``;
    - ``detector_term``: ``form="hinge"`` (the official code) is ``max(l_p − l_d + gap, 0)``; it
      stops pushing once the detector is ``gap`` nats worse on the complement than the predictor
      on the selection. ``form="subtract"`` (the abstract's form) is ``−l_d``, unbounded below;
    - ``area_hinge`` = ``mean_b max(mean(m_b) − τ, 0)`` (the paper's sparsity term);
    - ``l1`` = ``mean(m)`` (the tutorial's always-on sparsity, weight ``beta``);
    - ``selector`` = ``l_p + a·detector_term + b·area_hinge + beta·l1``; ``predictor`` = ``l_p``.

    ``a = 0`` is the plain selector–predictor baseline.
    """
    logits_p = check_tensor(logits_p, "logits_p", ndim=2, dtype="float", finite=False, layout="[B, K]")
    logits_d = check_tensor(logits_d, "logits_d", ndim=2, dtype="float", finite=False, layout="[B, K]")
    if logits_p.shape != logits_d.shape:
        raise InputError(f"`logits_p` {tuple(logits_p.shape)} and `logits_d` {tuple(logits_d.shape)} must match")
    y = _labels(y, logits_p.shape[0])
    if int(y.max()) >= logits_p.shape[1]:
        raise InputError(f"`y` must lie in [0, {logits_p.shape[1]}); got max {int(y.max())}")
    m = check_tensor(m, "m", ndim=3, dtype="float", finite=False, layout="[B, H, W]")
    if m.shape[0] != logits_p.shape[0]:
        raise InputError(f"`m` has {m.shape[0]} masks but the batch has {logits_p.shape[0]} logits")
    a, gap, b = check_float(a, "a", low=0.0), check_float(gap, "gap", low=0.0), check_float(b, "b", low=0.0)
    tau, beta = check_float(tau, "tau", low=0.0, high=1.0), check_float(beta, "beta", low=0.0)
    check_choice(form, ("hinge", "subtract"), "form")
    l_p = F.cross_entropy(logits_p, y)
    l_d = F.cross_entropy(logits_d, y)
    det = F.relu(l_p - l_d + gap) if form == "hinge" else -l_d
    area = F.relu(m.flatten(1).mean(1) - tau).mean()
    l1 = m.mean()
    sel = l_p + a * det + b * area + beta * l1
    return {
        "selector": sel,
        "predictor": l_p,
        "l_p": l_p,
        "l_d": l_d,
        "detector_term": det,
        "area_hinge": area,
        "l1": l1,
    }


# ----------------------------------------------------------------------------------------------
# Step 4: joint training


@dataclass
class CometHistory:
    """Per-epoch means of every term of :func:`comet_loss`, plus the mean mask area."""

    terms: dict[str, list[float]] = field(default_factory=dict)
    steps: int = 0
    wall_s: float = 0.0


class CometModel(nn.Module):
    """Selector + predictor (+ the frozen detector, kept for the complement view).

    ``model(x)`` = the predictor's logits on the *binarised* selected view ``x_s`` (mask >
    ``threshold``), which is how COMET is evaluated; ``model.mask(x)`` the soft mask ``[B, H, W]``.
    """

    def __init__(self, selector: nn.Module, predictor: nn.Module, detector: nn.Module, *,
                 baseline: float | torch.Tensor = 0.5, threshold: float = 0.5):  # fmt: skip
        super().__init__()
        self.selector, self.predictor = check_model(selector, "selector"), check_model(predictor, "predictor")
        self.detector = check_model(detector, "detector")
        self.baseline = baseline
        self.threshold = check_float(threshold, "threshold", low=0.0, high=1.0)

    def mask(self, x: torch.Tensor) -> torch.Tensor:
        return mask_of(self.selector, x)

    def views(self, x: torch.Tensor, *, binarise: bool = True) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(m, x_s, x_{1−s})`` with ``m`` binarised at ``threshold`` (or soft)."""
        m = self.mask(x)
        if binarise:
            m = (m > self.threshold).to(x.dtype)
        return (m, *compose_views(x, m, self.baseline))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.predictor(self.views(x)[1])


def comet_model(
    n_classes: int = 4,
    in_ch: int = 3,
    width: int = 16,
    baseline: float = 0.5,
    threshold: float = 0.5,
    normalise: bool = False,
) -> CometModel:
    """A fresh small-scale :class:`CometModel` (a :class:`TinySelector` of ``width``, a TinyCNN predictor and a
    frozen TinyCNN detector): what the zoo builds from ``{"arch": "CometModel", "kwargs": {...}}`` before
    loading a checkpoint's weights."""
    n_classes, in_ch = check_int(n_classes, "n_classes", low=2), check_int(in_ch, "in_ch", low=1)
    detector = freeze(TinyCNN(n_classes=n_classes, in_ch=in_ch))
    return CometModel(
        TinySelector(in_ch=in_ch, width=width, normalise=normalise),
        TinyCNN(n_classes=n_classes, in_ch=in_ch),
        detector,
        baseline=check_float(baseline, "baseline"),
        threshold=threshold,
    )


def predictor_from_detector(detector: nn.Module) -> nn.Module:
    """A trainable copy of ``detector`` (training mode, ``requires_grad`` on) to start the predictor from.

    The paper trains its predictor from scratch for 200 epochs; six epochs are not enough for a
    fresh TinyCNN to learn the task while the mask moves under it (the mask then collapses onto
    noise, the *interlocking* the paper describes). Starting both the baseline and COMET from the
    detector's weights keeps the comparison paired and gives each a predictor that already works.
    """
    import copy

    pred = copy.deepcopy(check_model(detector, "detector")).train()
    for prm in pred.parameters():
        prm.requires_grad_(True)
    return pred


def straight_through(m: torch.Tensor, threshold: float = 0.5) -> torch.Tensor:
    """The binarised mask ``(m > threshold)`` in value, with the gradient of the soft ``m``.

    ``hard + m − m.detach()``: equal to ``hard`` in the forward pass, ``∂/∂m = 1`` in the backward
    pass (the straight-through estimator of Bengio et al., 2013).
    """
    m = check_tensor(m, "m", dtype="float", finite=False)
    threshold = check_float(threshold, "threshold", low=0.0, high=1.0)
    hard = (m > threshold).to(m.dtype)
    return hard + m - m.detach()


def train_comet(
    x: torch.Tensor,
    y: torch.Tensor,
    detector: nn.Module,
    *,
    a: float = 4.0,
    gap: float = 2.0,
    b: float = 100.0,
    tau: float = 0.6,
    beta: float = 0.0,
    form: str = "hinge",
    baseline: float | torch.Tensor = 0.5,
    selector: nn.Module | None = None,
    predictor: nn.Module | None = None,
    epochs: int = 6,
    batch_size: int = 64,
    lr: float = 1e-3,
    selector_lr: float | None = 5e-4,
    decay_at: float = 0.75,
    warmup_epochs: int = 1,
    beta_ramp_epochs: float = 0.0,
    straight_through: bool = True,
    area_on: str = "soft",
    selector_init_bias: float = 0.5,
    normalise_logits: bool = False,
    seed: int = 0,
    device: str = "cpu",
    show_progress: bool = True,
) -> tuple[CometModel, CometHistory]:
    """Train selector and predictor jointly against a frozen ``detector``; return the model and history.

    Two Adam optimizers, as in the official code: the selector follows ``L_selector`` (gradients
    reach it through both views), the predictor follows ``ℓ_P`` only. Each loss is backpropagated
    into its own parameters only (``backward(inputs=...)``), the separation the paper intends
    (the official code can leak the selector loss into the predictor). The detector is frozen
    (:func:`freeze`). Both learning rates drop ×0.2 after ``decay_at`` of the epochs (the paper's
    multi-step schedule, shortened). During the first ``warmup_epochs`` only the predictor learns
    (on the initial, nearly full mask), so that ``ℓ_P`` already says which pixels matter when the
    sparsity terms start to carve the mask. ``beta_ramp_epochs`` > 0 ramps the always-on sparsity
    weight linearly from 0 to ``beta`` over that many epochs after the warm-up (step by step), so the
    selector learns which pixels the predictor needs before the L1 pressure is at full strength
    (the usual sparsity warm-up of selector–predictor models; without it, the mask can fall below
    the threshold everywhere at once and the predictor lands at chance). ``straight_through=True`` (a small-scale choice, not the
    paper's) composes the views with the *binarised* mask ``m > 0.5`` in the forward pass and
    lets the soft mask's gradient through in the backward pass (:func:`straight_through`): with a
    soft mask, a batch-norm predictor divides out a uniform dimming ``m·x + (1−m)·q``, so the
    sparsity terms shrink the mask everywhere at no cost in ``ℓ_P`` and the binarised mask ends
    empty. ``area_on="selected"`` (with ``straight_through``) computes the area hinge and the L1
    term on that same binarised mask (straight-through gradient), so ``τ`` bounds the share of
    pixels the predictor actually sees; ``"soft"`` (the paper's) on the soft mask, whose mean can sit
    at ``τ`` while every pixel is below the cut. ``selector_init_bias`` and ``normalise_logits``
    build the default :class:`TinySelector` (``init_bias``, ``normalise``); they are ignored when
    ``selector`` is given. Same ``seed`` ⇒ same initial weights and data order, so runs that differ
    only in ``a`` or ``form`` are paired. Default models: :class:`TinySelector` and a
    :class:`~xattr_nb.models.TinyCNN` predictor.
    """
    x = _images(x)
    y = _labels(y, x.shape[0])
    detector = freeze(check_model(detector, "detector"))
    epochs, batch_size = check_int(epochs, "epochs", low=1), check_int(batch_size, "batch_size", low=1)
    lr = check_float(lr, "lr", low=1e-12)
    selector_lr = lr if selector_lr is None else check_float(selector_lr, "selector_lr", low=1e-12)
    seed = check_int(seed, "seed", low=0, high=2**32 - 1)
    kw = {"a": a, "gap": gap, "b": b, "tau": tau, "beta": beta, "form": form}
    check_choice(area_on, ("soft", "selected"), "area_on")
    if area_on == "selected" and not straight_through:
        raise InputError('`area_on="selected"` needs `straight_through=True` (the binarised mask it measures)')
    with torch.no_grad():
        n_classes = logits_of(detector(x[:1].to(device_of(detector)))).shape[-1]
    if int(y.max()) >= n_classes:
        raise InputError(f"`y` must lie in [0, {n_classes}) (the detector's classes); got max {int(y.max())}")
    dev = pick_device(device)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        selector = (
            TinySelector(in_ch=x.shape[1], init_bias=selector_init_bias, normalise=normalise_logits)
            if selector is None
            else check_model(selector, "selector")
        )
        predictor = (
            TinyCNN(n_classes=n_classes, in_ch=x.shape[1]) if predictor is None else check_model(predictor, "predictor")
        )
    model = CometModel(selector, predictor, detector, baseline=baseline).to(dev)
    sel_params = [p for p in selector.parameters() if p.requires_grad]
    pred_params = [p for p in predictor.parameters() if p.requires_grad]
    opt_s = torch.optim.Adam(sel_params, lr=selector_lr)
    opt_p = torch.optim.Adam(pred_params, lr=lr)
    gen = torch.Generator().manual_seed(seed)
    hist = CometHistory()

    t0 = time.perf_counter()
    selector.train()
    predictor.train()
    warmup_epochs = check_int(warmup_epochs, "warmup_epochs", low=0, high=epochs - 1)
    ramp = check_float(beta_ramp_epochs, "beta_ramp_epochs", low=0.0)
    decay_epoch = math.ceil(check_float(decay_at, "decay_at", low=0.0, high=1.0) * epochs)
    for epoch in progress(range(epochs), desc=f"COMET a={a:g}", unit="epoch", disable=not show_progress):
        if epoch == decay_epoch:
            for opt in (opt_s, opt_p):
                for group in opt.param_groups:
                    group["lr"] *= 0.2
        sums: dict[str, float] = {}
        order = torch.randperm(x.shape[0], generator=gen)
        for s in range(0, len(order), batch_size):
            idx = order[s : s + batch_size]
            xb, yb = x[idx].to(dev), y[idx].to(dev)
            m = mask_of(selector, xb)
            m_used = _st(m) if straight_through else m
            xs, xc = compose_views(xb, m_used, baseline)
            done = epoch - warmup_epochs + s / x.shape[0]  # selector epochs done so far
            kw["beta"] = beta * (min(1.0, max(0.0, done) / ramp) if ramp > 0 else 1.0)
            terms = comet_loss(predictor(xs), detector(xc), yb, m_used if area_on == "selected" else m, **kw)
            if not torch.isfinite(terms["selector"]):
                raise InputError(
                    f"the selector loss became {float(terms['selector'])} at step {hist.steps}; lower `lr`"
                )
            opt_s.zero_grad(set_to_none=True)
            opt_p.zero_grad(set_to_none=True)
            terms["selector"].backward(inputs=sel_params, retain_graph=True)
            terms["predictor"].backward(inputs=pred_params)
            if epoch >= warmup_epochs:
                opt_s.step()
            opt_p.step()
            hist.steps += 1
            terms["area"] = m.detach().mean()
            terms["selected_area"] = (m.detach() > 0.5).float().mean()
            terms["beta"] = torch.tensor(kw["beta"])
            for k, v in terms.items():
                sums[k] = sums.get(k, 0.0) + float(v.detach()) * len(idx)
        for k, v in sums.items():
            hist.terms.setdefault(k, []).append(v / x.shape[0])
    model.eval()
    hist.wall_s = time.perf_counter() - t0
    return model, hist


_st = straight_through  # the name is shadowed by train_comet's flag


# ----------------------------------------------------------------------------------------------
# Step 5: evaluation against the ground truth


def split_copies(masks: torch.Tensor) -> torch.Tensor:
    """Split each twin-glyph mask ``[N, H, W]`` into its two largest 8-connected parts: ``[N, 2, H, W]``.

    ShapesWorld's ``twin=True`` draws two non-touching copies, so each mask has exactly two parts
    (solid glyphs); scipy's ``ndimage.label`` finds them. A mask with one part gets an empty second.
    """
    from scipy import ndimage

    masks = check_tensor(masks, "masks", ndim=3, dtype="bool", layout="[N, H, W]")
    out = torch.zeros(masks.shape[0], 2, *masks.shape[1:], dtype=torch.bool)
    for i, mk in enumerate(masks.cpu().numpy()):
        lab, _ = ndimage.label(mk, structure=np.ones((3, 3)))
        sizes = np.bincount(lab.ravel())[1:]
        for j, comp in enumerate(np.argsort(-sizes)[:2]):
            out[i, j] = torch.from_numpy(lab == comp + 1)
    return out


def topk_mask(maps: torch.Tensor, fraction: float | torch.Tensor) -> torch.Tensor:
    """Binarise maps ``[B, H, W]`` at their top ``fraction`` of pixels (ties broken by index): bool ``[B, H, W]``.

    ``fraction`` is one number for every map, or a tensor ``[B]`` of per-image fractions (e.g. the
    area of another method's mask on the same image). Used to compare masks at matched area.
    """
    maps = check_tensor(maps, "maps", ndim=3, dtype="float", layout="[B, H, W]")
    flat = maps.flatten(1)
    if isinstance(fraction, torch.Tensor):
        fr = check_tensor(fraction, "fraction", shape=(maps.shape[0],), dtype="float", layout="[B]").double().cpu()
        if bool(((fr < 0) | (fr > 1)).any()):
            raise InputError("`fraction` must lie in [0, 1]")
        ks = (fr * flat.shape[1]).round().long().tolist()
    else:
        ks = [round(check_float(fraction, "fraction", low=0.0, high=1.0) * flat.shape[1])] * maps.shape[0]
    order = flat.argsort(dim=1, descending=True, stable=True)
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(flat.shape[1], device=flat.device).expand_as(order))
    keep = rank < torch.tensor(ks, device=flat.device)[:, None]
    return keep.reshape(maps.shape)


@torch.no_grad()
def evaluate_masks(
    detector: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    gt: torch.Tensor,
    masks: torch.Tensor,
    *,
    baseline: float | torch.Tensor = 0.5,
    batch_size: int = 256,
) -> dict[str, torch.Tensor]:
    """Per-image metrics of any binary masks ``[N, H, W]`` against the twin-glyph ground truth.

    Returns ``[N]`` tensors: ``comp_correct`` (the frozen ``detector`` on the complement ``x_{1−s}``:
    lower = more complete; chance is 1/K), ``recall`` (share of GT pixels selected), ``both_copies``
    (each copy > 50 % selected), ``iou`` (with the GT mask) and ``area`` (selected share of the
    image). ``gt`` is the union of the two copies ``[N, H, W]`` bool. The same function scores
    COMET's masks (:func:`evaluate`) and any control: post-hoc maps binarised by :func:`topk_mask`,
    random masks of matched area, the all-ones mask.
    """
    detector = check_model(detector, "detector")
    x = _images(x)
    y = _labels(y, x.shape[0])
    gt = check_tensor(gt, "gt", shape=(x.shape[0], *x.shape[2:]), dtype="bool", layout="[N, H, W]")
    masks = check_tensor(masks, "masks", shape=(x.shape[0], *x.shape[2:]), dtype="bool", layout="[N, H, W]")
    batch_size = check_int(batch_size, "batch_size", low=1)
    dev = device_of(detector)
    ok_d = []
    with eval_mode(detector):
        for s in range(0, x.shape[0], batch_size):
            xb, mb = x[s : s + batch_size].to(dev), masks[s : s + batch_size].to(dev)
            _, xc = compose_views(xb, mb.to(xb.dtype), baseline)
            ok_d.append(logits_of(detector(xc), ndim=2).argmax(-1).cpu() == y[s : s + batch_size].cpu())
    m, gt = masks.cpu(), gt.cpu()
    copies = split_copies(gt)
    per_copy = (m[:, None] & copies).flatten(2).sum(-1) / copies.flatten(2).sum(-1).clamp_min(1)
    return {
        "comp_correct": torch.cat(ok_d).float(),
        "recall": (m & gt).flatten(1).sum(1) / gt.flatten(1).sum(1).clamp_min(1),
        "both_copies": (per_copy > 0.5).all(1).float(),
        "iou": mask_iou(m, gt).float(),
        "area": m.flatten(1).float().mean(1),
    }


def _p_true(detector: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int) -> torch.Tensor:
    dev = device_of(detector)
    out = []
    with eval_mode(detector):
        for s in range(0, x.shape[0], batch_size):
            logits = logits_of(detector(x[s : s + batch_size].to(dev)), ndim=2)
            out.append(logits.softmax(-1).gather(1, y[s : s + batch_size].to(dev)[:, None])[:, 0].cpu())
    return torch.cat(out)


@torch.no_grad()
def comprehensiveness(
    detector: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    masks: torch.Tensor,
    *,
    baseline: float | torch.Tensor = 0.5,
    batch_size: int = 256,
) -> torch.Tensor:
    """Per-image comprehensiveness ``[N]`` of binary masks (ERASER, DeYoung et al. 2020):
    ``p_D(y | x) − p_D(y | x_{1−s})``, the detector's probability of the true class on the full image
    minus on the complement (selected pixels replaced by ``q``). Higher = the mask took more of the
    evidence. It grows with the mask's area whatever the mask selects (the all-ones mask removes
    everything); :func:`area_normalised_comprehensiveness` removes that part."""
    detector = check_model(detector, "detector")
    x = _images(x)
    y = _labels(y, x.shape[0])
    masks = check_tensor(masks, "masks", shape=(x.shape[0], *x.shape[2:]), dtype="bool", layout="[N, H, W]")
    batch_size = check_int(batch_size, "batch_size", low=1)
    _, xc = compose_views(x, masks.to(x.device, x.dtype), baseline)
    return _p_true(detector, x, y, batch_size) - _p_true(detector, xc, y, batch_size)


@torch.no_grad()
def area_normalised_comprehensiveness(
    detector: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    masks: torch.Tensor,
    *,
    baseline: float | torch.Tensor = 0.5,
    n_random: int = 4,
    seed: int = 0,
    batch_size: int = 256,
) -> torch.Tensor:
    """Comprehensiveness beyond what the mask's size alone buys, per image ``[N]``.

    :func:`comprehensiveness` of ``masks`` minus its mean over ``n_random`` uniformly random masks
    with exactly the same number of pixels on the same image. 0 for the all-ones and the empty mask
    (every mask of that size is the mask itself), about 0 in expectation for a random mask of any
    size, positive only when the mask removes more evidence than its size predicts, negative when
    it removes less. A bigger mask cannot win by being bigger.
    """
    detector = check_model(detector, "detector")
    x = _images(x)
    y = _labels(y, x.shape[0])
    masks = check_tensor(masks, "masks", shape=(x.shape[0], *x.shape[2:]), dtype="bool", layout="[N, H, W]")
    n_random = check_int(n_random, "n_random", low=1)
    gen = torch.Generator().manual_seed(check_int(seed, "seed", low=0))
    masks = masks.cpu()
    area = masks.flatten(1).double().mean(1)
    own = comprehensiveness(detector, x, y, masks, baseline=baseline, batch_size=batch_size)
    ref = torch.zeros_like(own)
    for _ in range(n_random):
        rand = topk_mask(torch.rand(masks.shape, generator=gen), area)
        ref += comprehensiveness(detector, x, y, rand, baseline=baseline, batch_size=batch_size) / n_random
    return own - ref


@torch.no_grad()
def evaluate(
    model: CometModel,
    x: torch.Tensor,
    y: torch.Tensor,
    gt: torch.Tensor,
    *,
    batch_size: int = 256,
) -> dict[str, torch.Tensor]:
    """Per-image metrics of a trained :class:`CometModel` (masks binarised at ``model.threshold``).

    ``pred_correct`` (the predictor on ``x_s``), then every metric of :func:`evaluate_masks` on the
    model's own masks with its frozen detector: ``comp_correct``, ``recall``, ``both_copies``, ``iou``,
    ``area``.
    """
    if not isinstance(model, CometModel):
        raise InputError(f"`model` must be a CometModel (from train_comet); got {type(model).__name__}")
    x = _images(x)
    y = _labels(y, x.shape[0])
    batch_size = check_int(batch_size, "batch_size", low=1)
    dev = device_of(model)
    sel, ok_p = [], []
    with eval_mode(model):
        for s in range(0, x.shape[0], batch_size):
            m, xs, _ = model.views(x[s : s + batch_size].to(dev))
            sel.append(m.bool().cpu())
            ok_p.append(logits_of(model.predictor(xs), ndim=2).argmax(-1).cpu() == y[s : s + batch_size].cpu())
    rest = evaluate_masks(model.detector, x, y, gt, torch.cat(sel), baseline=model.baseline, batch_size=batch_size)
    return {"pred_correct": torch.cat(ok_p).float(), **rest}


# ----------------------------------------------------------------------------------------------
# Entry point as an attribution


def explain(model: CometModel, x: torch.Tensor, target: Any = None) -> Attribution:
    """COMET's explanation of ``x``: the selector's soft mask as a pixel :class:`Attribution`.

    The mask does not depend on the class asked for (one mask explains the prediction);
    ``target`` defaults to the predictor's class. Cost: one selector + one predictor forward.
    """
    if not isinstance(model, CometModel):
        raise InputError(f"`model` must be a CometModel (from train_comet); got {type(model).__name__}")
    x = _images(x)

    t0 = time.perf_counter()
    with torch.no_grad(), eval_mode(model):
        m = model.mask(x)
        xs = compose_views(x, (m > model.threshold).to(x.dtype), model.baseline)[0]
        pred = logits_of(model.predictor(xs), ndim=2).argmax(-1)
    if target is None:
        target = pred
    elif isinstance(target, int):
        target = torch.full((x.shape[0],), target)
    tgt = _labels(torch.as_tensor(target), x.shape[0], "target")
    return Attribution(scores=m.float().cpu(), kind="pixels", method="comet", target=tgt.cpu(),
                       cost=Cost(2 * x.shape[0], 0, time.perf_counter() - t0), meta={"threshold": model.threshold})  # fmt: skip


def selector_scores(model: nn.Module, inputs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The selector's mask ``[B, H, W]`` of a :class:`CometModel`: what ``attribute(model, x, y, method="comet")``
    returns as scores (the mask does not depend on ``target``)."""
    if not isinstance(model, CometModel):
        raise InputError(f"method 'comet' needs a CometModel (from train_comet); got {type(model).__name__}")
    return model.mask(inputs)


# ----------------------------------------------------------------------------------------------
# Full scale: ImageNet-9 folders, DeepLabv3 selector, ResNet-18 predictor and detector


def full_scale_models(
    n_classes: int,
    *,
    selector: str | os.PathLike = "apple/deeplabv3-mobilevit-small",
    backbone: str | os.PathLike = "microsoft/resnet-18",
    local_files_only: bool | None = None,
) -> tuple[nn.Module, nn.Module, nn.Module]:
    """``(selector, predictor, detector)`` for the paper's setting, built with transformers.

    - selector: a DeepLabv3 segmentation model with a 1-class head (torchvision's DeepLabv3-ResNet50
      is what the paper uses; transformers offers DeepLabv3 on MobileViT, which needs no torchvision);
    - predictor: the ``backbone`` architecture (ResNet-18) *from scratch* (the 2-player config);
    - detector: the ``backbone`` pretrained weights with a fresh ``n_classes`` head, to be trained
      on full images (:func:`fit`) and then frozen (:func:`freeze`) before :func:`train_comet`.

    Names are HF hub names or local folders (``save_pretrained``); offline first, like
    :mod:`xattr_nb.models.hub`. Every model takes [0, 1] images and returns a logits tensor.
    """
    import transformers
    from transformers import AutoConfig, AutoModelForImageClassification, AutoModelForSemanticSegmentation

    transformers.utils.logging.disable_progress_bar()  # its bar becomes a widget in notebooks
    n_classes = check_int(n_classes, "n_classes", low=2)
    offline = os.environ.get("HF_HUB_OFFLINE", "0") not in ("", "0") if local_files_only is None else local_files_only

    def load(auto: Any, name: Any, what: str, pretrained: bool, **kw: Any) -> nn.Module:
        name = os.fspath(name)
        try:
            if pretrained:
                return auto.from_pretrained(
                    name, local_files_only=offline, ignore_mismatched_sizes=True, use_safetensors=True, **kw
                )
            return auto.from_config(AutoConfig.from_pretrained(name, local_files_only=offline, **kw))
        except OSError as exc:
            raise InputError(f"cannot load {what} {name!r} (offline={offline}): {exc}") from exc

    sel = load(AutoModelForSemanticSegmentation, selector, "selector", True, num_labels=1)
    pred = load(AutoModelForImageClassification, backbone, "predictor", False, num_labels=n_classes)
    det = load(AutoModelForImageClassification, backbone, "detector", True, num_labels=n_classes)
    return ImageClassifier(sel), ImageClassifier(pred), ImageClassifier(det)
