"""scikit-learn's bundled 8×8 digits (offline), as image tensors, with planted label noise.

The ground truth here is the clean label: :func:`make_digits` corrupts the *training* labels at a
known rate and reports, for every example, the clean label, the noisy label and whether it was
flipped, so a noise-robust method (ELR, GCE, ...) can be scored on which examples it memorises or
detects. Two noise models, as in the label-noise literature:

- **symmetric**: a chosen example gets a label drawn uniformly from the *other* classes
  (``include_true_class=True`` draws from all classes, the official ELR/CIFAR code's convention,
  which flips only about ``rate·(K-1)/K`` of the examples);
- **asymmetric**: a chosen example of class ``a`` gets ``mapping[a]`` (class-dependent confusions,
  :data:`ASYMMETRIC_MAP` by default, in the spirit of CIFAR-10's truck→automobile, cat↔dog).

Exactly ``round(rate · n)`` examples are chosen (per source class for asymmetric noise), so the
realised rate matches the requested one up to rounding.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np
import torch

from xattr_nb.checks import InputError, check_choice, check_float, check_int, check_tensor
from xattr_nb.worlds.base import WorldData, check_seed

__all__ = [
    "ASYMMETRIC_MAP",
    "N_CLASSES",
    "DigitsData",
    "asymmetric_noise",
    "load_digit_images",
    "make_digits",
    "symmetric_noise",
]

N_CLASSES = 10
#: Class-dependent label noise: look-alike digits (7→1, 2→7, 5↔6, 3→8).
ASYMMETRIC_MAP: dict[int, int] = {7: 1, 2: 7, 5: 6, 6: 5, 3: 8}


@dataclasses.dataclass
class DigitsData(WorldData):
    """Digits with clean and (possibly) noisy labels.

    ``images`` ``[N, 1, s, s]`` float in [0, 1]; ``labels`` ``[N]`` long, the labels to train on
    (noisy); ``clean_labels`` ``[N]`` the true digits; ``flipped`` ``[N]`` bool, exactly
    ``labels != clean_labels``; ``index`` ``[N]`` long, the row in ``sklearn.datasets.load_digits``.
    ``features`` gives the flattened ``[N, s*s]`` view for MLPs.
    """

    images: torch.Tensor
    labels: torch.Tensor
    clean_labels: torch.Tensor
    flipped: torch.Tensor
    index: torch.Tensor
    _items: ClassVar[tuple[str, ...]] = ("images", "labels", "clean_labels", "flipped", "index")

    @property
    def features(self) -> torch.Tensor:
        return self.images.flatten(1)


def load_digit_images(size: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    """All 1,797 sklearn digits as ``([N, 1, size, size] float in [0, 1], [N] long)``.

    Raw pixel values are 0..16 and are divided by 16; ``size > 8`` upsamples bilinearly
    (``align_corners=False``) and clamps to [0, 1].
    """
    from sklearn.datasets import load_digits

    size = check_int(size, "size", low=8, high=512)
    d = load_digits()
    x = torch.as_tensor(d.images, dtype=torch.float32).unsqueeze(1) / 16.0
    if size != 8:
        x = torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear", align_corners=False).clamp(0, 1)
    return x, torch.as_tensor(d.target, dtype=torch.long)


def _labels(y: Any) -> torch.Tensor:
    t = check_tensor(y, "labels", ndim=1, dtype="int", layout="[N]").long()
    return t


def symmetric_noise(
    labels: Any,
    rate: float,
    *,
    n_classes: int = N_CLASSES,
    include_true_class: bool = False,
    seed: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Corrupt ``round(rate·N)`` randomly chosen labels; return ``(noisy [N] long, flipped [N] bool)``.

    A chosen label is replaced by a uniform draw from the other ``n_classes - 1`` classes, or from
    all ``n_classes`` when ``include_true_class`` (then some chosen labels stay unchanged and are
    not counted in ``flipped``).
    """
    y = _labels(labels)
    rate = check_float(rate, "rate", low=0.0, high=1.0)
    n_classes = check_int(n_classes, "n_classes", low=2)
    if int(y.min()) < 0 or int(y.max()) >= n_classes:
        raise InputError(f"`labels` must lie in [0, {n_classes}); got [{int(y.min())}, {int(y.max())}]")
    rng = np.random.default_rng(check_seed(seed))
    n = y.shape[0]
    chosen = rng.permutation(n)[: round(rate * n)]
    noisy = y.clone()
    yc = y[chosen].numpy()
    if include_true_class:
        new = rng.integers(0, n_classes, len(chosen))
    else:  # shift by 1..K-1: uniform over the other classes
        new = (yc + rng.integers(1, n_classes, len(chosen))) % n_classes
    noisy[torch.as_tensor(chosen, dtype=torch.long)] = torch.as_tensor(new, dtype=torch.long)
    return noisy, noisy != y


