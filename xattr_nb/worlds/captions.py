"""Image–caption ShapesWorld: the shared vision-language world of papers 20–24 (spec: §8–10 of
``shared-multimodal.md``).

Images come from :func:`xattr_nb.worlds.shapes.make_shapes` (one object, its shape, colour, size,
style, background and position known exactly); this module adds what a CLIP-style model needs:

- the vocabulary (:func:`vocabulary`, :data:`SPECIALS`) and :data:`TEMPLATES` (12 caption
  templates; the first three name the shape only, :data:`CLASS_TEMPLATES`, the zero-shot prompts);
- :func:`corpus`: the contrastive pretraining ("web") corpus over all 16 shapes, every colour,
  style, background, size and position, **except** the (shape, colour) pairs of
  :data:`HOLDOUT_PAIRS`, which never appear in it (:func:`holdout_set` renders them: the
  held-out attribute combinations a zero-shot evaluation uses);
- the fixed class splits: :data:`BASE_CLASSES` / :data:`NOVEL_CLASSES` (PromptSRC),
  :data:`ID_CLASSES` / :data:`NEAR_OOD_CLASSES` with :data:`LOOKALIKE` (cross-modal OoD), the
  downstream domain shift :data:`DOWNSTREAM_DOMAIN`, and the far-OoD sets
  :func:`far_ood_digits` (sklearn digits, coloured, upsampled to 32×32) and
  :func:`far_ood_textures` (object-free textures): no far-OoD image contains a shape;
- :func:`labelled` (class-labelled images of a subset of shapes in a domain) and
  :func:`fewshot` (exactly ``k`` images per class);
- :func:`world_version`: a hash of everything above plus the renderer's own
  :func:`xattr_nb.worlds.shapes.world_version`; checkpoints trained here store it and refuse to
  load under another.

Every sampler takes ``seed`` and is deterministic given it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
import torch

from xattr_nb.checks import InputError, check_float, check_int
from xattr_nb.worlds import shapes as _sw
from xattr_nb.worlds.base import WorldData, check_n, check_names, check_seed, config_hash

__all__ = [
    "BACKGROUNDS",
    "BASE_CLASSES",
    "CLASS_TEMPLATES",
    "COLORS",
    "DOWNSTREAM_DOMAIN",
    "FAR_OOD_NAMES",
    "HOLDOUT_PAIRS",
    "ID_CLASSES",
    "LOOKALIKE",
    "NEAR_OOD_CLASSES",
    "NEGATIVE_WORDS",
    "NOVEL_CLASSES",
    "POSITIONS",
    "PRIOR_BACKGROUND",
    "PRIOR_COLOR",
    "SHAPES",
    "SIZES",
    "SPECIALS",
    "STYLES",
    "TEMPLATES",
    "CaptionData",
    "caption",
    "corpus",
    "far_ood_digits",
    "far_ood_textures",
    "fewshot",
    "holdout_set",
    "labelled",
    "prior_mask",
    "vocabulary",
    "world_version",
]

SHAPES: tuple[str, ...] = _sw.SHAPES
COLORS: tuple[str, ...] = tuple(_sw.COLORS)
SIZES: tuple[str, ...] = tuple(_sw.SIZES)
STYLES: tuple[str, ...] = _sw.STYLES
BACKGROUNDS: tuple[str, ...] = _sw.BACKGROUNDS
POSITIONS: tuple[str, ...] = tuple(_sw.POSITIONS)
BASE_CLASSES: tuple[str, ...] = _sw.BASE_CLASSES
NOVEL_CLASSES: tuple[str, ...] = _sw.NOVEL_CLASSES
ID_CLASSES: tuple[str, ...] = _sw.ID_CLASSES
NEAR_OOD_CLASSES: tuple[str, ...] = _sw.NEAR_OOD_CLASSES
LOOKALIKE: dict[str, str] = dict(_sw.LOOKALIKE)

#: Caption templates. The first three mention the shape only (the zero-shot class prompts).
TEMPLATES: tuple[str, ...] = (
    "a photo of a {shape}",
    "a {shape}",
    "a drawing of a {shape}",
    "an image showing a {color} {shape}",
    "a photo of a {size} {color} {shape}",
    "a {color} {shape} on a {bg} background",
    "a drawing of a {shape} that is {color}",
    "there is a {style} {shape} in the {pos}",
    "a {size} {style} {shape}",
    "a {style} {color} {shape}",
    "a {shape} drawn in {color} on {bg}",
    "a picture of a {color} {shape} in the {pos}",
)
CLASS_TEMPLATES: tuple[str, ...] = TEMPLATES[:3]

#: One held-out colour per shape (each colour held out for two shapes): never in :func:`corpus`.
HOLDOUT_PAIRS: tuple[tuple[str, str], ...] = tuple((s, COLORS[(3 * i + 1) % len(COLORS)]) for i, s in enumerate(SHAPES))

#: The downstream domain of PromptSRC's base-to-novel task (shifted rendering; §10).
DOWNSTREAM_DOMAIN: dict[str, tuple[str, ...]] = {
    "styles": ("outline", "striped"),
    "backgrounds": ("noise", "grid"),
    "sizes": ("small", "medium"),
}


def _prior_colors() -> dict[str, str]:
    held = set(HOLDOUT_PAIRS)
    out = {}
    for s, c in _sw.PRIOR_COLOR.items():
        i = COLORS.index(c)
        while (s, COLORS[i]) in held:  # the prior must be a colour the shape is seen with
            i = (i + 1) % len(COLORS)
        out[s] = COLORS[i]
    return out


#: The planted shape → colour prior of the biased corpora (``corpus(..., spurious_color=rho)``):
#: :data:`xattr_nb.worlds.shapes.PRIOR_COLOR`, moved to the next palette colour where that colour is
#: one of the shape's :data:`HOLDOUT_PAIRS` (circle, star, plus).
PRIOR_COLOR: dict[str, str] = _prior_colors()
#: The shape → background tie of ``corpus(..., spurious_bg=rho)``: shape ``i`` → ``BACKGROUNDS[i % 5]``.
PRIOR_BACKGROUND: dict[str, str] = {s: BACKGROUNDS[i % len(BACKGROUNDS)] for i, s in enumerate(SHAPES)}

#: Far-OoD set names (never shapes).
FAR_OOD_NAMES: tuple[str, ...] = ("digits", "textures")
_DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
#: Special tokens, in the order the word tokenizer takes them (pad, unk, bos, eos, mask, then extra).
SPECIALS: tuple[str, ...] = ("[PAD]", "[UNK]", "[SOS]", "[EOS]", "[MASK]", "[X]")
_TEXTURES = ("noise", "grid", "hstripes", "vstripes", "checker", "dots", "gradient")
_FAR = {"digit_upsample": 4, "digit_backgrounds": ("black", "gray", "noise"), "textures": _TEXTURES}
_SLOTS = ("shape", "color", "size", "style", "bg", "pos")


def _caption_words() -> list[str]:
    words: list[str] = []
    pool = [t.replace("{", " ").replace("}", " ") for t in TEMPLATES]
    pool += [*SHAPES, *COLORS, *SIZES, *STYLES, *BACKGROUNDS, *POSITIONS]
    for text in pool:
        for w in text.split():
            if w not in _SLOTS and w not in words:
                words.append(w)
    return words


#: Words in the vocabulary that never appear in a caption (NegLabel candidates, modifiers).
NEGATIVE_WORDS: tuple[str, ...] = tuple(
    w
    for w in dict.fromkeys((*_sw.EXTRA_WORDS, *_DIGIT_WORDS, "stripes", "checker", "dots", "pattern"))
    if w not in _caption_words()
)


def world_version() -> str:
    """Hash of the renderer (:func:`xattr_nb.worlds.shapes.world_version`), templates, vocabulary and splits."""
    return config_hash(
        {
            "shapes_world": _sw.world_version(),
            "templates": TEMPLATES,
            "holdout": HOLDOUT_PAIRS,
            "domain": DOWNSTREAM_DOMAIN,
            "far": _FAR,
            "vocab": vocabulary(),
            "specials": SPECIALS,
        }
    )


def vocabulary() -> list[str]:
    """Every word a caption can use (template words and attribute values), then :data:`NEGATIVE_WORDS`."""
    return [*_caption_words(), *NEGATIVE_WORDS]


def caption(attr: dict[str, str], template: int) -> str:
    """``TEMPLATES[template]`` filled from ``attr`` (keys shape, color, size, style, bg, pos)."""
    template = check_int(template, "template", low=0, high=len(TEMPLATES) - 1)
    if not isinstance(attr, dict):
        raise InputError(f"`attr` must be a dict with keys {list(_SLOTS)}; got {type(attr).__name__}")
    missing = [k for k in _SLOTS if k not in attr]
    if missing:
        raise InputError(f"`attr` must hold {list(_SLOTS)}; missing {missing}")
    return TEMPLATES[template].format(**attr)


@dataclasses.dataclass
class CaptionData(WorldData):
    """Images with their attributes and one caption each.

    ``labels`` index ``classes`` (the shape classes of the draw; for :func:`corpus` all of
    :data:`SHAPES`); ``shape_ids`` / ``color_ids`` index :data:`SHAPES` / :data:`COLORS`;
    ``templates[i]`` is the template index of ``captions[i]``.
    """

    images: torch.Tensor  # [N, 3, H, W] float in [0, 1]
    labels: torch.Tensor  # [N] long into classes
    classes: tuple[str, ...]
    shape_ids: torch.Tensor  # [N] long into SHAPES
    color_ids: torch.Tensor  # [N] long into COLORS
    templates: torch.Tensor  # [N] long into TEMPLATES
    captions: list[str]
    attrs: list[dict[str, str]]
    seed: int = 0
    _items: ClassVar[tuple[str, ...]] = (
        "images", "labels", "shape_ids", "color_ids", "templates", "captions", "attrs",
    )  # fmt: skip

    def recaption(self, seed: int) -> list[str]:
        """Fresh captions of the same images (templates redrawn uniformly at ``seed``)."""
        rng = np.random.default_rng(check_seed(seed))
        return [caption(a, int(t)) for a, t in zip(self.attrs, rng.integers(0, len(TEMPLATES), len(self)), strict=True)]


def _from_parts(parts: list[Any], classes: tuple[str, ...], rng: np.random.Generator, seed: int) -> CaptionData:
    images = torch.cat([p.images for p in parts])
    attrs = [a for p in parts for a in p.attrs]
    order = rng.permutation(len(attrs))
    attrs = [attrs[i] for i in order]
    tmpl = rng.integers(0, len(TEMPLATES), len(attrs))
    return CaptionData(
        images=images[torch.as_tensor(order)],
        labels=torch.as_tensor([classes.index(a["shape"]) for a in attrs], dtype=torch.long),
        classes=classes,
        shape_ids=torch.as_tensor([SHAPES.index(a["shape"]) for a in attrs], dtype=torch.long),
        color_ids=torch.as_tensor([COLORS.index(a["color"]) for a in attrs], dtype=torch.long),
        templates=torch.as_tensor(tmpl, dtype=torch.long),
        captions=[caption(a, int(t)) for a, t in zip(attrs, tmpl, strict=True)],
        attrs=attrs,
        seed=seed,
    )


def _domain(domain: dict[str, Sequence[str]] | None) -> dict[str, tuple[str, ...]]:
    full = {"styles": STYLES, "backgrounds": BACKGROUNDS, "sizes": SIZES, "positions": POSITIONS}
    if domain is None:
        return full
    if not isinstance(domain, dict) or set(domain) - set(full):
        raise InputError(f"`domain` must be a dict with keys from {sorted(full)}; got {domain!r}")
    allowed = {"styles": STYLES, "backgrounds": _sw.ALL_BACKGROUNDS, "sizes": SIZES, "positions": POSITIONS}
    return {**full, **{k: check_names(v, allowed[k], f"domain[{k!r}]") for k, v in domain.items()}}


def corpus(
    n: int,
    *,
    seed: int = 0,
    size: int = 32,
    holdout: Sequence[tuple[str, str]] = HOLDOUT_PAIRS,
    spurious_color: float = 0.0,
    spurious_bg: float = 0.0,
) -> CaptionData:
    """The pretraining corpus: ``n`` captioned images over all shapes and colours but the ``holdout`` pairs.

    Unbiased (the default): drawn colour by colour (each colour gets ``n / 8`` images, balanced over
    the shapes it is allowed with), then shuffled; captions draw a template uniformly.

    Biased (the corpora of TinyT2I and TinyVLM, whose planted prior is the object of study): shapes are
    balanced; with probability ``spurious_color`` an image takes its shape's :data:`PRIOR_COLOR`,
    otherwise a colour drawn uniformly among those allowed with the shape; likewise ``spurious_bg``
    ties the background to :data:`PRIOR_BACKGROUND`. Held-out pairs never appear either way.
    :func:`prior_mask` tells which images follow the colour prior.
    """
    n = check_n(n)
    seed = check_seed(seed)
    rho_c = check_float(spurious_color, "spurious_color", low=0.0, high=1.0)
    rho_b = check_float(spurious_bg, "spurious_bg", low=0.0, high=1.0)
    held = {tuple(p) for p in holdout}
    rng = np.random.default_rng(seed)
    if rho_c == 0.0 and rho_b == 0.0:
        return _uniform_corpus(n, seed, size, held, rng)
    allowed = {s: [c for c in COLORS if (s, c) not in held] for s in SHAPES}
    if any(not v for v in allowed.values()) or any((s, PRIOR_COLOR[s]) in held for s in SHAPES):
        raise InputError("`holdout` must leave every shape its PRIOR_COLOR and at least one colour")
    shapes = np.arange(n) % len(SHAPES)
    rng.shuffle(shapes)
    groups: dict[tuple[str, str, str], int] = {}
    for k in shapes:
        s = SHAPES[k]
        col = PRIOR_COLOR[s] if rng.random() < rho_c else allowed[s][int(rng.integers(len(allowed[s])))]
        bg = PRIOR_BACKGROUND[s] if rng.random() < rho_b else BACKGROUNDS[int(rng.integers(len(BACKGROUNDS)))]
        groups[(s, col, bg)] = groups.get((s, col, bg), 0) + 1
    parts = [
        _sw.make_shapes(
            m,
            classes=(s,),
            colors=(col,),
            styles=STYLES,
            backgrounds=(bg,),
            size=size,
            seed=int(seed * 7919 + i) % 2**32,
        )
        for i, ((s, col, bg), m) in enumerate(sorted(groups.items()))
    ]
    return _from_parts(parts, SHAPES, rng, seed)


def _uniform_corpus(n: int, seed: int, size: int, held: set, rng: np.random.Generator) -> CaptionData:
    parts = []
    counts = np.full(len(COLORS), n // len(COLORS))
    counts[: n % len(COLORS)] += 1
    for ci, (col, m) in enumerate(zip(COLORS, counts, strict=True)):
        allowed = tuple(s for s in SHAPES if (s, col) not in held)
        if m == 0 or not allowed:
            continue
        parts.append(
            _sw.make_shapes(
                int(m),
                classes=allowed,
                colors=(col,),
                styles=STYLES,
                backgrounds=BACKGROUNDS,
                size=size,
                seed=int(seed * 1000 + ci) % 2**32,
            )
        )
    return _from_parts(parts, SHAPES, rng, seed)


def prior_mask(data: CaptionData) -> torch.Tensor:
    """``[N]`` bool: which images of ``data`` show their shape in its :data:`PRIOR_COLOR`."""
    if not isinstance(data, CaptionData):
        raise InputError(f"`data` must be a CaptionData (e.g. from corpus()); got {type(data).__name__}")
    prior = torch.as_tensor([COLORS.index(PRIOR_COLOR[s]) for s in SHAPES])
    return prior[data.shape_ids] == data.color_ids


def holdout_set(n_per_pair: int, *, seed: int = 0, size: int = 32) -> CaptionData:
    """``n_per_pair`` images of each held-out (shape, colour) pair of :data:`HOLDOUT_PAIRS`, all domains."""
    n_per_pair = check_n(n_per_pair, "n_per_pair")
    seed = check_seed(seed)
    parts = [
        _sw.make_shapes(
            n_per_pair,
            classes=(s,),
            colors=(c,),
            styles=STYLES,
            backgrounds=BACKGROUNDS,
            size=size,
            seed=int(seed * 1000 + 500 + i) % 2**32,
        )
        for i, (s, c) in enumerate(HOLDOUT_PAIRS)
    ]
    return _from_parts(parts, SHAPES, np.random.default_rng(seed), seed)


def labelled(
    classes: Sequence[str],
    n: int,
    *,
    domain: dict[str, Sequence[str]] | None = None,
    colors: Sequence[str] = COLORS,
    seed: int = 0,
    size: int = 32,
) -> CaptionData:
    """``n`` images of ``classes`` (balanced: ``i % len(classes)``), labels index ``classes``.

    ``domain`` restricts styles / backgrounds / sizes / positions (e.g. :data:`DOWNSTREAM_DOMAIN`).
    """
    classes = check_names(classes, SHAPES, "classes")
    n = check_n(n)
    seed = check_seed(seed)
    d = _domain(domain)
    colors = check_names(colors, COLORS, "colors")
    data = _sw.make_shapes(n, classes=classes, colors=colors, size=size, seed=seed, **d)
    return _from_parts([data], classes, np.random.default_rng(seed + 1), seed)


def fewshot(
    classes: Sequence[str], k: int, *, domain: dict[str, Sequence[str]] | None = None, seed: int = 0, size: int = 32
) -> CaptionData:
    """Exactly ``k`` labelled images per class of ``classes`` (a few-shot training set)."""
    classes = check_names(classes, SHAPES, "classes")
    k = check_n(k, "k")
    return labelled(classes, k * len(classes), domain=domain, seed=seed, size=size)


def _texture_bank(n: int, size: int, rng: np.random.Generator, names: Sequence[str]) -> np.ndarray:
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float32)
    out = np.empty((n, 3, size, size), dtype=np.float32)
    kinds = rng.integers(0, len(names), n)
    for i, kind in enumerate(kinds):
        name = names[kind]
        lo, hi = sorted(rng.uniform(0.05, 0.7, 2))
        period = int(rng.integers(2, 6))
        if name == "noise":
            img = rng.uniform(lo, hi + 0.1, size=(size, size))
        elif name == "black":
            img = np.full((size, size), 0.05)
        elif name == "gray":
            img = np.full((size, size), 0.5)
        elif name == "grid":
            img = np.where((xs % period == 0) | (ys % period == 0), hi, lo)
        elif name == "hstripes":
            img = np.where((ys // period) % 2 == 0, hi, lo)
        elif name == "vstripes":
            img = np.where((xs // period) % 2 == 0, hi, lo)
        elif name == "checker":
            img = np.where(((xs // period) + (ys // period)) % 2 == 0, hi, lo)
        elif name == "dots":
            img = np.where((xs % period == 1) & (ys % period == 1), hi, lo)
        else:  # gradient
            a = rng.uniform(0, 2 * np.pi)
            t = (np.cos(a) * (xs - size / 2) + np.sin(a) * (ys - size / 2)) / size
            img = lo + (hi - lo) * np.clip(t + 0.5, 0, 1)
        tint = rng.uniform(0.7, 1.0, 3).astype(np.float32)
        out[i] = np.asarray(img, np.float32)[None] * tint[:, None, None]
    return np.clip(out, 0.0, 1.0)


def far_ood_textures(n: int, *, seed: int = 0, size: int = 32) -> torch.Tensor:
    """``n`` object-free texture images ``[n, 3, size, size]`` (noise, grids, stripes, checkers, dots, ramps)."""
    n = check_n(n)
    rng = np.random.default_rng(check_seed(seed))
    return torch.from_numpy(_texture_bank(n, check_int(size, "size", low=8), rng, _TEXTURES))


def far_ood_digits(n: int, *, seed: int = 0, size: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` sklearn digits (8×8, upsampled ×4 to 32×32, then resized to ``size``) in a random palette
    colour on a black, gray or noise background. Returns ``(images [n, 3, size, size], digits [n])``."""
    from sklearn.datasets import load_digits

    n = check_n(n)
    size = check_int(size, "size", low=8)
    rng = np.random.default_rng(check_seed(seed))
    d = load_digits()
    idx = rng.integers(0, len(d.target), n)
    up = _FAR["digit_upsample"]
    alpha = np.kron(d.images[idx] / 16.0, np.ones((up, up)))  # [n, 32, 32]
    if size != 8 * up:
        alpha = torch.nn.functional.interpolate(torch.as_tensor(alpha)[:, None], size=(size, size), mode="nearest")
        alpha = alpha[:, 0].numpy()
    bg = _texture_bank(n, size, rng, _FAR["digit_backgrounds"])
    palette = np.asarray(list(_sw.COLORS.values()), np.float32)[rng.integers(0, len(COLORS), n)]
    img = bg * (1 - alpha[:, None]) + palette[:, :, None, None] * alpha[:, None]
    return torch.from_numpy(np.clip(img, 0, 1).astype(np.float32)), torch.as_tensor(d.target[idx], dtype=torch.long)
