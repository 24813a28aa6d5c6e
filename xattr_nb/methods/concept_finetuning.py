"""Concept-guided fine-tuning (CFT; Elisha, Barkan & Koenigstein, CVPR 2026), at ShapesWorld scale.

A ViT trained by ERM on images whose background texture is tied to the class learns the texture
shortcut. CFT fine-tunes it on a few images of **half the classes** so that its own relevance map
(gradient-weighted attention rollout, kept in the autograd graph) lies on the class's *concept*
(the crest) and not on the rest of the image, while a pseudo-label term keeps its predictions.

The steps, in the order the notebook shows them:

- :func:`make_data`: the spurious-background ShapesWorld (a grey square body, a class-coloured
  crest, a class-tied low-contrast texture with probability ``spurious_bg``) and its OOD split
  (texture drawn uniformly), plus a separate fine-tuning draw;
- :func:`attention_maps`: logits and each block's attention probabilities, in the graph, for a
  :class:`~xattr_nb.models.vision.TinyViT` or a Hugging Face ViT behind
  :class:`~xattr_nb.models.hub.ImageClassifier`;
- :func:`rollout`: the spec's rule ``R ← R + mean_h(ReLU(∇A ⊙ A)) R`` from given maps and
  gradients (pure, differentiable in the maps); :func:`relevance` chains the two, upsamples the CLS
  row to pixels and min–max normalises it per image;
- :func:`cft_loss`: ``λ_align (λ_ctx BCE(r(1−M), 0) + λ_concept BCE(rM, M)) + λ_acc CE(f(x)/T, ŷ)``
  with ``ŷ`` the current model's own top-1;
- :func:`finetune`: AdamW on the fine-tuning set with a mask (``"concept"``: the crest, CFT;
  ``"fg"``: body ∪ crest, RobustViT-style) or without the relevance term (``"cls"``, the control);
- :func:`evaluate`: accuracy and relevance mass on concept / body / background, overall and on
  the held-out classes, and pointing (argmax relevance in the crest);
- :func:`explain`: the relevance of any ViT as an :class:`~xattr_nb.attribution.Attribution`.

At full scale, :func:`load_folders` reads ImageNet-style folders (``<root>/{train,val}/<class>/*``,
optional concept masks ``<root>/masks/<class>/<stem>.png`` and object masks
``<root>/objects/<class>/<stem>.png``, an OOD root in the same layout) into :class:`FolderData` splits
with the fields fine-tuning and evaluation use; :func:`label_order` gives a pretrained model's own
class order (its config's ``id2label``), :func:`has_object_masks` whether the ``"fg"`` arm can run.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import time
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from xattr_nb.attribution import Attribution
from xattr_nb.checks import InputError, check_choice, check_float, check_int, check_tensor
from xattr_nb.models.fit import fit
from xattr_nb.models.io import check_model
from xattr_nb.models.vision import TinyViT
from xattr_nb.runtime import Cost, progress
from xattr_nb.worlds.base import WorldData
from xattr_nb.worlds.shapes import ShapesData, make_shapes, subset

__all__ = [
    "IMAGE_EXTENSIONS",
    "LAMBDAS",
    "MODES",
    "SMALL_SCALE",
    "TEXTURES",
    "FolderData",
    "attention_maps",
    "cft_loss",
    "evaluate",
    "evaluate_arms",
    "explain",
    "finetune",
    "finetune_set",
    "has_object_masks",
    "label_order",
    "load_folders",
    "load_image_folder",
    "make_data",
    "make_vit",
    "relevance",
    "relevance_fractions",
    "resize_center_crop",
    "rollout",
    "train_erm",
]

#: The four low-contrast textures of the spec; class k is tied to ``TEXTURES[k]``.
TEXTURES: tuple[str, ...] = ("hstripes", "vstripes", "checker", "dots")
#: The official code's loss weights (``scripts/train.py``).
LAMBDAS: dict[str, float] = {"lam_align": 0.8, "lam_acc": 0.2, "lam_ctx": 1.2, "lam_concept": 0.5, "T": 1.0}
#: ``"concept"`` = CFT (crest mask), ``"fg"`` = RobustViT-style (body ∪ crest), ``"cls"`` = L_cls only.
MODES: tuple[str, ...] = ("concept", "fg", "cls")
#: The spec's small-scale setting (§6.5).
SMALL_SCALE: dict[str, Any] = {
    "n_train": 2000,
    "n_id": 500,
    "n_ood": 1000,
    "spurious_bg": 0.9,
    "vit": {"image_size": 32, "patch": 4, "dim": 48, "depth": 3, "heads": 4},
    "erm_epochs": 4,
    "erm_lr": 1e-3,
    "per_class": 16,
    "steps": 40,
    "batch_size": 16,
    "lr": 1e-4,
}


# ----------------------------------------------------------------------------------------------
# Data


def make_data(
    *,
    n_train: int = 2000,
    n_id: int = 500,
    n_ood: int = 1000,
    n_ft_pool: int = 400,
    spurious_bg: float = 0.9,
    classes: tuple[str, ...] = ("circle", "square", "triangle", "star"),
    seed: int = 0,
) -> dict[str, ShapesData]:
    """The four splits: ``train`` and ``id`` (texture tied to the class with prob. ``spurious_bg``),
    ``ood`` (texture uniform), and ``pool``, a separate ID draw the fine-tuning images come from.

    Every class has the same grey square body (``body="square"``), so the crest colour is the only
    object evidence; ``part_masks`` is the concept mask, ``masks`` the foreground (body ∪ crest).
    ``classes`` only names the classes (the bodies are all squares).
    """
    seed = check_int(seed, "seed", low=0, high=2**31 - 400_000)
    rho = check_float(spurious_bg, "spurious_bg", low=0.0, high=1.0)
    common = dict(classes=classes, parts=True, body="square", backgrounds=TEXTURES, sizes=("small", "medium"))
    return {
        "train": make_shapes(n_train, spurious_bg=rho, seed=seed, **common),
        "id": make_shapes(n_id, spurious_bg=rho, seed=seed + 100_000, **common),
        "ood": make_shapes(n_ood, spurious_bg=None, seed=seed + 200_000, **common),
        "pool": make_shapes(n_ft_pool, spurious_bg=rho, seed=seed + 300_000, **common),
    }


def finetune_set(pool: ShapesData, *, per_class: int = 16, n_classes_ft: int | None = None, seed: int = 0):
    """``per_class`` images of each of half the classes (chosen by ``seed``, the official
    ``--class_seed``), from ``pool``. Returns ``(data, trained_classes, held_out_classes)`` with
    class indices as sorted tuples.

    The classes are those that occur in ``pool`` (all of ``pool.classes`` in ShapesWorld; at full
    scale a pretrained model's label order can name more classes than the folders hold).
    """
    per_class = check_int(per_class, "per_class", low=1)
    labels = pool.labels.cpu().numpy()
    present = np.unique(labels)
    k = len(present)
    if k == 0:
        raise InputError("`pool` holds no image")
    n_ft = k // 2 if n_classes_ft is None else check_int(n_classes_ft, "n_classes_ft", low=1, high=k)
    rng = np.random.default_rng(check_int(seed, "seed", low=0))
    trained = tuple(sorted(int(present[c]) for c in rng.permutation(k)[:n_ft]))
    held = tuple(int(c) for c in present if int(c) not in trained)
    idx = []
    for c in trained:
        rows = np.flatnonzero(labels == c)
        if len(rows) < per_class:
            raise InputError(f"`per_class` ({per_class}) exceeds the {len(rows)} images of class {c} in `pool`")
        idx.extend(rows[:per_class].tolist())
    return subset(pool, sorted(idx)), trained, held


# ----------------------------------------------------------------------------------------------
# Full-scale data: ImageNet-style folders

#: File endings read as images (case-insensitive).
IMAGE_EXTENSIONS: tuple[str, ...] = (".jpeg", ".jpg", ".png", ".bmp", ".webp")


@dataclasses.dataclass
class FolderData(WorldData):
    """Images read from class folders, with the fields :func:`finetune_set`, :func:`finetune` and
    :func:`evaluate` use: ``images`` ``[N, 3, S, S]`` in [0, 1], ``labels`` ``[N]`` (index into
    ``classes``), ``part_masks`` ``[N, S, S]`` bool concept masks or ``None``, ``masks`` the same
    object masks ∪ concept masks when every image has an object mask (``has_objects``), else the concept
    masks themselves (no object masks: ``body`` relevance is 0 and the ``"fg"`` arm would equal
    ``"concept"``, so :func:`finetune` refuses it), ``paths`` the files read."""

    images: torch.Tensor
    labels: torch.Tensor
    classes: tuple[str, ...]
    masks: torch.Tensor | None
    part_masks: torch.Tensor | None
    paths: list[str]
    has_objects: bool = False
    _items: ClassVar[tuple[str, ...]] = ("images", "labels", "masks", "part_masks", "paths")


def has_object_masks(data: Any) -> bool:
    """Whether ``data.masks`` is a foreground distinct from the concept masks (ShapesWorld: body ∪ crest;
    folders: only with ``<root>/objects`` masks for every image), i.e. whether the ``"fg"`` arm means
    something other than CFT."""
    if getattr(data, "masks", None) is None or getattr(data, "part_masks", None) is None:
        return False
    return bool(getattr(data, "has_objects", True))


def label_order(model: nn.Module) -> tuple[str, ...] | None:
    """A Hugging Face classifier's own class names in logit order (``config.id2label``), for
    :func:`load_folders`'s ``classes``; ``None`` for a model without one (a TinyViT) or with the
    default names ``LABEL_0, LABEL_1, ...`` (then the sorted folder names are the order)."""
    cfg = getattr(getattr(model, "hf", model), "config", None)
    id2label = getattr(cfg, "id2label", None)
    if not id2label:
        return None
    names = tuple(str(id2label[i]) for i in sorted(int(k) for k in id2label))
    if all(n == f"LABEL_{i}" for i, n in enumerate(names)):
        return None
    return names


def resize_center_crop(img: Any, size: int, resample: Any = None) -> Any:
    """A PIL image resized so its shorter side is ``size`` (bilinear unless ``resample``), then
    centre-cropped to ``size × size`` (torchvision's ``Resize(size)`` + ``CenterCrop(size)``)."""
    from PIL import Image

    w, h = img.size
    s = size / min(w, h)
    nw, nh = max(size, round(w * s)), max(size, round(h * s))
    if (nw, nh) != (w, h):
        img = img.resize((nw, nh), Image.Resampling.BILINEAR if resample is None else resample)
    left, top = (nw - size) // 2, (nh - size) // 2
    return img.crop((left, top, left + size, top + size))


def _image_files(folder: Path) -> list[Path]:
    return sorted(f for f in folder.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_EXTENSIONS)


def load_image_folder(
    root: str | Path,
    split: str = "train",
    *,
    masks_dir: str | Path | None = None,
    objects_dir: str | Path | None = None,
    classes: tuple[str, ...] | None = None,
    image_size: int = 224,
    max_per_class: int | None = None,
    require_masks: bool = False,
) -> FolderData:
    """Read ``<root>/<split>/<class>/*`` (sorted; ImageNet's ``*.JPEG`` and other image files).

    Images are converted to RGB, resized (shorter side) and centre-cropped to ``image_size``
    (PIL, :func:`resize_center_crop`). ``classes`` fixes the label order (default: the sorted class folders; pass the
    model's label order for a pretrained classifier); a class folder not in ``classes`` is an
    error. With ``masks_dir``, ``<masks_dir>/<class>/<stem>.png`` (any non-zero pixel = concept) is
    read through the same resize and crop (nearest); ``require_masks`` keeps only the images that
    have one (the fine-tuning pool), otherwise ``part_masks`` is set only if every image has one.
    With ``objects_dir``, object masks ``<objects_dir>/<class>/<stem>.png`` are read the same way; if
    every image has both, ``masks`` = object ∪ concept and ``has_objects`` is set (else ``masks`` is
    the concept mask). Object masks never decide which images are kept.
    """
    from PIL import Image

    image_size = check_int(image_size, "image_size", low=1)
    if max_per_class is not None:
        max_per_class = check_int(max_per_class, "max_per_class", low=1)
    base = Path(root) / split
    if not base.is_dir():
        raise InputError(f"`root` must hold a folder {split!r}/ of class folders; {base} does not exist")
    found = sorted(d.name for d in base.iterdir() if d.is_dir())
    if not found:
        raise InputError(f"{base} must hold one folder per class (<class>/*.JPEG); found no folder")
    classes = tuple(found) if classes is None else tuple(classes)
    unknown = sorted(set(found) - set(classes))
    if unknown:
        raise InputError(f"{base} has class folders not in `classes`: {unknown[:5]}")
    mdir = None if masks_dir is None else Path(masks_dir)
    if mdir is not None and not mdir.is_dir():
        raise InputError(f"`masks_dir` must be a folder of <class>/<stem>.png masks; {mdir} does not exist")
    odir = None if objects_dir is None else Path(objects_dir)
    if odir is not None and not odir.is_dir():
        raise InputError(f"`objects_dir` must be a folder of <class>/<stem>.png masks; {odir} does not exist")

    def prep(img: Any, interp: Any) -> torch.Tensor:
        return torch.from_numpy(np.array(resize_center_crop(img, image_size, interp)))

    images, labels, masks, objects, paths = [], [], [], [], []
    for name in found:
        files = _image_files(base / name)
        if not files:
            raise InputError(f"{base / name} holds no image file (expected {', '.join(IMAGE_EXTENSIONS)})")
        kept = 0
        for f in files:
            mf = None if mdir is None else mdir / name / f"{f.stem}.png"
            has = mf is not None and mf.is_file()
            if require_masks and not has:
                continue
            if max_per_class is not None and kept >= max_per_class:
                break
            with Image.open(f) as im:
                images.append(prep(im.convert("RGB"), Image.Resampling.BILINEAR).permute(2, 0, 1))
            masks.append(None)
            if has:
                with Image.open(mf) as mk:
                    masks[-1] = prep(mk.convert("L"), Image.Resampling.NEAREST) > 0
            of = None if odir is None else odir / name / f"{f.stem}.png"
            objects.append(None)
            if of is not None and of.is_file():
                with Image.open(of) as ok:
                    objects[-1] = prep(ok.convert("L"), Image.Resampling.NEAREST) > 0
            labels.append(classes.index(name))
            paths.append(str(f))
            kept += 1
    if not images:
        raise InputError(f"no image under {base} has a mask in {mdir} (expected <class>/<stem>.png)")
    part = torch.stack(masks) if all(m is not None for m in masks) else None
    has_obj = part is not None and all(o is not None for o in objects)
    return FolderData(
        images=torch.stack(images).float() / 255.0,
        labels=torch.tensor(labels, dtype=torch.long),
        classes=classes,
        masks=(torch.stack(objects) | part) if has_obj else part,
        part_masks=part,
        paths=paths,
        has_objects=has_obj,
    )


def load_folders(
    root: str | Path,
    *,
    ood_root: str | Path | None = None,
    ood_split: str = "val",
    classes: tuple[str, ...] | None = None,
    image_size: int = 224,
    max_per_class: int | None = None,
) -> dict[str, FolderData]:
    """The splits :func:`make_data` returns, from ImageNet-style folders.

    ``train`` = ``<root>/train``; ``id`` = ``<root>/val``; ``pool`` = the ``train`` images that have
    a concept mask in ``<root>/masks`` (what :func:`finetune_set` draws from); ``ood`` =
    ``<ood_root>/<ood_split>`` (same class names; masks from ``<ood_root>/masks`` if present), or
    absent without ``ood_root``. Masks in the ``id`` / ``ood`` splits are used only where every
    image has one (else ``part_masks`` is ``None`` and :func:`evaluate` gives accuracy only).
    Object masks (the ``"fg"`` arm's foreground) come from an optional ``<root>/objects`` (and
    ``<ood_root>/objects``) in the masks' layout; see :func:`load_image_folder`.
    """
    root = Path(root)
    mdir = root / "masks"
    if not mdir.is_dir():
        raise InputError(f"`root` must hold masks/<class>/<stem>.png (the concept masks); {mdir} does not exist")
    kw = dict(image_size=image_size, max_per_class=max_per_class)
    odir = root / "objects" if (root / "objects").is_dir() else None
    train = load_image_folder(root, "train", classes=classes, **kw)
    out = {
        "train": train,
        "id": load_image_folder(root, "val", masks_dir=mdir, objects_dir=odir, classes=train.classes, **kw),
        "pool": load_image_folder(
            root, "train", masks_dir=mdir, objects_dir=odir, classes=train.classes, require_masks=True, **kw
        ),
    }
    if ood_root is not None:
        om, oo = Path(ood_root) / "masks", Path(ood_root) / "objects"
        out["ood"] = load_image_folder(
            ood_root,
            ood_split,
            masks_dir=om if om.is_dir() else None,
            objects_dir=oo if oo.is_dir() else None,
            classes=train.classes,
            **kw,
        )
    return out


# ----------------------------------------------------------------------------------------------
# Models


def make_vit(n_classes: int = 4, *, seed: int = 0, **kwargs: Any) -> TinyViT:
    """A TinyViT with the spec's shape (patch 4 → 8×8 tokens + CLS, dim 48, depth 3, 4 heads, MLP 96)."""
    cfg = {**SMALL_SCALE["vit"], **kwargs}
    with torch.random.fork_rng():
        torch.manual_seed(check_int(seed, "seed", low=0))
        return TinyViT(n_classes, **cfg)


def train_erm(
    data: ShapesData, *, epochs: int = 4, lr: float = 1e-3, seed: int = 0, show_progress: bool = True
) -> TinyViT:
    """The ERM base model: a fresh :func:`make_vit` trained by cross-entropy on ``data``."""
    model = make_vit(len(data.classes), seed=seed)
    fit(model, (data.images, data.labels), epochs=epochs, lr=lr, batch_size=64, seed=seed, show_progress=show_progress)
    return model.eval()


# ----------------------------------------------------------------------------------------------
# Relevance (gradient-weighted attention rollout), differentiable through the attention maps


def attention_maps(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor], int]:
    """``(logits [B, C], maps, grid)``: each block's attention probabilities ``[B, heads, T, T]``
    (CLS first), in the autograd graph, and the patch grid side (``T = 1 + grid²``).

    Works for :class:`~xattr_nb.models.vision.TinyViT` and for a Hugging Face ViT behind
    :class:`~xattr_nb.models.hub.ImageClassifier` (switched to eager attention so the maps exist).
    """
    check_model(model)
    if isinstance(model, TinyViT):
        logits = model(x, keep_attn=True)
        maps = model.attn_maps
        for block in model.blocks:  # drop the references: the maps live on in `maps` only
            block.attn.last_attn = None
        return logits, maps, model.image_size // model.patch
    hf = getattr(model, "hf", None)
    if hf is None or not callable(getattr(model, "normalize", None)):
        raise InputError(
            "`model` must be a TinyViT or an ImageClassifier wrapping a Hugging Face ViT "
            f"(from load_image_model(scale='full')); got {type(model).__name__}"
        )
    x = check_tensor(x, "x", ndim=4, dtype="float", layout="[B, 3, H, W]")
    if getattr(hf.config, "_attn_implementation", "eager") != "eager":
        if callable(getattr(hf, "set_attn_implementation", None)):
            hf.set_attn_implementation("eager")
        else:
            hf.config._attn_implementation = "eager"
    out = hf(pixel_values=model.normalize(x), output_attentions=True)
    maps = list(out.attentions or ())
    if not maps:
        raise InputError("`model` returned no attention maps: it must be a ViT-style transformer classifier")
    n_tok = maps[0].shape[-1]
    grid = round(math.sqrt(n_tok - 1))
    if grid * grid != n_tok - 1:
        raise InputError(f"`model` has {n_tok} tokens: expected CLS + a square grid of patches (no register tokens)")
    return out.logits, maps, grid


def rollout(maps: list[torch.Tensor], grads: list[torch.Tensor]) -> torch.Tensor:
    """The spec's rule: ``R = I``; for each block ``R ← R + mean_h(ReLU(g_b ⊙ A_b)) · R``.

    ``maps``/``grads``: per block ``[B, heads, T, T]``. Returns ``R`` ``[B, T, T]``; it is
    differentiable in ``maps`` (the gradients are constants, as in the official code).
    """
    if not isinstance(maps, (list, tuple)) or not maps or len(maps) != len(grads):
        raise InputError("`maps` and `grads` must be non-empty lists of the same length (one per block)")
    b, _, t, t2 = maps[0].shape
    if t != t2:
        raise InputError(f"`maps` must be [B, heads, T, T]; got {tuple(maps[0].shape)}")
    r = torch.eye(t, dtype=maps[0].dtype, device=maps[0].device).expand(b, t, t)
    for i, (a, g) in enumerate(zip(maps, grads, strict=True)):
        if a.shape != g.shape or a.shape[0] != b or a.shape[-1] != t:
            raise InputError(f"`grads[{i}]` must match `maps[{i}]` [B, heads, T, T]; got {tuple(g.shape)}")
        cam = F.relu(g.detach() * a).mean(1)
        r = r + cam @ r
    return r


def _minmax(r: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    flat = r.flatten(1)
    lo, hi = flat.min(1).values, flat.max(1).values
    return ((flat - lo[:, None]) / (hi - lo + eps)[:, None]).view_as(r)


def relevance(
    model: nn.Module,
    x: torch.Tensor,
    target: torch.Tensor | None = None,
    *,
    out_size: int | None = None,
    normalize: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(r [B, H, W], logits [B, C])``: CLS's row of :func:`rollout` over the patches, upsampled
    bilinearly to ``out_size`` (default: the image size) and min–max normalised per image.

    ``target``: ``[B]`` class per image (default: the model's own top-1). ``r`` stays in the graph
    through the attention maps, so a loss on it trains the model; the gradient ``∂y_c/∂A`` is taken
    without ``create_graph`` (one extra backward, no double backward).
    """
    logits, maps, grid = attention_maps(model, x)
    if target is None:
        target = logits.argmax(-1)
    target = check_tensor(target, "target", shape=(logits.shape[0],), dtype="int", layout="[B]").to(logits.device)
    if int(target.min()) < 0 or int(target.max()) >= logits.shape[1]:
        raise InputError(f"`target` must hold classes in [0, {logits.shape[1]}); got {target.tolist()}")
    y = logits.gather(1, target[:, None]).sum()
    grads = torch.autograd.grad(y, maps, retain_graph=True)
    r = rollout(maps, list(grads))[:, 0, 1:].reshape(-1, 1, grid, grid)
    size = x.shape[-1] if out_size is None else check_int(out_size, "out_size", low=1)
    r = F.interpolate(r, size=(size, size), mode="bilinear", align_corners=False)[:, 0]
    return (_minmax(r) if normalize else r), logits


# ----------------------------------------------------------------------------------------------
# Loss and fine-tuning


def cft_loss(
    rel: torch.Tensor,
    mask: torch.Tensor | None,
    logits: torch.Tensor,
    *,
    lam_align: float = 0.8,
    lam_acc: float = 0.2,
    lam_ctx: float = 1.2,
    lam_concept: float = 0.5,
    T: float = 1.0,
) -> dict[str, torch.Tensor]:
    """The official loss: ``L = λ_align (λ_ctx L_ctx + λ_concept L_concept) + λ_acc L_cls``.

    ``L_ctx = BCE(r ⊙ (1−M), 0)``, ``L_concept = BCE(r ⊙ M, M)`` (means over pixels and images),
    ``L_cls = CE(logits / T, ŷ)`` with ``ŷ`` the logits' own (detached) top-1. ``rel`` ``[B, H, W]``
    in [0, 1]; ``mask`` ``[B, H, W]`` bool/0-1 (``None``: no alignment term, ``lam_align`` ignored).
    Returns the terms and their weighted ``total``.
    """
    logits = check_tensor(logits, "logits", ndim=2, dtype="float", layout="[B, C]")
    T = check_float(T, "T", low=1e-6)
    pseudo = logits.detach().argmax(-1)
    l_cls = F.cross_entropy(logits / T, pseudo)
    if mask is None:
        zero = l_cls.new_zeros(())
        return {"total": lam_acc * l_cls, "ctx": zero, "concept": zero, "cls": l_cls}
    rel = check_tensor(rel, "rel", ndim=3, dtype="float", layout="[B, H, W]")
    mask = check_tensor(mask, "mask", shape=tuple(rel.shape), layout="[B, H, W]").to(rel.dtype)
    if float(rel.detach().min()) < 0 or float(rel.detach().max()) > 1:
        raise InputError("`rel` must lie in [0, 1] (min-max normalised relevance)")
    l_ctx = F.binary_cross_entropy(rel * (1 - mask), torch.zeros_like(rel))
    l_concept = F.binary_cross_entropy(rel * mask, mask)
    total = lam_align * (lam_ctx * l_ctx + lam_concept * l_concept) + lam_acc * l_cls
    return {"total": total, "ctx": l_ctx, "concept": l_concept, "cls": l_cls}


def finetune(
    model: nn.Module,
    data: ShapesData,
    *,
    mode: str = "concept",
    steps: int = 40,
    batch_size: int = 16,
    lr: float = 1e-4,
    weight_decay: float = 1e-4,
    lambdas: dict[str, float] | None = None,
    seed: int = 0,
    show_progress: bool = True,
) -> tuple[nn.Module, dict[str, list[float]]]:
    """Fine-tune a copy of ``model`` on ``data`` with :func:`cft_loss`; return ``(model, history)``.

    ``mode``: ``"concept"`` aligns relevance with ``data.part_masks`` (CFT), ``"fg"`` with
    ``data.masks`` (RobustViT-style), ``"cls"`` drops the alignment term (the control). AdamW,
    batches drawn by a generator seeded with ``seed`` (the same batches for every mode).
    ``history`` holds each step's loss terms and its wall time.
    """
    check_model(model)
    mode = check_choice(mode, MODES, "mode")
    steps = check_int(steps, "steps", low=1)
    batch_size = check_int(batch_size, "batch_size", low=1)
    lr = check_float(lr, "lr", low=0.0)
    lam = {**LAMBDAS, **(lambdas or {})}
    unknown = set(lam) - set(LAMBDAS)
    if unknown:
        raise InputError(f"`lambdas` has unknown keys {sorted(unknown)}; known: {sorted(LAMBDAS)}")
    if mode == "concept" and data.part_masks is None:
        raise InputError("`data` has no part_masks: make it with parts=True (see make_data)")
    if mode == "fg" and not has_object_masks(data):
        raise InputError(
            "`data` has no object masks distinct from its concept masks, so mode='fg' would repeat 'concept': "
            "give <root>/objects/<class>/<stem>.png masks (see load_folders)"
        )
    model = copy.deepcopy(model)
    masks = None if mode == "cls" else (data.part_masks if mode == "concept" else data.masks)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr, weight_decay=weight_decay)
    gen = torch.Generator().manual_seed(check_int(seed, "seed", low=0))
    hist: dict[str, list[float]] = {"total": [], "ctx": [], "concept": [], "cls": []}
    mdev = next(model.parameters()).device  # batches go to the model's device (folders stay on the CPU)
    n = len(data.labels)
    order = torch.randperm(n, generator=gen)
    pos = 0
    t0 = time.perf_counter()
    model.train()
    for _ in progress(range(steps), desc=f"finetune[{mode}]", unit="step", disable=not show_progress):
        if pos + batch_size > n:
            order, pos = torch.randperm(n, generator=gen), 0
        idx = order[pos : pos + batch_size]
        pos += batch_size
        x = data.images[idx].to(mdev)
        if masks is None:
            logits = model(x) if isinstance(model, TinyViT) else attention_maps(model, x)[0]
            terms = cft_loss(None, None, logits, **lam)  # type: ignore[arg-type]
        else:
            rel, logits = relevance(model, x)
            terms = cft_loss(rel, masks[idx].to(mdev), logits, **lam)
        opt.zero_grad(set_to_none=True)
        terms["total"].backward()
        opt.step()
        for k, v in terms.items():
            hist[k].append(float(v.detach()))
    hist["wall_s"] = [time.perf_counter() - t0]
    return model.eval(), hist


# ----------------------------------------------------------------------------------------------
# Evaluation


def relevance_fractions(rel: torch.Tensor, masks: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Per image, the share of relevance mass ``Σ r·M / Σ r`` inside each named mask ``[B, H, W]``."""
    rel = check_tensor(rel, "rel", ndim=3, dtype="float", layout="[B, H, W]")
    total = rel.sum((1, 2)).clamp_min(1e-12)
    out = {}
    for name, m in masks.items():
        m = check_tensor(m, f"masks[{name!r}]", shape=tuple(rel.shape), layout="[B, H, W]")
        out[name] = (rel * m.to(rel.dtype)).sum((1, 2)) / total
    return out


def _pointing(rel: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    flat = rel.flatten(1).argmax(1)
    return mask.flatten(1).gather(1, flat[:, None])[:, 0].float()


def evaluate(
    model: nn.Module, data: ShapesData, *, held_out: tuple[int, ...] = (), batch_size: int = 250
) -> dict[str, float]:
    """Accuracy and relevance (toward the model's own top-1) on ``data``.

    Keys: ``acc``, ``bg``/``body``/``concept`` (mean relevance mass fractions; background = outside
    body ∪ crest), ``bg_area`` (the background's share of the pixels: what a uniform map would score),
    ``pointing`` (argmax relevance inside the crest), and the same on the images of
    the ``held_out`` classes (``*_held``) and of the others (``*_trained``) when ``held_out`` is given.
    """
    batch_size = check_int(batch_size, "batch_size", low=1)
    model.eval()
    mdev = next(model.parameters()).device
    if data.part_masks is None or data.masks is None:  # folder data without masks: accuracy only
        return _accuracy_only(model, data, held_out, batch_size)
    per: dict[str, list[torch.Tensor]] = {k: [] for k in ("correct", "bg", "body", "concept", "pointing")}
    for s in range(0, len(data.labels), batch_size):
        x = data.images[s : s + batch_size].to(mdev)
        rel, logits = relevance(model, x)
        rel, logits = rel.detach().cpu(), logits.detach().cpu()
        fg, part = data.masks[s : s + batch_size], data.part_masks[s : s + batch_size]
        fr = relevance_fractions(rel, {"bg": ~fg, "body": fg & ~part, "concept": part})
        per["correct"].append((logits.argmax(-1) == data.labels[s : s + batch_size]).float())
        per["pointing"].append(_pointing(rel, part))
        for k, v in fr.items():
            per[k].append(v)
    cat = {k: torch.cat(v) for k, v in per.items()}
    cat["bg_area"] = (~data.masks).float().mean((1, 2))  # what a uniform map would put on the background
    out = {("acc" if k == "correct" else k): float(v.mean()) for k, v in cat.items()}
    if held_out:
        is_held = torch.isin(data.labels, torch.as_tensor(held_out))
        for tag, sel in (("held", is_held), ("trained", ~is_held)):
            for k, v in cat.items():
                out[f"{'acc' if k == 'correct' else k}_{tag}"] = float(v[sel].mean())
    return out


def _accuracy_only(model: nn.Module, data: Any, held_out: tuple[int, ...], batch_size: int) -> dict[str, float]:
    mdev = next(model.parameters()).device
    with torch.no_grad():
        pred = torch.cat(
            [
                (model(x) if isinstance(model, TinyViT) else attention_maps(model, x)[0]).argmax(-1).cpu()
                for x in (b.to(mdev) for b in data.images.split(batch_size))
            ]
        )
    correct = (pred.cpu() == data.labels.cpu()).float()
    out = {"acc": float(correct.mean())}
    if held_out:
        is_held = torch.isin(data.labels.cpu(), torch.as_tensor(held_out))
        out["acc_held"], out["acc_trained"] = float(correct[is_held].mean()), float(correct[~is_held].mean())
    return out


def evaluate_arms(
    arms: dict[str, nn.Module], splits: dict[str, ShapesData], *, held_out: tuple[int, ...] = ()
) -> dict[str, dict[str, float]]:
    """:func:`evaluate` of every model in ``arms`` on every split in ``splits``: ``{f"{arm}": {f"{split}.{key}": v}}``."""
    if not isinstance(arms, dict) or not arms:
        raise InputError("`arms` must be a non-empty dict: name -> model")
    return {
        name: {f"{s}.{k}": v for s, d in splits.items() for k, v in evaluate(m, d, held_out=held_out).items()}
        for name, m in arms.items()
    }


# ----------------------------------------------------------------------------------------------
# Entry point


def explain(model: nn.Module, inputs: torch.Tensor, target: torch.Tensor | None = None, **kwargs: Any) -> Attribution:
    """The CFT relevance map of ``model`` for ``inputs`` as pixel scores ``[B, H, W]`` in [0, 1].

    (Fine-tuning is :func:`finetune`; this is the map the loss is computed on, usable as an
    attribution method for any TinyViT or Hugging Face ViT.)
    """
    t0 = time.perf_counter()
    rel, logits = relevance(model, inputs, target, **kwargs)
    tgt = logits.argmax(-1) if target is None else torch.as_tensor(target)
    n = inputs.shape[0]
    cost = Cost(forward=n, backward=n, wall_s=time.perf_counter() - t0)
    return Attribution(
        rel.detach(), "pixels", "cft_relevance", tgt.detach(), cost=cost, meta={"rule": "grad x attn rollout"}
    )
