"""ShapesWorld: small RGB images of coloured glyphs whose every pixel has a known cause.

Each image holds one *target* object (a shape from :data:`SHAPES`, in a colour, size, style and
position) on a background, optionally with small class-neutral distractor dots, a twin copy of the
target, a coloured discriminative part (a "crest"), and a background tied to the class (the
spurious-correlation knob). Because we draw every pixel ourselves, the ground truth is exact:

- ``masks``: the pixels painted for the target (outline and stripes included, nothing else);
  on any background, ``images[i]`` differs from the pure background exactly there (before the
  optional blur) unless a distractor is painted (distractors never touch the target);
- ``part_masks``: the crest pixels, a subset of ``masks`` (``parts=True``);
- ``boxes``: the tight ``xyxy`` box of ``masks`` in pixel-edge coordinates, i.e. the mask's
  pixels are ``x1 <= x < x2``, ``y1 <= y < y2`` (torchvision's convention for pixel boxes);
- ``backgrounds``: which background was drawn, and ``spurious`` whether it was tied to the class.

Rendering is vectorised numpy over the batch (implicit functions and polygon point tests on the
pixel grid), about 0.1 ms per 32×32 image. Shapes are binary (no anti-aliasing) so that masks are
exact. The spec is §10 of ``shared-multimodal.md`` (sizes, styles, backgrounds, splits, captions).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
import torch

from xattr_nb.checks import InputError, check_float, check_int
from xattr_nb.worlds.base import WorldData, check_n, check_names, check_seed, config_hash, split, subset

__all__ = [
    "ALL_BACKGROUNDS",
    "BACKGROUNDS",
    "BASE_CLASSES",
    "CAPTION_TEMPLATES",
    "COLORS",
    "EXTRA_WORDS",
    "ID_CLASSES",
    "LOOKALIKE",
    "NEAR_OOD_CLASSES",
    "NOVEL_CLASSES",
    "POSITIONS",
    "PRIOR_COLOR",
    "SHAPES",
    "SIZES",
    "SPECIAL_TOKENS",
    "STYLES",
    "SceneData",
    "ShapesData",
    "caption_vocab",
    "make_scenes",
    "make_shapes",
    "render_masks",
    "split",
    "subset",
    "world_version",
]

# ----------------------------------------------------------------------------------------------
# The world's constants (part of world_version()).

SHAPES: tuple[str, ...] = (
    "circle", "square", "triangle", "star", "heart", "cross", "pentagon", "arrow",
    "crescent", "trapezoid", "ring", "ellipse", "diamond", "plus", "hexagon", "bolt",
)  # fmt: skip
#: Palette, RGB in [0, 1]. Every colour has a channel >= 0.8, so it never equals a background.
COLORS: dict[str, tuple[float, float, float]] = {
    "red": (0.90, 0.12, 0.12),
    "orange": (0.95, 0.55, 0.10),
    "yellow": (0.95, 0.90, 0.15),
    "green": (0.15, 0.80, 0.20),
    "cyan": (0.15, 0.85, 0.90),
    "blue": (0.15, 0.30, 0.95),
    "purple": (0.65, 0.20, 0.90),
    "white": (0.95, 0.95, 0.95),
}
#: Object radius in pixels at image size 32 (scaled linearly with ``size``).
SIZES: dict[str, float] = {"small": 5.0, "medium": 8.0, "large": 11.0}
STYLES: tuple[str, ...] = ("solid", "outline", "striped")
#: The five backgrounds of §10; :data:`ALL_BACKGROUNDS` adds four low-contrast textures.
BACKGROUNDS: tuple[str, ...] = ("black", "gray", "noise", "grid", "gradient")
ALL_BACKGROUNDS: tuple[str, ...] = (*BACKGROUNDS, "hstripes", "vstripes", "checker", "dots")
#: Object centre offset (dx, dy) in pixels at size 32; y grows downwards.
POSITIONS: dict[str, tuple[float, float]] = {
    "center": (0.0, 0.0),
    "top left": (-7.0, -7.0),
    "top right": (7.0, -7.0),
    "bottom left": (-7.0, 7.0),
    "bottom right": (7.0, 7.0),
}

#: PromptSRC base/novel split: near-duplicate pairs straddle it (circle/ellipse, plus/cross, ...).
BASE_CLASSES: tuple[str, ...] = ("circle", "triangle", "star", "heart", "pentagon", "crescent", "ring", "plus")
NOVEL_CLASSES: tuple[str, ...] = ("square", "cross", "arrow", "trapezoid", "ellipse", "diamond", "hexagon", "bolt")
#: OoD split: ID = the first ten shapes; near-OoD = the other six, each with its ID look-alike.
ID_CLASSES: tuple[str, ...] = SHAPES[:10]
NEAR_OOD_CLASSES: tuple[str, ...] = SHAPES[10:]
LOOKALIKE: dict[str, str] = {
    "ring": "circle",
    "ellipse": "circle",
    "diamond": "square",
    "plus": "cross",
    "hexagon": "pentagon",
    "bolt": "arrow",
}
#: Spurious colour prior per shape (used with ``spurious_color=rho``).
PRIOR_COLOR: dict[str, str] = dict(
    zip(SHAPES, ["orange", "blue", "green", "yellow", "red", "purple", "cyan", "white",
                 "white", "green", "blue", "cyan", "purple", "red", "orange", "yellow"], strict=True)
)  # fmt: skip

CAPTION_TEMPLATES: tuple[str, ...] = (
    "a photo of a {size} {color} {shape}",
    "a {color} {shape} on a {bg} background",
    "a drawing of a {shape} that is {color}",
    "there is a {style} {shape} on the {pos}",
    "an image showing a {color} {shape}",
    "a {size} {style} {shape}",
    "a {style} {color} {shape}",
    "the {shape} is {color} and {size}",
    "a picture of a {color} {shape} in the {pos}",
    "a {shape} drawn in {color} on {bg}",
    "a {size} {shape} on a {bg} background",
    "a {color} {shape}",
)
SPECIAL_TOKENS: tuple[str, ...] = ("[PAD]", "[SOS]", "[EOS]", "[UNK]", "[X]", "[MASK]")
#: Non-visual words (NegLabel candidates, SAGE modifiers); in the vocabulary, never in captions.
EXTRA_WORDS: tuple[str, ...] = (
    "digit", "seven", "pattern", "texture", "near", "beside", "bright", "dark", "object", "thing",
    "number", "letter", "small", "big", "shiny", "blurry",
)  # fmt: skip

# Shapes in a local frame: unit radius, u to the right, v upwards. Polygons are tested with the
# even-odd rule; the rest are implicit functions.
_plus = [(-0.3, 1), (0.3, 1), (0.3, 0.3), (1, 0.3), (1, -0.3), (0.3, -0.3), (0.3, -1), (-0.3, -1),
         (-0.3, -0.3), (-1, -0.3), (-1, 0.3), (-0.3, 0.3)]  # fmt: skip
_c45 = np.cos(np.pi / 4)


def _regular(k: int, start_deg: float, radii: Sequence[float] = (1.0,)) -> list[tuple[float, float]]:
    out = []
    for i in range(k * len(radii)):
        a = np.deg2rad(start_deg) + 2 * np.pi * i / (k * len(radii))
        r = radii[i % len(radii)]
        out.append((float(r * np.cos(a)), float(r * np.sin(a))))
    return out


_POLYGONS: dict[str, list[tuple[float, float]]] = {
    "square": [(-0.8, -0.8), (0.8, -0.8), (0.8, 0.8), (-0.8, 0.8)],
    "triangle": _regular(3, 90),
    "star": _regular(5, 90, (1.0, 0.45)),
    "cross": [(float(_c45 * (x - y)), float(_c45 * (x + y))) for x, y in _plus],
    "pentagon": _regular(5, 90),
    "arrow": [(-1, -0.25), (0.2, -0.25), (0.2, -0.65), (1, 0), (0.2, 0.65), (0.2, 0.25), (-1, 0.25)],
    "trapezoid": [(-0.95, -0.6), (0.95, -0.6), (0.5, 0.6), (-0.5, 0.6)],
    "diamond": [(0, 1), (0.62, 0), (0, -1), (-0.62, 0)],
    "plus": _plus,
    "hexagon": _regular(6, 0),
    "bolt": [(-0.1, 1), (0.55, 1), (0.15, 0.2), (0.55, 0.2), (-0.3, -1), (0.0, -0.1), (-0.45, -0.1)],
}
#: Radius (in units of the object radius) of a disc that contains the shape; used for placement.
_EXTENT: dict[str, float] = {s: max(float(np.hypot(*p)) for p in v) for s, v in _POLYGONS.items()}
_EXTENT.update(circle=1.0, ring=1.0, ellipse=1.0, crescent=1.0, heart=1.15)
_PART_V = 0.35  # the crest is the part of the object above v > _PART_V in its own frame
_BODY_GREY = (0.62, 0.62, 0.62)
_RENDER = {"version": 1, "outline_px_per_radius": 1 / 5.0, "stripe_period": 4, "rotation_deg": 15,
           "jitter_px": 2, "color_jitter": 0.08, "distractor_radius": 1.5}  # fmt: skip


def world_version() -> str:
    """A hash of everything that defines the world (shapes, palette, renderer, templates, splits).

    Store it with every checkpoint trained on ShapesWorld: a different hash means the images the
    checkpoint was trained on can no longer be regenerated bit for bit.
    """
    return config_hash(
        {
            "shapes": SHAPES,
            "colors": COLORS,
            "sizes": SIZES,
            "styles": STYLES,
            "bgs": ALL_BACKGROUNDS,
            "positions": POSITIONS,
            "polygons": _POLYGONS,
            "render": _RENDER,
            "templates": CAPTION_TEMPLATES,
            "splits": [BASE_CLASSES, NOVEL_CLASSES, ID_CLASSES, LOOKALIKE, PRIOR_COLOR],
            "part_v": _PART_V,
        }
    )


def caption_vocab() -> list[str]:
    """The word-level caption vocabulary: specials first, then every word a caption can use, then
    :data:`EXTRA_WORDS`. Captions are lower-case and whitespace-separated."""
    words: list[str] = []
    pool = [t.replace("{", " ").replace("}", " ") for t in CAPTION_TEMPLATES]
    pool += list(SHAPES) + list(COLORS) + list(SIZES) + list(STYLES) + list(ALL_BACKGROUNDS) + list(POSITIONS)
    for text in pool:
        for w in text.split():
            if w not in {"size", "color", "shape", "bg", "style", "pos"} and w not in words:
                words.append(w)
    return [*SPECIAL_TOKENS, *words, *(w for w in EXTRA_WORDS if w not in words)]


# ----------------------------------------------------------------------------------------------
# Rendering kernels (numpy, vectorised over a batch of objects).


def _inside_polygon(u: np.ndarray, v: np.ndarray, verts: Sequence[tuple[float, float]]) -> np.ndarray:
    """Even-odd point-in-polygon test on arrays of local coordinates (written by hand: numpy has
    no vectorised polygon fill and matplotlib's Path is per polygon, not per batch)."""
    inside = np.zeros(u.shape, dtype=bool)
    n = len(verts)
    for i in range(n):
        x1, y1 = verts[i]
        x2, y2 = verts[(i + 1) % n]
        if y1 == y2:
            continue
        crosses = (y1 > v) != (y2 > v)
        x_at = x1 + (v - y1) * (x2 - x1) / (y2 - y1)
        inside ^= crosses & (u < x_at)
    return inside


def _shape_fn(name: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    if name in _POLYGONS:
        return _inside_polygon(u, v, _POLYGONS[name])
    r2 = u * u + v * v
    if name == "circle":
        return r2 <= 1.0
    if name == "ring":
        return (r2 <= 1.0) & (r2 >= 0.55**2)
    if name == "ellipse":
        return u * u + (v / 0.55) ** 2 <= 1.0
    if name == "crescent":
        return (r2 <= 1.0) & ((u - 0.45) ** 2 + (v - 0.1) ** 2 > 0.8**2)
    if name == "heart":
        x, y = 1.2 * u, 1.2 * v + 0.15
        return (x * x + y * y - 1) ** 3 - x * x * y**3 <= 0
    raise AssertionError(name)


def _local(cx, cy, radius, angle, h: int, w: int):
    """Pixel grid in each object's frame: ``u, v`` arrays ``[M, H, W]`` (v upwards)."""
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float64)
    dx = (xs[None] - np.asarray(cx, float)[:, None, None]) / np.asarray(radius, float)[:, None, None]
    dy = (ys[None] - np.asarray(cy, float)[:, None, None]) / np.asarray(radius, float)[:, None, None]
    c = np.cos(np.asarray(angle, float))[:, None, None]
    s = np.sin(np.asarray(angle, float))[:, None, None]
    # rotate counter-clockwise on screen by `angle`: image y points down, so flip v
    u = c * dx - s * dy
    v = -(s * dx + c * dy)
    return u, v


def render_masks(
    shapes: Sequence[str] | np.ndarray,
    cx: Any,
    cy: Any,
    radius: Any,
    angle: Any,
    size: int | tuple[int, int],
) -> np.ndarray:
    """Filled silhouettes ``[M, H, W]`` bool of ``M`` shapes.

    ``shapes`` are names from :data:`SHAPES` (or indices into it); ``cx, cy`` the centres in
    pixels (x to the right, y down, pixel ``(x, y)`` sampled at its integer coordinates);
    ``radius`` in pixels; ``angle`` in radians, counter-clockwise on screen. Useful on its own
    for template matching and glyph-shaped holes.
    """
    if isinstance(shapes, str) or shapes is None:
        raise InputError(f"`shapes` must be a list of shape names or indices; got {shapes!r}")
    names = []
    for s in np.asarray(shapes, dtype=object).ravel():
        if isinstance(s, (int, np.integer)) and not isinstance(s, bool) and 0 <= int(s) < len(SHAPES):
            s = SHAPES[int(s)]
        if not isinstance(s, str) or s not in SHAPES:
            raise InputError(f"`shapes` contains unknown shape {s!r}; choose from {list(SHAPES)} or their indices")
        names.append(s)
    if isinstance(size, (tuple, list)) and len(size) == 2:
        h, w = check_int(size[0], "size[0]", low=1), check_int(size[1], "size[1]", low=1)
    else:
        h = w = check_int(size, "size", low=1)
    m = len(names)
    geom = {}
    for name, val in (("cx", cx), ("cy", cy), ("radius", radius), ("angle", angle)):
        try:
            flat = np.asarray(val, dtype=np.float64).ravel()
        except (TypeError, ValueError):
            flat = np.empty(0)
        if flat.size not in (1, m) or not np.isfinite(flat).all() or isinstance(val, (bool, str)):
            raise InputError(f"`{name}` must be a finite number or one per shape ({m}); got {val!r}")
        geom[name] = np.full(m, flat[0]) if flat.size == 1 else flat
    u, v = _local(geom["cx"], geom["cy"], geom["radius"], geom["angle"], int(h), int(w))
    out = np.zeros(u.shape, dtype=bool)
    arr = np.asarray(names)
    for s in set(names):
        sel = np.flatnonzero(arr == s)
        out[sel] = _shape_fn(s, u[sel], v[sel])
    return out


def _erode(mask: np.ndarray, steps: np.ndarray) -> np.ndarray:
    """4-neighbour binary erosion ``steps[i]`` times per object (outside the image counts as empty)."""
    out = mask.copy()
    for k in range(int(steps.max(initial=0))):
        p = np.pad(out, ((0, 0), (1, 1), (1, 1)))
        er = out & p[:, :-2, 1:-1] & p[:, 2:, 1:-1] & p[:, 1:-1, :-2] & p[:, 1:-1, 2:]
        act = steps > k
        out[act] = er[act]
    return out


def _style(sil: np.ndarray, styles: np.ndarray, radius: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Pixels actually painted: the silhouette (solid), its inner band (outline), or stripes."""
    drawn = sil.copy()
    outline = styles == STYLES.index("outline")
    if outline.any():
        width = np.maximum(1, np.round(radius[outline] * _RENDER["outline_px_per_radius"])).astype(int)
        drawn[outline] = sil[outline] & ~_erode(sil[outline], width)
    striped = styles == STYLES.index("striped")
    if striped.any():
        h, w = sil.shape[1:]
        ys, xs = np.mgrid[0:h, 0:w].astype(np.float64)
        a = rng.uniform(0, np.pi, size=int(striped.sum()))[:, None, None]
        t = np.cos(a) * xs[None] + np.sin(a) * ys[None]
        period = _RENDER["stripe_period"]
        drawn[striped] = sil[striped] & (np.mod(t, period) < period / 2)
    return drawn


def _backgrounds(ids: np.ndarray, names: Sequence[str], h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """Background images ``[N, 3, H, W]`` float in [0, 1] for background indices into ``names``."""
    n = len(ids)
    out = np.empty((n, 3, h, w), dtype=np.float32)
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    for b, name in enumerate(names):
        sel = np.flatnonzero(ids == b)
        m = len(sel)
        if m == 0:
            continue
        if name == "black":
            img = np.full((m, 3, h, w), 0.05, np.float32)
        elif name == "gray":
            img = np.full((m, 3, h, w), 0.5, np.float32)
        elif name == "noise":  # uniform noise with std 0.15 around 0.3
            half = 0.15 * np.sqrt(3.0)
            img = rng.uniform(0.3 - half, 0.3 + half, size=(m, 3, h, w)).astype(np.float32)
        elif name == "grid":
            off = rng.integers(0, 4, size=(m, 2))
            line = ((xs[None] - off[:, :1, None]) % 4 == 0) | ((ys[None] - off[:, 1:, None]) % 4 == 0)
            img = np.repeat(np.where(line, 0.45, 0.15)[:, None], 3, axis=1).astype(np.float32)
        elif name == "gradient":
            a = rng.uniform(0, 2 * np.pi, size=m)[:, None, None]
            t = (np.cos(a) * (xs[None] - w / 2) + np.sin(a) * (ys[None] - h / 2)) / (0.75 * max(h, w))
            img = np.repeat((0.35 + 0.5 * np.clip(t, -0.5, 0.5))[:, None], 3, axis=1).astype(np.float32)
        else:  # low-contrast textures
            if name == "hstripes":
                pat = (ys // 2) % 2 == 0
            elif name == "vstripes":
                pat = (xs // 2) % 2 == 0
            elif name == "checker":
                pat = ((xs // 2) + (ys // 2)) % 2 == 0
            else:  # dots
                pat = (xs % 4 == 1) & (ys % 4 == 1)
            img = np.broadcast_to(np.where(pat, 0.42, 0.30)[None, None], (m, 3, h, w)).astype(np.float32)
        out[sel] = img
    return out


def _tight_boxes(masks: np.ndarray) -> np.ndarray:
    """``[M, 4]`` xyxy pixel-edge boxes of boolean masks (zeros for an empty mask)."""
    rows, cols = masks.any(axis=2), masks.any(axis=1)
    h, w = masks.shape[1:]
    x1 = cols.argmax(axis=1)
    x2 = w - cols[:, ::-1].argmax(axis=1)
    y1 = rows.argmax(axis=1)
    y2 = h - rows[:, ::-1].argmax(axis=1)
    box = np.stack([x1, y1, x2, y2], axis=1).astype(np.float32)
    box[~masks.any(axis=(1, 2))] = 0
    return box


def _free_centres(
    rng: np.random.Generator,
    taken: list[tuple[np.ndarray, np.ndarray, np.ndarray]],
    r_new: np.ndarray,
    h: int,
    w: int,
    tries: int = 48,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Centres for new objects of bounding radius ``r_new`` [N] inside the image and at least
    1.5 px clear of every disc in ``taken`` (lists of (cx, cy, bounding radius)). Returns
    ``cx, cy, ok``; ``ok`` is False where no candidate fitted in ``tries`` draws."""
    n = len(r_new)
    lo_x, hi_x = r_new, (w - 1) - r_new
    lo_y, hi_y = r_new, (h - 1) - r_new
    cand_x = rng.uniform(size=(n, tries)) * np.maximum(hi_x - lo_x, 0)[:, None] + lo_x[:, None]
    cand_y = rng.uniform(size=(n, tries)) * np.maximum(hi_y - lo_y, 0)[:, None] + lo_y[:, None]
    good = np.ones((n, tries), dtype=bool)
    for tx, ty, tr in taken:
        d = np.hypot(cand_x - tx[:, None], cand_y - ty[:, None])
        good &= d > (tr + r_new)[:, None] + 1.5
    ok = good.any(axis=1)
    first = good.argmax(axis=1)
    return cand_x[np.arange(n), first], cand_y[np.arange(n), first], ok


def _grid_centres(
    rng: np.random.Generator,
    taken: list[tuple[np.ndarray, np.ndarray, np.ndarray]],
    r_new: np.ndarray,
    h: int,
    w: int,
    rows: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Like :func:`_free_centres` for ``rows`` only, but searching every half-pixel centre: random draws
    miss small free regions (a second copy beside a central object only fits in the corners)."""
    cx, cy, ok = np.zeros(len(rows)), np.zeros(len(rows)), np.zeros(len(rows), dtype=bool)
    for j, i in enumerate(rows):
        r = r_new[i]
        gx, gy = np.meshgrid(np.arange(r, w - 1 - r + 1e-9, 0.5), np.arange(r, h - 1 - r + 1e-9, 0.5))
        free = np.ones(gx.shape, dtype=bool)
        for tx, ty, tr in taken:
            free &= np.hypot(gx - tx[i], gy - ty[i]) > tr[i] + r + 1.5
        if free.any():
            k = rng.choice(np.flatnonzero(free.ravel()))
            cx[j], cy[j], ok[j] = gx.ravel()[k], gy.ravel()[k], True
    return cx, cy, ok


def _colours(ids: np.ndarray, rng: np.random.Generator, jitter: bool = True) -> np.ndarray:
    rgb = np.asarray(list(COLORS.values()), dtype=np.float32)[ids]
    if jitter:
        j = _RENDER["color_jitter"]
        rgb = rgb * (1 + rng.uniform(-j, j, size=rgb.shape)).astype(np.float32)
    return np.clip(rgb, 0.0, 1.0)


def _paint(img: np.ndarray, mask: np.ndarray, rgb: np.ndarray) -> None:
    """In place: set ``img[i, :, mask[i]] = rgb[i]``."""
    np.copyto(img, rgb[:, :, None, None], where=mask[:, None])


# ----------------------------------------------------------------------------------------------
# Datasets.


@dataclasses.dataclass
class ShapesData(WorldData):
    """One ShapesWorld batch; see the module docstring for the exact ground truth.

    Index tensors (``colors``, ``sizes``, ``styles``, ``positions``) point into :data:`COLORS`,
    :data:`SIZES`, :data:`STYLES`, :data:`POSITIONS` (dict order); ``backgrounds`` into
    ``background_names``; ``labels`` into ``classes``; ``shape_ids`` into :data:`SHAPES`.
    ``attrs[i]`` has the same information as names, and ``captions[i]`` a templated caption.
    """

    images: torch.Tensor  # [N, 3, H, W] float in [0, 1]
    labels: torch.Tensor  # [N] long, index into classes
    classes: tuple[str, ...]
    masks: torch.Tensor  # [N, H, W] bool, target pixels as painted
    silhouettes: torch.Tensor  # [N, H, W] bool, filled target shape(s) (= masks for solid style)
    part_masks: torch.Tensor | None  # [N, H, W] bool crest pixels, or None
    distractor_masks: torch.Tensor  # [N, H, W] bool
    boxes: torch.Tensor  # [N, 4] float xyxy, tight around masks
    backgrounds: torch.Tensor  # [N] long, index into background_names
    background_names: tuple[str, ...]
    spurious: torch.Tensor  # [N] bool, background tied to the class for this image
    shape_ids: torch.Tensor  # [N] long
    colors: torch.Tensor  # [N] long
    sizes: torch.Tensor  # [N] long
    styles: torch.Tensor  # [N] long
    positions: torch.Tensor  # [N] long
    captions: list[str]
    attrs: list[dict[str, str]]
    seed: int = 0
    _items: ClassVar[tuple[str, ...]] = (
        "images", "labels", "masks", "silhouettes", "part_masks", "distractor_masks", "boxes", "backgrounds",
        "spurious", "shape_ids", "colors", "sizes", "styles", "positions", "captions", "attrs",
    )  # fmt: skip

    @property
    def spurious_map(self) -> dict[str, str]:
        """The class → background tie used where ``spurious`` is True: class k gets
        ``background_names[k % len(background_names)]``."""
        return {c: self.background_names[k % len(self.background_names)] for k, c in enumerate(self.classes)}


def _check_classes(classes: Any, name: str = "classes") -> tuple[str, ...]:
    return check_names(classes, SHAPES, name)


def _opt_rho(value: Any, name: str) -> float | None:
    return None if value is None else check_float(value, name, low=0.0, high=1.0)


def make_shapes(
    n: int,
    *,
    classes: Sequence[str] = SHAPES[:4],
    size: int = 32,
    colors: Sequence[str] = tuple(COLORS),
    sizes: Sequence[str] = tuple(SIZES),
    styles: Sequence[str] = ("solid",),
    backgrounds: Sequence[str] = BACKGROUNDS,
    positions: Sequence[str] = tuple(POSITIONS),
    spurious_bg: float | None = None,
    spurious_color: float | None = None,
    n_distractors: int = 0,
    twin: bool = False,
    parts: bool = False,
    body: str | None = None,
    rotation: bool = True,
    blur_p: float = 0.0,
    seed: int = 0,
) -> ShapesData:
    """Render ``n`` single-object ShapesWorld images with exact masks, boxes and captions.

    Labels are balanced (``i % len(classes)``, shuffled). Each image draws the target's colour,
    size, style, position and background uniformly from the allowed names (the domain knobs
    ``colors``, ``sizes``, ``styles``, ``backgrounds``, ``positions``), then adds intra-class
    variation: rotation ±15° (``rotation``), centre jitter ±2 px, colour jitter ±8 % per channel.

    - ``spurious_bg=rho``: with probability ``rho`` the background is tied to the class,
      class ``k`` → ``backgrounds[k % len(backgrounds)]`` (``data.spurious_map``); otherwise it is
      uniform. ``None`` or ``0`` = no tie. ``spurious_color=rho`` ties the colour to
      :data:`PRIOR_COLOR` the same way.
    - ``n_distractors``: class-neutral dots (radius 1.5 px at size 32) in palette colours, placed
      at least 1.5 px clear of the target's bounding disc (a dot that finds no room after 48 draws
      is left out; ``distractor_masks`` says where they are).
    - ``twin``: a second copy of the target (same shape, colour, style; own rotation) at a random
      non-overlapping position; ``masks``/``boxes`` cover both copies.
    - ``parts``: the object body is painted neutral grey and its top part (above 0.35 radius in the
      object's own frame) in the class colour ``COLORS[k % 8]``: a discriminative crest,
      ``part_masks``. With ``body="square"`` (any shape name) every class has that body, so the
      crest is the *only* class evidence (the CFT set-up).
    - ``blur_p``: fraction of images blurred by a 3×3 box filter *after* drawing; their masks are
      the pre-blur pixels (keep 0 when exact masks matter).
    """
    n = check_n(n)
    classes = _check_classes(classes)
    size = check_int(size, "size", low=8, high=1024)
    colors = check_names(colors, tuple(COLORS), "colors")
    sizes = check_names(sizes, tuple(SIZES), "sizes")
    styles = check_names(styles, STYLES, "styles")
    backgrounds = check_names(backgrounds, ALL_BACKGROUNDS, "backgrounds")
    positions = check_names(positions, tuple(POSITIONS), "positions")
    rho_bg = _opt_rho(spurious_bg, "spurious_bg")
    rho_col = _opt_rho(spurious_color, "spurious_color")
    n_distractors = check_int(n_distractors, "n_distractors", low=0, high=16)
    blur_p = check_float(blur_p, "blur_p", low=0.0, high=1.0)
    if body is not None:
        if not parts:
            raise InputError("`body` only applies with `parts=True` (it sets the class-agnostic body shape)")
        body = check_names([body], SHAPES, "body")[0]
    seed = check_seed(seed)
    rng = np.random.default_rng(seed)
    h = w = size
    scale = size / 32.0
    k_cls = len(classes)

    labels = rng.permutation(np.arange(n) % k_cls)
    shape_ids = np.array([SHAPES.index(body or classes[k]) for k in labels])
    col_all = list(COLORS)
    color_ids = np.array([col_all.index(c) for c in colors])[rng.integers(0, len(colors), n)]
    if rho_col:
        tie = rng.uniform(size=n) < rho_col
        prior = np.array([col_all.index(PRIOR_COLOR[SHAPES[s]]) for s in shape_ids])
        color_ids = np.where(tie, prior, color_ids)
    size_ids = np.array([list(SIZES).index(s) for s in sizes])[rng.integers(0, len(sizes), n)]
    style_ids = np.array([STYLES.index(s) for s in styles])[rng.integers(0, len(styles), n)]
    pos_ids = np.array([list(POSITIONS).index(p) for p in positions])[rng.integers(0, len(positions), n)]
    bg_ids = rng.integers(0, len(backgrounds), n)
    tied = np.zeros(n, dtype=bool)
    if rho_bg:
        tied = rng.uniform(size=n) < rho_bg
        bg_ids = np.where(tied, labels % len(backgrounds), bg_ids)

    radius = np.array(list(SIZES.values()))[size_ids] * scale
    off = np.array(list(POSITIONS.values()))[pos_ids] * scale
    jit = _RENDER["jitter_px"] * scale
    cx = (w - 1) / 2 + off[:, 0] + rng.uniform(-jit, jit, n)
    cy = (h - 1) / 2 + off[:, 1] + rng.uniform(-jit, jit, n)
    rot = np.deg2rad(_RENDER["rotation_deg"]) if rotation else 0.0
    angle = rng.uniform(-rot, rot, n)
    names = [SHAPES[s] for s in shape_ids]
    sil = render_masks(names, cx, cy, radius, angle, (h, w))
    ext = np.array([_EXTENT[s] for s in names]) * radius
    taken = [(cx, cy, ext)]
    if twin:
        # the copy must fit inside the image; retry with fresh candidates a few times
        tx, ty, ok = _free_centres(rng, taken, ext, h, w)
        for _ in range(4):
            if ok.all():
                break
            tx2, ty2, ok2 = _free_centres(rng, taken, ext, h, w)
            tx, ty, ok = np.where(ok, tx, tx2), np.where(ok, ty, ty2), ok | ok2
        if not ok.all():
            rows = np.flatnonzero(~ok)
            tx[rows], ty[rows], ok[rows] = _grid_centres(rng, taken, ext, h, w, rows)
        if not ok.all():
            raise InputError(
                "`twin=True` found no room for a second copy in some images: use smaller `sizes` "
                "(e.g. ('small',)) or a larger `size`"
            )
        angle2 = rng.uniform(-rot, rot, n)
        sil = sil | render_masks(names, tx, ty, radius, angle2, (h, w))
        taken.append((tx, ty, ext))
    drawn = _style(sil, style_ids, radius, rng)

    img = _backgrounds(bg_ids, backgrounds, h, w, rng)
    part = None
    if parts:
        _u, v = _local(cx, cy, radius, angle, h, w)
        region = v > _PART_V
        if twin:
            _u2, v2 = _local(tx, ty, radius, angle2, h, w)
            region |= v2 > _PART_V
        part = drawn & region
        _paint(img, drawn, np.broadcast_to(np.asarray(_BODY_GREY, np.float32), (n, 3)).copy())
        _paint(img, part, _colours(labels % len(COLORS), rng))
    else:
        _paint(img, drawn, _colours(color_ids, rng))

    dmask = np.zeros((n, h, w), dtype=bool)
    r_dot = np.full(n, _RENDER["distractor_radius"] * scale)
    for _ in range(n_distractors):
        dx, dy, ok = _free_centres(rng, taken, r_dot, h, w)
        m = render_masks(["circle"] * n, dx, dy, r_dot, np.zeros(n), (h, w)) & ok[:, None, None]
        _paint(img, m, _colours(rng.integers(0, len(COLORS), n), rng))
        dmask |= m
        taken.append((np.where(ok, dx, -1e6), np.where(ok, dy, -1e6), r_dot))

    if blur_p > 0:
        sel = np.flatnonzero(rng.uniform(size=n) < blur_p)
        if len(sel):
            p = np.pad(img[sel], ((0, 0), (0, 0), (1, 1), (1, 1)), mode="edge")
            img[sel] = sum(p[:, :, i : i + h, j : j + w] for i in range(3) for j in range(3)) / 9.0

    attrs = [
        {
            "shape": SHAPES[s],
            "color": col_all[c],
            "size": list(SIZES)[z],
            "style": STYLES[t],
            "bg": backgrounds[b],
            "pos": list(POSITIONS)[p],
        }
        for s, c, z, t, b, p in zip(shape_ids, color_ids, size_ids, style_ids, bg_ids, pos_ids, strict=True)
    ]
    tmpl = rng.integers(0, len(CAPTION_TEMPLATES), n)
    captions = [CAPTION_TEMPLATES[t].format(**a) for t, a in zip(tmpl, attrs, strict=True)]
    return ShapesData(
        images=torch.from_numpy(np.clip(img, 0.0, 1.0)),
        labels=torch.as_tensor(labels, dtype=torch.long),
        classes=classes,
        masks=torch.from_numpy(drawn),
        silhouettes=torch.from_numpy(sil),
        part_masks=None if part is None else torch.from_numpy(part),
        distractor_masks=torch.from_numpy(dmask),
        boxes=torch.from_numpy(_tight_boxes(drawn)),
        backgrounds=torch.as_tensor(bg_ids, dtype=torch.long),
        background_names=backgrounds,
        spurious=torch.as_tensor(tied),
        shape_ids=torch.as_tensor(shape_ids, dtype=torch.long),
        colors=torch.as_tensor(color_ids, dtype=torch.long),
        sizes=torch.as_tensor(size_ids, dtype=torch.long),
        styles=torch.as_tensor(style_ids, dtype=torch.long),
        positions=torch.as_tensor(pos_ids, dtype=torch.long),
        captions=captions,
        attrs=attrs,
        seed=seed,
    )


@dataclasses.dataclass
class SceneData(WorldData):
    """Multi-object scenes for detection: per image ``k_i`` non-overlapping objects.

    ``boxes[i]`` ``[k_i, 4]`` float xyxy (tight, pixel edges), ``labels[i]`` ``[k_i]`` long into
    ``classes``, ``masks[i]`` ``[k_i, H, W]`` bool (object j's painted pixels; masks of one image
    are disjoint and at least 1 px apart), ``distractor_masks`` ``[N, H, W]`` bool.
    """

    images: torch.Tensor
    boxes: list[torch.Tensor]
    labels: list[torch.Tensor]
    masks: list[torch.Tensor]
    classes: tuple[str, ...]
    distractor_masks: torch.Tensor
    backgrounds: torch.Tensor
    background_names: tuple[str, ...]
    seed: int = 0
    _items: ClassVar[tuple[str, ...]] = ("images", "boxes", "labels", "masks", "distractor_masks", "backgrounds")


def make_scenes(
    n: int,
    *,
    classes: Sequence[str] = ("square", "ring", "cross"),
    size: int = 48,
    max_objects: int = 3,
    min_objects: int = 1,
    sizes: Sequence[str] = ("small",),
    colors: Sequence[str] = tuple(COLORS),
    backgrounds: Sequence[str] = ("noise",),
    n_distractors: int = 3,
    seed: int = 0,
) -> SceneData:
    """Render ``n`` detection scenes with 1..``max_objects`` solid, non-overlapping objects each.

    Object count is uniform in ``[min_objects, max_objects]``; class, colour and size are uniform
    per object (radius from :data:`SIZES` in pixels, *not* scaled with ``size``: a bigger canvas
    holds more objects of the same size); rotation ±15°. Objects sit
    fully inside the image with their bounding discs at least 1.5 px apart. If an object finds no
    room after 48 candidate centres it is dropped, so ``len(labels[i])`` may fall below the drawn
    count in crowded settings (never below 1 for the first object with default sizes).
    """
    n = check_n(n)
    classes = _check_classes(classes)
    size = check_int(size, "size", low=8, high=1024)
    max_objects = check_int(max_objects, "max_objects", low=1, high=16)
    min_objects = check_int(min_objects, "min_objects", low=1, high=max_objects)
    sizes = check_names(sizes, tuple(SIZES), "sizes")
    colors = check_names(colors, tuple(COLORS), "colors")
    backgrounds = check_names(backgrounds, ALL_BACKGROUNDS, "backgrounds")
    n_distractors = check_int(n_distractors, "n_distractors", low=0, high=16)
    seed = check_seed(seed)
    rng = np.random.default_rng(seed)
    h = w = size

    count = rng.integers(min_objects, max_objects + 1, n)
    bg_ids = rng.integers(0, len(backgrounds), n)
    img = _backgrounds(bg_ids, backgrounds, h, w, rng)
    col_idx = np.array([list(COLORS).index(c) for c in colors])
    taken: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    per_obj = []
    for j in range(max_objects):
        lab = rng.integers(0, len(classes), n)
        names = [classes[k] for k in lab]
        radius = np.array([SIZES[sizes[i]] for i in rng.integers(0, len(sizes), n)])
        ext = np.array([_EXTENT[s] for s in names]) * radius
        cx, cy, ok = _free_centres(rng, taken, ext, h, w)
        ok &= j < count
        angle = rng.uniform(-1, 1, n) * np.deg2rad(_RENDER["rotation_deg"])
        m = render_masks(names, cx, cy, radius, angle, (h, w)) & ok[:, None, None]
        _paint(img, m, _colours(col_idx[rng.integers(0, len(col_idx), n)], rng))
        taken.append((np.where(ok, cx, -1e6), np.where(ok, cy, -1e6), ext))
        per_obj.append((lab, m, ok))
    dmask = np.zeros((n, h, w), dtype=bool)
    r_dot = np.full(n, _RENDER["distractor_radius"])
    for _ in range(n_distractors):
        dx, dy, ok = _free_centres(rng, taken, r_dot, h, w)
        m = render_masks(["circle"] * n, dx, dy, r_dot, np.zeros(n), (h, w)) & ok[:, None, None]
        _paint(img, m, _colours(rng.integers(0, len(COLORS), n), rng))
        dmask |= m
        taken.append((np.where(ok, dx, -1e6), np.where(ok, dy, -1e6), r_dot))

    boxes, labels, masks = [], [], []
    for i in range(n):
        keep = [j for j in range(max_objects) if per_obj[j][2][i]]
        mk = np.stack([per_obj[j][1][i] for j in keep]) if keep else np.zeros((0, h, w), bool)
        masks.append(torch.from_numpy(mk))
        labels.append(torch.as_tensor([per_obj[j][0][i] for j in keep], dtype=torch.long))
        boxes.append(torch.from_numpy(_tight_boxes(mk)) if keep else torch.zeros(0, 4))
    return SceneData(
        images=torch.from_numpy(np.clip(img, 0.0, 1.0)),
        boxes=boxes,
        labels=labels,
        masks=masks,
        classes=classes,
        distractor_masks=torch.from_numpy(dmask),
        backgrounds=torch.as_tensor(bg_ids, dtype=torch.long),
        background_names=backgrounds,
        seed=seed,
    )
