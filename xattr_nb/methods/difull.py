"""DiFull, DiPart, GridPG, ML-Att and AggAtt: evaluating attribution methods where the truth is known by construction.

Rao, Böhle & Schiele, "Better Understanding Differences in Attribution Methods via Systematic
Evaluations" (TPAMI 2024; CVPR'22 precursor "Towards Better Understanding Attribution Methods").

The idea: put ``n × n`` images of *distinct* classes side by side in a grid and give the model one
classification head per cell. Then an explanation of head ``k`` should point into cell ``k``. How
strictly that holds depends on how the heads are wired to the grid (a *setting*):

- :class:`GridPG`: the unchanged model on the whole grid; one head, whose target is the class of
  cell ``k``. The model *could* use other cells (its receptive fields cross borders), so
  localization is only a plausible expectation.
- :class:`DiFull`: head ``k`` sees **only** cell ``k``: the grid is sliced before the network and
  every cell runs separately. Head ``k`` is provably disconnected from the other cells, so any
  attribution there is unfaithful, whatever the data.
- :class:`DiPart`: the conv backbone runs on the whole grid; head ``k`` pools only the ``k``-th
  part of the last feature map. Disconnected at the final layer, partly connected below it.

**ML-Att** evaluates every method at the same layers (``input``, ``middle``, ``final``: the
``taps`` of every setting), and the **localization score** (:func:`localization`) is the share of
positive attribution inside the head's cell. **AggAtt** (:func:`aggatt_bins`) sorts the maps of
a data set by that score and averages them per percentile bin. **Smoothing**
(:func:`gaussian_smooth`) blurs input-layer maps, which the TPAMI paper finds lifts IxG and
IntGrad to the localization of final-layer Grad-CAM.

The steps, in the order the notebook calls them:
:func:`train_backbone` → :func:`confident` → :func:`make_confident_grids` → :func:`make_setting`
→ :func:`head_batch` → :func:`attribute_at` → :func:`localization` → :func:`evaluate` (all methods
and layers of one setting) → :func:`aggatt_bins`. :func:`explain` chains them for all settings.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from xattr_nb import plots
from xattr_nb.attribution import attribute
from xattr_nb.attribution.layers import upsample as upsample_maps
from xattr_nb.checks import InputError, check_choice, check_float, check_int, check_tensor
from xattr_nb.models import ImageClassifier, TinyCNN, fit
from xattr_nb.models.io import check_model, device_of, eval_mode, logits_of
from xattr_nb.runtime import Cost, progress, timer
from xattr_nb.worlds import grids as grid_world
from xattr_nb.worlds.digits import make_digits

__all__ = [
    "AGGATT_EDGES",
    "DEFAULT_METHODS",
    "LAYERS",
    "SETTINGS",
    "DiFull",
    "DiPart",
    "GridPG",
    "GridSetting",
    "SettingLocalization",
    "Stages",
    "aggatt_bins",
    "attribute_at",
    "confident",
    "eval_heads",
    "evaluate",
    "explain",
    "from_cells",
    "gaussian_smooth",
    "head_batch",
    "localization",
    "make_confident_grids",
    "make_setting",
    "plot_aggatt",
    "stages_of",
    "to_cells",
    "train_backbone",
]

SETTINGS: tuple[str, ...] = ("GridPG", "DiFull", "DiPart")
LAYERS: tuple[str, ...] = ("input", "middle", "final")
#: AggAtt's bin edges (fractions of the maps sorted by localization, best first), as in the paper.
AGGATT_EDGES: tuple[float, ...] = (0.0, 0.02, 0.05, 0.5, 0.95, 0.98, 1.0)

#: ML-Att: each method and the layers it is evaluated at (the spec's small-scale list).
#: ``grad``/``guided_backprop`` are absolute values; ``s_ixg``/``s_int_grad`` are the smoothed
#: input maps of the TPAMI version.
DEFAULT_METHODS: dict[str, tuple[str, ...]] = {
    "grad": ("input",),
    "guided_backprop": ("input",),
    "ixg": LAYERS,
    "int_grad": ("input",),
    "s_ixg": ("input",),
    "s_int_grad": ("input",),
    "grad_cam": LAYERS,
    "layer_cam": LAYERS,
    "occlusion": ("input",),
}


# ============================================================================================
# Step 0: data and backbone (small scale: sklearn digits and a TinyCNN)
# ============================================================================================


def train_backbone(
    *, size: int = 16, epochs: int = 10, seed: int = 0, device: str = "cpu", show_progress: bool = True
) -> tuple[TinyCNN, Any, Any, float]:
    """Train a 1-channel :class:`~xattr_nb.models.TinyCNN` on 80 % of sklearn's digits upsampled to ``size``.

    Returns ``(model, train, test, test_accuracy)``; ``train``/``test`` are
    :class:`~xattr_nb.worlds.digits.DigitsData` (stratified split, clean labels). The grids are
    built from ``test`` only, so every evaluated cell is held out from training.
    """
    from xattr_nb.models import accuracy

    size = check_int(size, "size", low=8, high=128)
    epochs = check_int(epochs, "epochs", low=1)
    train, test = make_digits(size=size, test_size=0.2, seed=seed)
    torch.manual_seed(seed)
    model = TinyCNN(n_classes=10, in_ch=1)
    fit(
        model,
        (train.images, train.labels),
        epochs=epochs,
        lr=3e-3,
        seed=seed,
        device=device,
        show_progress=show_progress,
    )
    dev = device_of(model)
    return model, train, test, accuracy(model, test.images.to(dev), test.labels.to(dev))


@torch.no_grad()
def confident(model: nn.Module, images: Any, labels: Any, *, min_conf: float = 0.95, batch_size: int = 256):
    """Bool ``[N]``: the model predicts ``labels`` with softmax probability ≥ ``min_conf``.

    DiFull keeps only such images (the official ``filter_high_conf_data``, 0.99 on ImageNet), so a
    head's evidence for its class really comes from its own cell. A backbone :func:`stages_of`
    knows runs through its stages, exactly as the settings run it (an HF ResNet gets its
    normalization there); any other module gets ``images`` as they are.
    """
    x = check_tensor(images, "images", ndim=4, dtype="float", layout="[N, C, H, W]")
    y = check_tensor(labels, "labels", shape=(x.shape[0],), dtype="int", layout="[N]").long()
    min_conf = check_float(min_conf, "min_conf", low=0.0, high=1.0)
    check_model(model)
    try:
        net: nn.Module = GridPG(model, scale=1)
    except InputError:
        net = model
    dev = device_of(model)
    with eval_mode(net):
        probs = torch.cat(
            [logits_of(net(x[s : s + batch_size].to(dev))).softmax(-1).cpu() for s in range(0, len(x), batch_size)]
        )
    if int(y.max()) >= probs.shape[1] or int(y.min()) < 0:
        raise InputError(f"`labels` must lie in [0, {probs.shape[1]}) for this model")
    p = probs.gather(1, y[:, None])[:, 0]
    return (probs.argmax(1) == y) & (p >= min_conf)


def make_confident_grids(
    model: nn.Module,
    images: Any,
    labels: Any,
    *,
    n_grids: int = 64,
    scale: int = 2,
    min_conf: float = 0.95,
    seed: int = 0,
) -> grid_world.GridData:
    """Grids from held-out images: keep those ``model`` classifies at ≥ ``min_conf``
    (:func:`confident`), then :func:`xattr_nb.worlds.grids.make_grids` (distinct classes per grid)."""
    keep = confident(model, images, labels, min_conf=min_conf)
    if int(keep.sum()) == 0:
        raise InputError(f"no image is classified correctly with confidence ≥ {min_conf}; lower `min_conf`")
    return grid_world.make_grids(images[keep], labels[keep], scale=scale, n_grids=n_grids, seed=seed)


# ============================================================================================
# Step 1: the settings (GridPG, DiFull, DiPart) around a backbone split in three stages
# ============================================================================================


@dataclass
class Stages:
    """A CNN classifier split at the ML-Att layers: ``input → to_middle → middle → to_final → final →
    head → logits``. ``head`` maps a feature map ``[B, C, h, w]`` to logits (it pools)."""

    to_middle: nn.Module
    to_final: nn.Module
    head: nn.Module
    n_classes: int


class _Normalize(nn.Module):
    """An :class:`~xattr_nb.models.ImageClassifier`'s own input normalisation as the first stage
    (its mean/std buffers then follow the setting's ``.to(device)``)."""

    def __init__(self, classifier: ImageClassifier):
        super().__init__()
        self.classifier = classifier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier.normalize(x)


class _GapHead(nn.Module):
    """Global average pooling then a linear layer: TinyCNN's ``features(...).mean`` + ``head``."""

    def __init__(self, linear: nn.Module):
        super().__init__()
        self.linear = linear

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x.mean(dim=(2, 3)))


