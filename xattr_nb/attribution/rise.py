"""RISE and D-RISE: saliency from random masks, for classifiers and detectors (captum has neither).

RISE (Petsiuk, Das & Saenko, BMVC 2018) asks the model about many randomly masked copies of the
image and averages the masks, each weighted by the score it obtained:

    S(pixel) = 1 / (N * p) * sum_i f(x ⊙ M_i + b ⊙ (1 - M_i)) * M_i(pixel)

so ``S(pixel)`` estimates ``E[f | pixel kept]`` (up to the constant ``1/p``). The masks are smooth:
a coarse ``grid x grid`` binary pattern (each cell kept with probability ``p``) upsampled
bilinearly to ``(grid + 1)`` cells and cropped at a random shift, so mask edges fall anywhere.

D-RISE (Petsiuk et al., CVPR 2021) is the same estimator with a *detection* score as ``f``: the
similarity between the detector's proposals on the masked image and the target detection (box
IoU times class probability, :func:`xattr_nb.models.detection.detection_score`).

``rise`` is registered as the method ``"rise"`` for pixel inputs, so
``attribute(model, x, target, method="rise", n_masks=500)`` works and measures its cost
(``n_masks`` forwards per image). Written by hand: no maintained library in our dependencies
implements RISE.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from xattr_nb.attribution.methods import register_method
from xattr_nb.checks import InputError, check_choice, check_float, check_int, check_tensor
from xattr_nb.kernels import masked_outputs, masked_scores

__all__ = ["drise", "rise", "rise_masks"]


def _grid(grid: Any) -> tuple[int, int]:
    if isinstance(grid, (tuple, list)):
        if len(grid) != 2:
            raise InputError(f"`grid` must be an int or a pair (rows, cols); got {grid!r}")
        return check_int(grid[0], "grid[0]", low=1), check_int(grid[1], "grid[1]", low=1)
    g = check_int(grid, "grid", low=1)
    return g, g


def rise_masks(
    n_masks: int,
    size: tuple[int, int],
    *,
    grid: int | tuple[int, int] = 4,
    p: float = 0.5,
    seed: int = 0,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """RISE's random smooth masks ``[n_masks, H, W]`` with values in [0, 1] (1 = keep).

    Each mask: a ``grid`` binary pattern with cells kept with probability ``p``, bilinearly
    upsampled to ``(rows + 1) * ceil(H / rows)`` by ``(cols + 1) * ceil(W / cols)`` pixels, then
    cropped to ``H x W`` at a random offset within one cell. Deterministic for a given ``seed``.
    """
    n = check_int(n_masks, "n_masks", low=1)
    if not isinstance(size, (tuple, list)) or len(size) != 2:
        raise InputError(f"`size` must be (H, W); got {size!r}")
    h, w = check_int(size[0], "size[0]", low=1), check_int(size[1], "size[1]", low=1)
    rows, cols = _grid(grid)
    if rows > h or cols > w:
        raise InputError(f"`grid` {(rows, cols)} is finer than the image {(h, w)}")
    p = check_float(p, "p", low=0.0, high=1.0)
    if p == 0.0:
        raise InputError("`p` must be > 0: with p = 0 every mask hides the whole image")
    seed = check_int(seed, "seed", low=0, high=2**63 - 1)
    gen = torch.Generator().manual_seed(seed)
    ch, cw = math.ceil(h / rows), math.ceil(w / cols)
    coarse = (torch.rand(n, 1, rows, cols, generator=gen) < p).float()
    up = F.interpolate(coarse, size=((rows + 1) * ch, (cols + 1) * cw), mode="bilinear", align_corners=False)[:, 0]
    dy = torch.randint(0, ch, (n,), generator=gen)
    dx = torch.randint(0, cw, (n,), generator=gen)
    masks = torch.stack([up[i, dy[i] : dy[i] + h, dx[i] : dx[i] + w] for i in range(n)])
    return masks.to(device) if device is not None else masks


def _saliency(scores: torch.Tensor, masks: torch.Tensor, p: float) -> torch.Tensor:
    if not bool(torch.isfinite(scores).all()):
        raise InputError("the model returned NaN or infinite scores on the masked images")
    return torch.einsum("n,nhw->hw", scores.to(masks), masks) / (masks.shape[0] * p)


def rise(
    model: nn.Module,
    inputs: torch.Tensor,
    target: torch.Tensor,
    *,
    n_masks: int = 500,
    grid: int | tuple[int, int] = 4,
    p: float = 0.5,
    baseline: float | torch.Tensor = 0.0,
    seed: int = 0,
    batch_size: int | None = None,
    output: str = "prob",
) -> tuple[torch.Tensor, dict[str, Any]]:
    """RISE saliency of ``target`` for each image of ``inputs`` ``[B, C, H, W]``: ``([B, H, W], meta)``.

    ``n_masks`` masks from :func:`rise_masks` (the same masks for every image of the batch);
    removed pixels take ``baseline`` (a scalar, ``[C, H, W]`` or ``[B, C, H, W]``). The score is the
    ``output`` (``"prob"``, the paper's choice, ``"logit"`` or ``"logprob"``) of ``target``.
    Cost: ``n_masks`` forwards per image. Call it through
    ``attribute(model, x, target, method="rise", ...)`` to get an :class:`Attribution` with its cost.
    """
    x = check_tensor(inputs, "inputs", ndim=4, dtype="float", layout="[B, C, H, W]")
    check_choice(output, ("prob", "logit", "logprob"), "output")
    b = x.shape[0]
    if isinstance(target, int) and not isinstance(target, bool):
        target = torch.full((b,), target, dtype=torch.long)
    target = check_tensor(target, "target", shape=(b,), dtype="int", layout="[B]")
    p = check_float(p, "p", low=0.0, high=1.0)
    masks = rise_masks(n_masks, tuple(x.shape[-2:]), grid=grid, p=p, seed=seed, device=x.device)
    if isinstance(baseline, torch.Tensor):
        base = check_tensor(baseline, "baseline", ndim=(3, 4), dtype="float", layout="[C, H, W] or [B, C, H, W]")
        if base.ndim == 4 and base.shape[0] != b:
            raise InputError(f"`baseline` holds {base.shape[0]} images but `inputs` has {b}")
        bases = list(base) if base.ndim == 4 else [base] * b
    else:
        bases = [check_float(baseline, "baseline")] * b
    maps = []
    for i in range(b):
        s = masked_scores(
            model, x[i], masks, int(target[i]), baseline=bases[i], output=output, batch_size=batch_size
        ).double()
        maps.append(_saliency(s, masks.double(), p))
    meta = {"n_masks": int(n_masks), "grid": _grid(grid), "p": p, "seed": seed, "output": output}
    return torch.stack(maps).float(), meta


def drise(
    score_fn: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    *,
    n_masks: int = 500,
    grid: int | tuple[int, int] = 6,
    p: float = 0.5,
    baseline: float | torch.Tensor = 0.0,
    seed: int = 0,
    batch_size: int | None = None,
) -> torch.Tensor:
    """D-RISE saliency ``[H, W]`` of one image ``x`` ``[C, H, W]`` for a detection score.

    ``score_fn(images [M, C, H, W]) -> [M]`` is the similarity of the detector's output on each
    masked image to the target detection, e.g.
    :func:`xattr_nb.models.detection.detection_score` ``(detector, box, cls)`` (best proposal's
    IoU with the target box times its class probability). Masks and normalisation as in
    :func:`rise` (``1 / (N p)``). Cost: ``n_masks`` forwards.
    """
    if not callable(score_fn):
        raise InputError(f"`score_fn` must be callable images [M, C, H, W] -> [M]; got {type(score_fn).__name__}")
    x = check_tensor(x, "x", ndim=(3, 4), dtype="float", layout="[C, H, W]")
    if x.ndim == 4:
        if x.shape[0] != 1:
            raise InputError(f"`x` must be one image [C, H, W]; got a batch of {x.shape[0]}")
        x = x[0]
    p = check_float(p, "p", low=0.0, high=1.0)
    masks = rise_masks(n_masks, tuple(x.shape[-2:]), grid=grid, p=p, seed=seed, device=x.device)
    s = masked_outputs(score_fn, x, masks, baseline=baseline, batch_size=batch_size)
    if s.ndim != 1:
        raise InputError(f"`score_fn` must return one score per image [M]; got shape {tuple(s.shape)}")
    return _saliency(s.double(), masks.double(), p).float()


register_method(
    "rise",
    rise,
    kinds=("pixels",),
    description="RISE: random smooth masks weighted by the masked score (Petsiuk et al., 2018; our impl)",
)