def asymmetric_noise(
    labels: Any,
    rate: float,
    mapping: Mapping[int, int] | None = None,
    *,
    seed: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """For each source class ``a`` in ``mapping``, relabel ``round(rate·n_a)`` of its examples
    as ``mapping[a]``; return ``(noisy, flipped)``. Classes not in ``mapping`` are untouched."""
    y = _labels(labels)
    rate = check_float(rate, "rate", low=0.0, high=1.0)
    mapping = dict(ASYMMETRIC_MAP if mapping is None else mapping)
    if not mapping:
        raise InputError("`mapping` is empty: give at least one source → target class pair")
    for a, b in mapping.items():
        if (
            isinstance(a, bool)
            or isinstance(b, bool)
            or not isinstance(a, (int, np.integer))
            or not isinstance(b, (int, np.integer))
        ):
            raise InputError(f"`mapping` must map int classes to int classes; got {a!r} → {b!r}")
        if a == b:
            raise InputError(f"`mapping` maps class {a} to itself; a flip must change the class")
    rng = np.random.default_rng(check_seed(seed))
    noisy = y.clone()
    for a in sorted(mapping):
        idx = torch.nonzero(y == a).flatten().numpy()
        chosen = rng.permutation(idx)[: round(rate * len(idx))]
        noisy[torch.as_tensor(chosen, dtype=torch.long)] = int(mapping[a])
    return noisy, noisy != y


def make_digits(
    *,
    noise: str = "none",
    rate: float = 0.0,
    test_size: float = 1 / 3,
    size: int = 8,
    mapping: Mapping[int, int] | None = None,
    include_true_class: bool = False,
    seed: int = 0,
) -> tuple[DigitsData, DigitsData]:
    """Stratified seeded train/test split of sklearn digits; label noise on the train part only.

    ``noise`` is ``"none"``, ``"symmetric"`` or ``"asymmetric"`` (see the module docstring);
    ``rate`` in [0, 1]. The test part always has clean labels (``flipped`` all False). The split
    uses ``sklearn.model_selection.train_test_split(stratify=labels, random_state=seed)``.
    """
    from sklearn.model_selection import train_test_split

    noise = check_choice(noise, ("none", "symmetric", "asymmetric"), "noise")
    rate = check_float(rate, "rate", low=0.0, high=1.0)
    test_size = check_float(test_size, "test_size", low=0.0, high=1.0)
    if not 0.0 < test_size < 1.0:
        raise InputError(f"`test_size` must lie strictly between 0 and 1; got {test_size}")
    if noise == "none" and rate != 0.0:
        raise InputError(f"`rate` is {rate} but `noise` is 'none': choose 'symmetric' or 'asymmetric'")
    seed = check_seed(seed)
    x, y = load_digit_images(size)
    idx = np.arange(len(y))
    tr, te = train_test_split(idx, test_size=test_size, stratify=y.numpy(), random_state=seed)
    tr, te = torch.as_tensor(np.sort(tr)), torch.as_tensor(np.sort(te))
    y_tr = y[tr]
    if noise == "symmetric":
        noisy, flipped = symmetric_noise(y_tr, rate, include_true_class=include_true_class, seed=seed)
    elif noise == "asymmetric":
        noisy, flipped = asymmetric_noise(y_tr, rate, mapping, seed=seed)
    else:
        noisy, flipped = y_tr.clone(), torch.zeros_like(y_tr, dtype=torch.bool)
    train = DigitsData(images=x[tr], labels=noisy, clean_labels=y_tr, flipped=flipped, index=tr)
    test = DigitsData(
        images=x[te], labels=y[te].clone(), clean_labels=y[te], flipped=torch.zeros(len(te), dtype=torch.bool), index=te
    )
    return train, test