def stages_of(model: nn.Module) -> Stages:
    """Split a supported backbone at its ML-Att layers (the modules are shared, not copied).

    - :class:`~xattr_nb.models.TinyCNN`: ``middle`` after block ``len(widths) // 2 - 1`` (the
      model's own ``taps["middle"]``), ``final`` = the last block's output, head = GAP + linear.
    - :class:`~xattr_nb.models.ImageClassifier` wrapping a Hugging Face ``ResNetForImageClassification``
      (:func:`xattr_nb.models.load_image_classifier`, e.g. ``"microsoft/resnet-18"``): the
      classifier's normalization + stem + stages 1–2 → ``middle`` (the paper's "after layer2"),
      stages 3–4 → ``final`` ("after layer4"), head = average pool + classifier. A bare HF ResNet
      is wrapped first, with ImageNet's mean and std.
    """
    if isinstance(model, TinyCNN):
        m = len(model.widths) // 2 - 1
        blocks = list(model.blocks)
        to_middle: nn.Module = nn.Sequential(*blocks[: m + 1]) if m >= 0 else nn.Identity()
        rest: list[nn.Module] = []
        for i in range(m + 1, len(blocks)):
            if i > 0:
                rest.append(model.pool)
            rest.append(blocks[i])
        return Stages(to_middle, nn.Sequential(*rest), _GapHead(model.head), model.n_classes)
    if not isinstance(model, ImageClassifier) and hasattr(model, "resnet"):
        model = ImageClassifier(model).to(device_of(model))  # a bare HF ResNet: ImageNet statistics
    resnet = getattr(model.hf, "resnet", None) if isinstance(model, ImageClassifier) else None
    if resnet is not None and hasattr(resnet, "encoder") and hasattr(model.hf, "classifier"):
        st = list(resnet.encoder.stages)
        half = len(st) // 2
        return Stages(
            nn.Sequential(_Normalize(model), resnet.embedder, *st[:half]),
            nn.Sequential(*st[half:]),
            nn.Sequential(resnet.pooler, model.hf.classifier),
            int(model.hf.config.num_labels),
        )
    raise InputError(
        f"`model` must be a TinyCNN or a Hugging Face ResNetForImageClassification; got {type(model).__name__}. "
        "Build a Stages(to_middle, to_final, head, n_classes) yourself for another CNN."
    )


