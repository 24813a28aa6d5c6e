"""AI-generated images with known artifacts: paired real and fake images, patch by patch.

The world of the panoptic-patch paper (PPL, notebook 17). Every image is ``size × size`` RGB in
[0, 1], split into a grid of ``patch × patch`` patches (16 patches at the defaults 32 / 8).

- **real**: a smooth random field per channel (a sum of ``n_waves`` random low-frequency
  sinusoids plus blurred noise, rescaled to [0.15, 0.85]) plus i.i.d. "sensor" noise
  (``sensor_noise``, σ = 0.03). The sensor noise hides the weak artifact pixel by pixel: it is
  found only by aggregating a whole patch.
- **fake** (``variant="train"``, the seen generator): its real counterpart plus a **weak
  artifact in every patch**, a checkerboard ``±weak_amp`` (:func:`weak_pattern`, the
  "upsampling" pattern), plus a **strong artifact in ``n_strong`` random patches**, a
  high-frequency grid ``±strong_amp`` (:func:`strong_pattern`). ``strong_idx`` says which.
- ``variant="unseen"`` (an unseen generator): the weak checkerboard only, same phase, its
  amplitude drawn per image in ``unseen_amp`` (default [0.02, 0.04]); no strong patch
  (``strong_idx`` is ``-1``). The pattern is never sign-flipped: a flip would turn a linear
  detector's response negative and test something else.
- ``variant="masked"`` (robustness): a seen-generator fake whose strong patches and a fraction
  ``mask_frac`` (25 %) of the other patches are replaced by their real counterparts;
  ``replaced`` marks them.

Ground truth per image: ``real`` and ``fake`` are pixel-paired (the counterpart of every fake
patch is known, which the per-patch total direct effect needs), ``strong_idx`` ``[N, n_strong]``
(row-major patch index), ``weak_amp`` ``[N]`` and ``replaced`` ``[N, P]`` bool (patches of
``fake`` that equal ``real``). ``fake - real`` is exactly the artifact. Seeded and deterministic.
"""

from __future__ import annotations

import dataclasses
import math
from typing import ClassVar

import numpy as np
import torch

from xattr_nb.checks import InputError, check_choice, check_float, check_int
from xattr_nb.worlds.base import WorldData, check_n, check_seed

__all__ = [
    "VARIANTS",
    "AIGIData",
    "make_aigi_pairs",
    "patch_grid",
    "strong_pattern",
    "weak_pattern",
]

VARIANTS = ("train", "unseen", "masked")


@dataclasses.dataclass
class AIGIData(WorldData):
    """Paired real/fake images: ``real``, ``fake`` ``[N, 3, H, W]``; ``strong_idx`` ``[N, k]``
    long (``-1``: none); ``weak_amp`` ``[N]``; ``replaced`` ``[N, P]`` bool; ``patch`` the patch
    side and ``variant`` the generator (shared by all examples)."""

    real: torch.Tensor
    fake: torch.Tensor
    strong_idx: torch.Tensor
    weak_amp: torch.Tensor
    replaced: torch.Tensor
    patch: int = 8
    variant: str = "train"

    _items: ClassVar[tuple[str, ...]] = ("real", "fake", "strong_idx", "weak_amp", "replaced")

    @property
    def n_patches(self) -> int:
        return (self.real.shape[-1] // self.patch) ** 2


def patch_grid(size: int, patch: int) -> torch.Tensor:
    """Patch index ``[size, size]`` long of every pixel (row-major over the ``size/patch`` grid)."""
    size, patch = check_int(size, "size", low=1), check_int(patch, "patch", low=1)
    if size % patch:
        raise InputError(f"`patch` must divide `size`; got size={size}, patch={patch}")
    g = size // patch
    r = torch.arange(size) // patch
    return r[:, None] * g + r[None, :]


def weak_pattern(size: int) -> torch.Tensor:
    """The weak artifact's shape ``[size, size]``: a ±1 checkerboard (period 2), same on every channel."""
    i = torch.arange(check_int(size, "size", low=1))
    return 1.0 - 2.0 * ((i[:, None] + i[None, :]) % 2).float()


def strong_pattern(size: int) -> torch.Tensor:
    """The strong artifact's shape ``[size, size]``: a ±1 high-frequency grid (lines every 4 pixels,
    zero mean over each 4×4 cell) so it differs from the checkerboard."""
    i = torch.arange(check_int(size, "size", low=1))
    on = ((i[:, None] % 4) == 0) | ((i[None, :] % 4) == 0)
    g = torch.where(on, torch.tensor(1.0), torch.tensor(-7.0 / 9.0))
    return g / g.abs().max()


def _smooth_fields(rng: np.random.Generator, n: int, size: int, n_waves: int) -> np.ndarray:
    t = np.linspace(0, 1, size)
    freqs = rng.uniform(0.3, 2.5, size=(n, 3, n_waves, 2))
    phase = rng.uniform(0, 2 * math.pi, size=(n, 3, n_waves))
    amps = rng.uniform(0.5, 1.0, size=(n, 3, n_waves))
    # sin(a·y + b·x + φ) = sin(a·y + φ)·cos(b·x) + cos(a·y + φ)·sin(b·x): separable, so no [N, 3, W, H, W] array
    ay = 2 * math.pi * freqs[..., 0, None] * t + phase[..., None]  # [N, 3, W, H]
    bx = 2 * math.pi * freqs[..., 1, None] * t  # [N, 3, W, W]
    field = np.einsum("ncwi,ncwj->ncij", amps[..., None] * np.sin(ay), np.cos(bx)) + np.einsum(
        "ncwi,ncwj->ncij", amps[..., None] * np.cos(ay), np.sin(bx)
    )
    # blurred noise: a coarse 4x4 noise grid, bilinearly upsampled (low frequency only)
    coarse = torch.from_numpy(rng.normal(size=(n, 3, 4, 4)).astype(np.float32))
    blur = torch.nn.functional.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=True)
    field = field + 0.5 * blur.numpy()
    lo = field.min(axis=(2, 3), keepdims=True)
    hi = field.max(axis=(2, 3), keepdims=True)
    return 0.15 + 0.7 * (field - lo) / np.maximum(hi - lo, 1e-6)


