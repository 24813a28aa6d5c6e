"""DiFull / GridPG grids: ``scale × scale`` mosaics of images from distinct classes.

A grid puts ``scale²`` images of **distinct** classes side by side in random class order. Cell
``k`` (row-major: row ``k // scale``, column ``k % scale``) holds ``labels[:, k]``. The ground
truth for grid attribution is geometric: an explanation of the class in cell ``k`` should put its
mass inside :func:`cell_mask` ``(scale, cell, k)``; for DiFull, whose head ``k`` only sees cell
``k``, any mass outside it is provably unfaithful.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import numpy as np
import torch

from xattr_nb.checks import InputError, check_int, check_tensor
from xattr_nb.worlds.base import WorldData, check_n, check_seed

__all__ = ["GridData", "cell_box", "cell_mask", "make_grids"]


@dataclasses.dataclass
class GridData(WorldData):
    """Grids with their per-cell ground truth.

    ``images`` ``[G, C, scale*cell, scale*cell]``; ``labels`` ``[G, scale²]`` long (the class in
    each cell, all distinct per grid); ``source_idx`` ``[G, scale²]`` long, the index into the
    source images that fills each cell; ``cell_masks`` ``[scale², sH, sW]`` bool, the pixels of
    each cell (the same for every grid).
    """

    images: torch.Tensor
    labels: torch.Tensor
    source_idx: torch.Tensor
    cell: int
    scale: int
    cell_masks: torch.Tensor
    _items: ClassVar[tuple[str, ...]] = ("images", "labels", "source_idx")


def cell_box(scale: int, cell: int, k: int) -> tuple[int, int, int, int]:
    """Pixel-edge ``xyxy`` box of cell ``k`` (row-major) in a ``scale × scale`` grid of ``cell`` px."""
    scale = check_int(scale, "scale", low=1)
    cell = check_int(cell, "cell", low=1)
    k = check_int(k, "k", low=0, high=scale * scale - 1)
    r, c = divmod(k, scale)
    return c * cell, r * cell, (c + 1) * cell, (r + 1) * cell


def cell_mask(scale: int, cell: int, k: int) -> torch.Tensor:
    """``[scale*cell, scale*cell]`` bool mask of the pixels of cell ``k`` (row-major)."""
    x1, y1, x2, y2 = cell_box(scale, cell, k)
    m = torch.zeros(scale * cell, scale * cell, dtype=torch.bool)
    m[y1:y2, x1:x2] = True
    return m


def make_grids(
    images: Any,
    labels: Any,
    *,
    scale: int = 2,
    n_grids: int = 64,
    seed: int = 0,
) -> GridData:
    """Build ``n_grids`` grids from square ``images [N, C, h, h]`` with class ``labels [N]``.

    For each grid: draw ``scale²`` distinct classes in random order (among the classes present),
    then one random image of each class. Images can repeat across grids, never within one. Filter
    ``images`` beforehand (e.g. to those a model classifies with confidence ≥ 0.95, as DiFull does).
    """
    x = check_tensor(images, "images", ndim=4, dtype="float", layout="[N, C, H, W]")
    if x.shape[2] != x.shape[3]:
        raise InputError(f"`images` must be square [N, C, h, h]; got {tuple(x.shape)}")
    y = check_tensor(labels, "labels", ndim=1, dtype="int", layout="[N]").long()
    if y.shape[0] != x.shape[0]:
        raise InputError(f"`labels` has {y.shape[0]} entries but `images` has {x.shape[0]}")
    scale = check_int(scale, "scale", low=1, high=16)
    n_grids = check_n(n_grids, "n_grids")
    seed = check_seed(seed)
    classes = torch.unique(y).tolist()
    k = scale * scale
    if len(classes) < k:
        raise InputError(
            f"`labels` has {len(classes)} distinct classes but a scale-{scale} grid needs {k} distinct classes"
        )
    rng = np.random.default_rng(seed)
    by_class = {c: torch.nonzero(y == c).flatten().numpy() for c in classes}
    cls = np.stack([rng.choice(classes, size=k, replace=False) for _ in range(n_grids)])
    src = [[int(rng.choice(by_class[int(c)])) for c in row] for row in cls]
    src_t = torch.as_tensor(src, dtype=torch.long).reshape(n_grids, k)
    cell = int(x.shape[2])
    # [G, s, s, C, h, h] -> [G, C, s*h, s*h]
    tiles = x[src_t.flatten()].reshape(n_grids, scale, scale, x.shape[1], cell, cell)
    grid = tiles.permute(0, 3, 1, 4, 2, 5).reshape(n_grids, x.shape[1], scale * cell, scale * cell)
    return GridData(
        images=grid.contiguous(),
        labels=torch.as_tensor(cls, dtype=torch.long).reshape(n_grids, k),
        source_idx=src_t,
        cell=cell,
        scale=scale,
        cell_masks=torch.stack([cell_mask(scale, cell, i) for i in range(k)]),
    )