def to_cells(x: torch.Tensor, scale: int) -> torch.Tensor:
    """Slice grids ``[B, C, s·h, s·w]`` into cells ``[B·s², C, h, w]``, grid-major, cells row-major."""
    x = check_tensor(x, "x", ndim=4, finite=False, layout="[B, C, H, W]")
    scale = check_int(scale, "scale", low=1)
    b, c, hh, ww = x.shape
    if hh % scale or ww % scale:
        raise InputError(f"`x` sides {hh}×{ww} must be divisible by `scale` {scale}")
    h, w = hh // scale, ww // scale
    return x.reshape(b, c, scale, h, scale, w).permute(0, 2, 4, 1, 3, 5).reshape(b * scale * scale, c, h, w)


def from_cells(t: torch.Tensor, scale: int) -> torch.Tensor:
    """Stitch cells ``[B·s², C, h, w]`` back into grids ``[B, C, s·h, s·w]`` (inverse of :func:`to_cells`)."""
    t = check_tensor(t, "t", ndim=4, finite=False, layout="[B*s*s, C, h, w]")
    scale = check_int(scale, "scale", low=1)
    k = scale * scale
    if t.shape[0] % k:
        raise InputError(f"`t` has {t.shape[0]} cells, not a multiple of scale² = {k}")
    n, c, h, w = t.shape
    return t.reshape(n // k, scale, scale, c, h, w).permute(0, 3, 1, 4, 2, 5).reshape(n // k, c, scale * h, scale * w)


class GridSetting(nn.Module):
    """Common part of the three settings: ``taps`` (``input``, ``middle``, ``final`` identity modules,
    so captum's layer methods and hooks see the grid-shaped activations), ``scale``, ``n_heads``
    and :meth:`head_target`. ``forward(x)`` returns logits ``[B, n_heads · n_classes]``."""

    name = "setting"

    def __init__(self, backbone: nn.Module | Stages, scale: int = 2):
        super().__init__()
        self.stages = backbone if isinstance(backbone, Stages) else stages_of(backbone)
        self.scale = check_int(scale, "scale", low=1, high=16)
        self.taps = nn.ModuleDict({n: nn.Identity() for n in LAYERS})
        # Registered so .to(device)/.eval() reach the backbone's modules.
        self.body = nn.ModuleList([self.stages.to_middle, self.stages.to_final, self.stages.head])
        self.n_classes = self.stages.n_classes

    @property
    def n_cells(self) -> int:
        return self.scale * self.scale

    @property
    def n_heads(self) -> int:
        return self.n_cells

    def head_target(self, k: int, c: int) -> int:
        """The captum target (a column of the flattened logits) of head ``k`` for class ``c``: ``k·n_classes + c``."""
        k = check_int(k, "k", low=0, high=self.n_cells - 1)
        c = check_int(c, "c", low=0, high=self.n_classes - 1)
        return (k if self.n_heads > 1 else 0) * self.n_classes + c

    def _check(self, x: torch.Tensor) -> torch.Tensor:
        x = check_tensor(x, "x", ndim=4, dtype="float", finite=False, layout="[B, C, H, W]")
        if x.shape[2] % self.scale or x.shape[3] % self.scale:
            raise InputError(f"`x` sides {tuple(x.shape[2:])} must be divisible by the grid scale {self.scale}")
        return x

    def extra_repr(self) -> str:
        return f"scale={self.scale}, n_heads={self.n_heads}, n_classes={self.n_classes}"


class GridPG(GridSetting):
    """The unchanged model on the whole grid: one head ``[B, n_classes]``; the target for cell ``k``
    is the class in cell ``k``. Receptive fields cross cell borders, so nothing is guaranteed."""

    name = "GridPG"

    @property
    def n_heads(self) -> int:
        return 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self._check(x)
        h = self.taps["middle"](self.stages.to_middle(self.taps["input"](x)))
        return self.stages.head(self.taps["final"](self.stages.to_final(h)))


class DiFull(GridSetting):
    """Head ``k`` sees only cell ``k``: slice before the network, run the cells as a batch, stitch the
    per-cell activations back into a grid at each tap (and slice again after it).

    Because cells travel as separate batch rows, the gradient of head ``k`` with respect to any
    other cell is exactly zero: an attribution outside cell ``k`` can only come from the method.
    """

    name = "DiFull"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self._check(x)
        s = self.scale
        h = self.taps["input"](x)
        h = self.taps["middle"](from_cells(self.stages.to_middle(to_cells(h, s)), s))
        h = self.taps["final"](from_cells(self.stages.to_final(to_cells(h, s)), s))
        logits = self.stages.head(to_cells(h, s))  # [B·K, C]
        return logits.reshape(x.shape[0], self.n_cells * self.n_classes)


class DiPart(GridSetting):
    """The backbone runs on the whole grid; head ``k`` pools only the ``k``-th part of the final map.

    Disconnected from the other cells at the final layer only: below it, receptive fields that
    straddle a cell border connect a head to pixels of its neighbours.
    """

    name = "DiPart"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self._check(x)
        h = self.taps["middle"](self.stages.to_middle(self.taps["input"](x)))
        f = self.taps["final"](self.stages.to_final(h))
        logits = self.stages.head(to_cells(f, self.scale))
        return logits.reshape(x.shape[0], self.n_cells * self.n_classes)


def make_setting(name: str, model: nn.Module | Stages, scale: int = 2) -> GridSetting:
    """``"GridPG"``, ``"DiFull"`` or ``"DiPart"`` around ``model``, in eval mode on the model's device."""
    name = check_choice(name, SETTINGS, "name")
    cls = {"GridPG": GridPG, "DiFull": DiFull, "DiPart": DiPart}[name]
    return cls(model, scale=scale).eval()


def eval_heads(setting: GridSetting) -> tuple[int, ...]:
    """The cells evaluated: all for GridPG, the two corners (0 and s²−1) for DiFull and DiPart, as the
    official ``eval_only_corners`` does (the corners have the fewest border-straddling neighbours)."""
    if not isinstance(setting, GridSetting):
        raise InputError(f"`setting` must be a GridPG, DiFull or DiPart; got {type(setting).__name__}")
    k = setting.n_cells
    return tuple(range(k)) if isinstance(setting, GridPG) else tuple(sorted({0, k - 1}))


def head_batch(
    setting: GridSetting, grids: grid_world.GridData, heads: Sequence[int] | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One row per (grid, head): ``(x [N, C, H, W], target [N], cell [N])``, grid-major.

    ``target`` is the column of the setting's logits for the class in that cell
    (:meth:`GridSetting.head_target`); ``heads`` defaults to :func:`eval_heads`.
    """
    if not isinstance(grids, grid_world.GridData):
        raise InputError(f"`grids` must be a GridData (xattr_nb.worlds.grids.make_grids); got {type(grids).__name__}")
    if grids.scale != setting.scale:
        raise InputError(f"`grids` have scale {grids.scale} but the setting has scale {setting.scale}")
    heads = eval_heads(setting) if heads is None else tuple(heads)
    if not heads:
        raise InputError("`heads` is empty: give at least one cell index")
    heads = tuple(check_int(k, "heads[i]", low=0, high=setting.n_cells - 1) for k in heads)
    g = len(grids)
    x = grids.images.repeat_interleave(len(heads), dim=0)
    cell = torch.tensor(heads, dtype=torch.long).repeat(g)
    cls = grids.labels.gather(1, cell.view(g, len(heads)))
    target = torch.tensor([setting.head_target(int(k), int(c)) for k, c in zip(cell, cls.flatten(), strict=True)])
    return x, target, cell


# ============================================================================================
# Step 2: attribution at a layer (ML-Att), through xattr_nb.attribution.attribute
# ============================================================================================


def _method_call(
    method: str, layer: str, setting: GridSetting, *, upsample: str, ig_steps: int, occlusion_window: int, batch: int
) -> tuple[str, dict[str, Any]]:
    """The registry name and keywords that compute ``method`` at ``layer`` of ``setting`` (ML-Att)."""
    tap = setting.taps[layer]
    up = {"interpolate_mode": upsample}
    if layer == "input":
        table: dict[str, tuple[str, dict[str, Any]]] = {
            "grad": ("saliency", {}),
            "guided_backprop": ("guided_backprop", {}),
            "ixg": ("input_x_gradient", {}),
            "s_ixg": ("input_x_gradient", {}),
            "int_grad": ("integrated_gradients", {"n_steps": ig_steps, "internal_batch_size": 4 * batch}),
            "s_int_grad": ("integrated_gradients", {"n_steps": ig_steps, "internal_batch_size": 4 * batch}),
            "grad_cam": ("grad_cam", {"layer": tap, **up}),
            "layer_cam": ("layer_cam", {"layer": tap, **up}),
            "occlusion": (
                "occlusion",
                {"window": occlusion_window, "stride": max(1, occlusion_window // 2), "internal_batch_size": 8 * batch},
            ),
        }
    else:
        table = {
            "grad": ("layer_grad", {"layer": tap, **up}),
            "ixg": ("layer_grad_x_act", {"layer": tap, **up}),
            "grad_cam": ("grad_cam", {"layer": tap, **up}),
            "layer_cam": ("layer_cam", {"layer": tap, **up}),
        }
    if method not in table:
        raise InputError(f"method {method!r} is not defined at layer {layer!r}; at {layer}: {sorted(table)}")
    return table[method]


def attribute_at(
    setting: GridSetting,
    x: torch.Tensor,
    target: torch.Tensor,
    method: str,
    layer: str = "input",
    *,
    upsample: str = "bilinear",
    ig_steps: int = 20,
    occlusion_window: int = 4,
    smooth_sigma: float = 2.0,
    smooth_ksize: int = 9,
    batch_size: int = 64,
):
    """Attribute ``target`` of ``setting`` to its ``layer`` tap with ``method`` (ML-Att); returns the
    :class:`~xattr_nb.attribution.Attribution` with pixel maps ``[N, H, W]`` at grid size.

    Every method goes through :func:`xattr_nb.attribution.attribute` (captum underneath), so the
    result carries its measured cost. Layer maps are upsampled to the grid with ``upsample``
    (``"bilinear"`` as in the paper, or ``"nearest"``, which cannot leak across a cell border).
    ``s_ixg``/``s_int_grad`` are IxG/IntGrad followed by :func:`gaussian_smooth`. Methods and
    layers: :data:`DEFAULT_METHODS`.
    """
    if not isinstance(setting, GridSetting):
        raise InputError(f"`setting` must be a GridPG, DiFull or DiPart; got {type(setting).__name__}")
    layer = check_choice(layer, LAYERS, "layer")
    upsample = check_choice(upsample, ("bilinear", "nearest"), "upsample")
    if not isinstance(method, str) or method not in DEFAULT_METHODS:
        raise InputError(f"`method` must be one of {sorted(DEFAULT_METHODS)}; got {method!r}")
    batch_size = check_int(batch_size, "batch_size", low=1)
    name, kw = _method_call(
        method,
        layer,
        setting,
        upsample=upsample,
        ig_steps=check_int(ig_steps, "ig_steps", low=1),
        occlusion_window=check_int(occlusion_window, "occlusion_window", low=1),
        batch=batch_size,
    )
    parts = []
    for s in range(0, x.shape[0], batch_size):
        parts.append(attribute(setting, x[s : s + batch_size], target[s : s + batch_size], method=name, **kw))
    cost = sum((p.cost for p in parts), Cost())
    scores = torch.cat([p.scores for p in parts])
    if method.startswith("s_"):
        scores = gaussian_smooth(scores, sigma=smooth_sigma, ksize=smooth_ksize)
    res = replace(parts[0], scores=scores, target=target.detach().clone(), cost=cost, method=method)
    res.meta = {**res.meta, "layer": layer, "registry_name": name, "upsample": upsample}
    return res


def gaussian_smooth(maps: Any, sigma: float = 2.0, ksize: int | None = None) -> torch.Tensor:
    """Blur maps ``[B, H, W]`` (or ``[B, 1, H, W]``) with a normalized Gaussian, zero padding, same size.

    ``ksize`` defaults to the odd integer nearest ``4σ + 1``. The kernel sums to 1, so the total
    mass of a map is kept away from the borders. The TPAMI paper's S-IxG / S-IntGrad: it removes
    the pixel noise of input-layer backprop maps. Written by hand (a separable 2-D convolution):
    torchvision is not a dependency.
    """
    m = check_tensor(maps, "maps", ndim=(3, 4), dtype="float", layout="[B, H, W]")
    four = m.ndim == 4
    if four and m.shape[1] != 1:
        raise InputError(f"`maps` must be [B, H, W] or [B, 1, H, W]; got {tuple(m.shape)}")
    sigma = check_float(sigma, "sigma", low=0.0)
    if sigma == 0.0:
        raise InputError("`sigma` must be > 0")
    if ksize is None:
        ksize = round(4 * sigma + 1) | 1
    ksize = check_int(ksize, "ksize", low=1)
    if ksize % 2 == 0:
        raise InputError(f"`ksize` must be odd (a centred kernel); got {ksize}")
    r = ksize // 2
    t = torch.arange(-r, r + 1, dtype=m.dtype, device=m.device)
    g = torch.exp(-(t**2) / (2 * sigma**2))
    g = g / g.sum()
    x = m if four else m[:, None]
    x = F.conv2d(x, g.view(1, 1, 1, -1), padding=(0, r))
    x = F.conv2d(x, g.view(1, 1, -1, 1), padding=(r, 0))
    return x if four else x[:, 0]


# ============================================================================================
# Step 3: the localization score (DiFull's metric)
# ============================================================================================


def localization(
    maps: Any,
    cells: Any,
    scale: int = 2,
    *,
    size: int | None = None,
    upsample: str = "bilinear",
    dilate: int = 0,
    eps: float = 1e-7,
) -> torch.Tensor:
    """Localization score per map: the share of positive attribution inside the head's cell.

    ``L = Σ_{p ∈ cell} A⁺(p) / Σ_p A⁺(p)``, and 0 when ``Σ A⁺ < eps`` (a map with no positive
    evidence localizes nothing). ``maps`` ``[B, H, W]`` (or an Attribution), ``cells`` ``[B]`` the
    cell index (row-major) of each map's head in a ``scale × scale`` grid. A coarser map is first
    upsampled to ``size × size`` (the grid side) with ``upsample`` (captum's
    ``LayerAttribution.interpolate``, as the official ``get_localization_score_single``). Chance
    level is ``1 / scale²``. ``dilate > 0`` grows the cell by that many pixels on every side, to
    ask whether the mass outside it stays near the border. The share of positive mass inside a
    region is the energy pointing game (:func:`xattr_nb.metrics.energy_pointing_game`); this adds
    DiFull's threshold, cell indexing and upsampling.
    """
    if hasattr(maps, "scores") and hasattr(maps, "kind"):
        maps = maps.scores
    m = check_tensor(maps, "maps", ndim=3, dtype="float", layout="[B, H, W]")
    scale = check_int(scale, "scale", low=1, high=16)
    c = check_tensor(
        torch.as_tensor(cells) if not isinstance(cells, torch.Tensor) else cells,
        "cells",
        shape=(m.shape[0],),
        dtype="int",
        layout="[B]",
    ).long()
    if int(c.min()) < 0 or int(c.max()) >= scale * scale:
        raise InputError(f"`cells` must lie in [0, {scale * scale}) for a {scale}×{scale} grid; got {c.tolist()}")
    upsample = check_choice(upsample, ("bilinear", "nearest"), "upsample")
    dilate = check_int(dilate, "dilate", low=0)
    eps = check_float(eps, "eps", low=0.0)
    if size is not None:
        size = check_int(size, "size", low=1)
        m = upsample_maps(m, (size, size), upsample)
    if m.shape[-1] != m.shape[-2] or m.shape[-1] % scale:
        raise InputError(
            f"`maps` must be square with a side divisible by `scale` {scale} (pass size= to upsample); "
            f"got {tuple(m.shape)}"
        )
    pos = m.clamp_min(0)
    side, cell = m.shape[-1], m.shape[-1] // scale
    c = c.to(m.device)
    r, q = c // scale, c % scale
    idx = torch.arange(side, device=m.device)
    rows = (idx >= r[:, None] * cell - dilate) & (idx < (r[:, None] + 1) * cell + dilate)  # [B, H]
    cols = (idx >= q[:, None] * cell - dilate) & (idx < (q[:, None] + 1) * cell + dilate)  # [B, W]
    inside = (pos * (rows[:, :, None] & cols[:, None, :])).flatten(1).sum(1)
    total = pos.flatten(1).sum(1)
    return torch.where(total >= eps, inside / total.clamp_min(1e-30), torch.zeros_like(total)).cpu()


# ============================================================================================
# Step 4: one setting, all methods and layers (ML-Att table); AggAtt
# ============================================================================================


@dataclass
class SettingLocalization:
    """Localization scores of every (method, layer) on one grid setting (GridPG, DiFull or DiPart).

    ``scores[(method, layer)]``: ``[N]`` localization per map; ``maps[(method, layer)]``: ``[N, H, W]``
    (only when kept); ``positive_mass``: ``[N]`` Σ A⁺ per map (check 1 needs it); ``cells`` ``[N]``
    the head's cell per map; ``cost``: measured passes and wall time per (method, layer).
    """

    setting: str
    scores: dict[tuple[str, str], torch.Tensor]
    cells: torch.Tensor
    positive_mass: dict[tuple[str, str], torch.Tensor] = field(default_factory=dict)
    maps: dict[tuple[str, str], torch.Tensor] = field(default_factory=dict)
    cost: dict[tuple[str, str], Cost] = field(default_factory=dict)

    def mean(self, method: str, layer: str = "input") -> float:
        """Mean localization of ``method`` at ``layer``."""
        key = (method, layer)
        if key not in self.scores:
            raise InputError(f"({method!r}, {layer!r}) was not evaluated; evaluated: {sorted(self.scores)}")
        return float(self.scores[key].mean())

    def rows(self) -> list[dict[str, Any]]:
        """One row per (method, layer): setting, method, layer, mean L, std L, n maps."""
        return [
            {
                "setting": self.setting,
                "method": m,
                "layer": lay,
                "mean_L": float(v.mean()),
                "std_L": float(v.std()) if len(v) > 1 else 0.0,
                "n": len(v),
            }
            for (m, lay), v in self.scores.items()
        ]


def _method_layers(methods: dict[str, Sequence[str]] | None) -> list[tuple[str, str]]:
    methods = DEFAULT_METHODS if methods is None else methods
    if not isinstance(methods, dict) or not methods:
        raise InputError("`methods` must be a non-empty dict: method name -> layers")
    pairs = []
    for m, layers in methods.items():
        if m not in DEFAULT_METHODS:
            raise InputError(f"`methods` key {m!r} is not a known method; known: {sorted(DEFAULT_METHODS)}")
        if isinstance(layers, str) or not layers:
            raise InputError(f"`methods[{m!r}]` must be a non-empty list of layers from {list(LAYERS)}")
        pairs += [(m, check_choice(lay, LAYERS, f"methods[{m!r}]")) for lay in layers]
    return pairs


def evaluate(
    setting: GridSetting,
    grids: grid_world.GridData,
    *,
    methods: dict[str, Sequence[str]] | None = None,
    heads: Sequence[int] | None = None,
    upsample: str = "bilinear",
    ig_steps: int = 20,
    occlusion_window: int = 4,
    occlusion_grids: int | None = None,
    smooth_sigma: float = 2.0,
    smooth_ksize: int = 9,
    keep_maps: bool = False,
    batch_size: int = 64,
    show_progress: bool = True,
) -> SettingLocalization:
    """ML-Att on one setting: every (method, layer) of ``methods`` (default :data:`DEFAULT_METHODS`) on
    every grid and evaluated head (:func:`eval_heads`), scored by :func:`localization`.

    ``occlusion_grids`` limits occlusion (the one costly method: one forward per window) to the
    first grids. ``keep_maps`` keeps the grid-size maps for AggAtt and figures.
    """
    if not isinstance(setting, GridSetting):
        raise InputError(f"`setting` must be a GridPG, DiFull or DiPart; got {type(setting).__name__}")
    pairs = _method_layers(methods)
    x, target, cells = head_batch(setting, grids, heads)
    dev = device_of(setting)
    x, target = x.to(dev), target.to(dev)
    per_grid = len(x) // len(grids)
    res = SettingLocalization(setting=setting.name, scores={}, cells=cells)
    done: dict[tuple[str, str], Any] = {}
    for m, lay in progress(pairs, desc=f"ML-Att {setting.name}", disable=not show_progress):
        n = len(x) if (m != "occlusion" or occlusion_grids is None) else min(len(x), occlusion_grids * per_grid)
        base = (m[2:], lay)
        if m.startswith("s_") and base in done:  # smoothing an input map already computed: no new passes
            with timer() as t:
                smoothed = gaussian_smooth(done[base].scores, sigma=smooth_sigma, ksize=smooth_ksize)
            # A smoothed map needs the passes of the map it blurs: its cost is that map's cost plus the blur
            # (the passes are spent once here, but a reader asking "what does S-IxG cost?" must see them).
            base_cost = done[base].cost
            cost = Cost(base_cost.forward, base_cost.backward, base_cost.wall_s + t["s"])
            a = replace(done[base], scores=smoothed, method=m, cost=cost)
        else:
            a = attribute_at(
                setting,
                x[:n],
                target[:n],
                m,
                lay,
                upsample=upsample,
                ig_steps=ig_steps,
                occlusion_window=occlusion_window,
                smooth_sigma=smooth_sigma,
                smooth_ksize=smooth_ksize,
                batch_size=batch_size,
            )
        done[(m, lay)] = a
        res.scores[(m, lay)] = localization(a.scores, cells[:n], setting.scale, upsample=upsample)
        res.positive_mass[(m, lay)] = a.scores.clamp_min(0).flatten(1).sum(1).cpu()
        res.cost[(m, lay)] = a.cost
        if keep_maps:
            res.maps[(m, lay)] = a.scores.cpu()
    return res


def aggatt_bins(
    maps: Any, loc: Any, inside: Any | None = None, edges: Sequence[float] = AGGATT_EDGES
) -> list[torch.Tensor]:
    """AggAtt: sort maps by localization (best first; ties broken by ``inside``, the positive mass in
    the cell), cut the sorted list at the fractions ``edges`` and average the positive maps per bin.

    Returns one ``[H, W]`` mean map per bin (``len(edges) - 1`` of them); a bin too small to hold a
    map (e.g. 2 % of 20 maps) takes the nearest map, so every bin shows something.
    Maps of one head position must be aggregated together (the cell is then in the same place).
    """
    m = check_tensor(maps, "maps", ndim=3, dtype="float", layout="[N, H, W]")
    n = m.shape[0]
    loc_t = check_tensor(torch.as_tensor(loc), "loc", shape=(n,), dtype="float", layout="[N]")
    ins = (
        torch.zeros(n) if inside is None else check_tensor(torch.as_tensor(inside), "inside", shape=(n,), layout="[N]")
    )
    e = [check_float(v, "edges[i]", low=0.0, high=1.0) for v in edges]
    if len(e) < 2 or e[0] != 0.0 or e[-1] != 1.0 or any(b <= a for a, b in itertools.pairwise(e)):
        raise InputError(f"`edges` must increase strictly from 0 to 1; got {list(edges)}")
    order = np.lexsort((-ins.double().cpu().numpy(), -loc_t.double().cpu().numpy()))  # primary key last
    pos = m.clamp_min(0)[torch.as_tensor(order)]
    out = []
    for a, b in itertools.pairwise(e):
        lo, hi = round(a * n), round(b * n)
        if hi <= lo:  # empty bin at this N: show the map at its position
            lo, hi = min(lo, n - 1), min(lo, n - 1) + 1
        out.append(pos[lo:hi].mean(0))
    return out


def plot_aggatt(
    rows: dict[str, list[torch.Tensor]],
    *,
    edges: Sequence[float] = AGGATT_EDGES,
    cell_box: tuple[int, int, int, int] | None = None,
    clip_pct: float = 99.5,
):
    """AggAtt panels: one row per method, one column per bin, one colour scale per row clipped at the
    ``clip_pct`` percentile (the paper's convention); ``cell_box`` (xyxy) outlines the head's cell.

    A paper-specific figure built with :func:`xattr_nb.plots.figure`; it displays in a notebook
    wherever it is called (:func:`xattr_nb.plots.show`) and is returned.
    """
    from matplotlib.patches import Rectangle

    if not isinstance(rows, dict) or not rows:
        raise InputError("`rows` must be a non-empty dict: method name -> list of bin maps")
    clip_pct = check_float(clip_pct, "clip_pct", low=0.0, high=100.0)
    ncol = len(next(iter(rows.values())))
    with plots.style():
        fig = plots.figure(1.3 * ncol + 0.8, 1.35 * len(rows) + 0.3)
        axes = fig.subplots(len(rows), ncol, squeeze=False)
        labels = [f"{int(100 * a)}–{int(100 * b)}%" for a, b in itertools.pairwise(edges)]
        for i, (name, bins) in enumerate(rows.items()):
            if len(bins) != ncol:
                raise InputError(f"`rows[{name!r}]` has {len(bins)} bins; the first row has {ncol}")
            vmax = float(np.percentile(torch.stack(bins).numpy(), clip_pct)) or 1.0
            for j, b in enumerate(bins):
                ax = axes[i, j]
                ax.imshow(b.numpy(), cmap="magma", vmin=0, vmax=vmax)
                if cell_box is not None:
                    x0, y0, x1, y1 = cell_box
                    ax.add_patch(Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False, ec="lime", lw=1))
                ax.set_xticks([])
                ax.set_yticks([])
                ax.grid(False)
                if i == 0:
                    ax.set_title(labels[j] if j < len(labels) else str(j), fontsize=8)
                if j == 0:
                    ax.set_ylabel(name, fontsize=8)
    return plots.show(fig)


# ============================================================================================
# Entry point
# ============================================================================================


def explain(
    model: nn.Module | Stages,
    grids: grid_world.GridData,
    *,
    settings: Sequence[str] = SETTINGS,
    methods: dict[str, Sequence[str]] | None = None,
    setting_methods: dict[str, dict[str, Sequence[str]]] | None = None,
    **kw: Any,
) -> dict[str, SettingLocalization]:
    """Run ML-Att (:func:`evaluate`) on each setting of ``settings`` around ``model`` and return
    ``{setting: SettingLocalization}``; ``kw`` go to :func:`evaluate` (``upsample``, ``ig_steps``, ...).

    ``methods`` (default :data:`DEFAULT_METHODS`) applies to every setting; ``setting_methods``
    replaces it for the settings it names, e.g. ``{"DiPart": methods without occlusion}`` to skip a
    costly method where it is not needed.
    """
    if not isinstance(grids, grid_world.GridData):
        raise InputError(f"`grids` must be the GridData of worlds.grids; got {type(grids).__name__}")
    if not isinstance(model, (nn.Module, Stages)):
        raise InputError(f"`model` must be a torch.nn.Module or Stages; got {type(model).__name__}")
    if isinstance(settings, str) or not settings:
        raise InputError(f"`settings` must be a non-empty list from {list(SETTINGS)}")
    setting_methods = {} if setting_methods is None else setting_methods
    if not isinstance(setting_methods, dict) or any(k not in settings for k in setting_methods):
        raise InputError(f"`setting_methods` must be a dict keyed by settings from {list(settings)}")
    out = {}
    for name in settings:
        chosen = setting_methods.get(name, methods)
        out[name] = evaluate(make_setting(name, model, grids.scale), grids, methods=chosen, **kw)
    return out