def make_aigi_pairs(
    n: int,
    *,
    size: int = 32,
    patch: int = 8,
    weak_amp: float = 0.03,
    strong_amp: float = 0.15,
    n_strong: int = 1,
    variant: str = "train",
    unseen_amp: tuple[float, float] = (0.02, 0.04),
    mask_frac: float = 0.25,
    sensor_noise: float = 0.03,
    n_waves: int = 6,
    seed: int = 0,
) -> AIGIData:
    """``n`` real images and their fakes from generator ``variant`` (see the module docstring)."""
    n = check_n(n)
    seed = check_seed(seed)
    check_choice(variant, VARIANTS, "variant")
    grid = patch_grid(size, patch)
    n_p = (size // patch) ** 2
    weak_amp = check_float(weak_amp, "weak_amp", low=0.0)
    strong_amp = check_float(strong_amp, "strong_amp", low=0.0)
    n_strong = check_int(n_strong, "n_strong", low=0, high=n_p)
    mask_frac = check_float(mask_frac, "mask_frac", low=0.0, high=1.0)
    sensor_noise = check_float(sensor_noise, "sensor_noise", low=0.0)
    n_waves = check_int(n_waves, "n_waves", low=1)
    if (
        not isinstance(unseen_amp, (tuple, list))
        or len(unseen_amp) != 2
        or not 0 <= float(unseen_amp[0]) <= float(unseen_amp[1])
    ):
        raise InputError(f"`unseen_amp` must be a pair (low, high) with 0 <= low <= high; got {unseen_amp!r}")

    rng = np.random.default_rng(seed)
    smooth = _smooth_fields(rng, n, size, n_waves)
    real = torch.from_numpy((smooth + sensor_noise * rng.normal(size=smooth.shape)).astype(np.float32))
    weak = weak_pattern(size)
    strong = strong_pattern(size)
    if variant == "unseen":
        amps = torch.from_numpy(rng.uniform(float(unseen_amp[0]), float(unseen_amp[1]), size=n).astype(np.float32))
        k = 0
    else:
        amps = torch.full((n,), weak_amp)
        k = n_strong
    strong_idx = torch.from_numpy(np.stack([rng.permutation(n_p)[:k] for _ in range(n)]).astype(np.int64))
    artifact = amps[:, None, None, None] * weak.expand(n, 3, size, size).clone()
    strong_mask = torch.zeros(n, n_p, dtype=torch.bool)
    if k:
        strong_mask.scatter_(1, strong_idx, True)
        pix = strong_mask[:, grid]  # [N, H, W]
        artifact = artifact + strong_amp * strong[None, None] * pix[:, None].float()
    replaced = torch.zeros(n, n_p, dtype=torch.bool)
    if variant == "masked":
        n_more = round(mask_frac * (n_p - k))
        for b in range(n):
            others = np.flatnonzero(~strong_mask[b].numpy())
            replaced[b, rng.choice(others, size=n_more, replace=False)] = True
        replaced |= strong_mask
        artifact = artifact * (~replaced[:, grid])[:, None].float()
    fake = real + artifact
    if not k:
        strong_idx = torch.full((n, max(n_strong, 1)), -1, dtype=torch.long)
    return AIGIData(real, fake, strong_idx, amps, replaced, patch=patch, variant=variant)
