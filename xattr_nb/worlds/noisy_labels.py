"""Label noise with a known answer: which training labels were corrupted, and what they were.

The ground truth is the clean label. :func:`symmetric_noise` and :func:`asymmetric_noise` corrupt
labels at a known rate and return a :class:`NoiseReport` saying, for every example, the noisy
label, whether it was *drawn* for corruption (``chosen``) and whether its label actually changed
(``flipped``); :func:`make_noisy_digits` applies them to the training part of sklearn's bundled
digits (offline, 1,797 × 64) for the label-noise papers (ELR, GCE, ...).

Two noise models, following the ELR code (``data_loader/cifar10.py``):

- **symmetric**: ``round(rate · N)`` examples, a random permutation's head, get a label drawn
  uniformly from **all** ``n_classes`` classes (``include_true_class=True``, the official
  default), so about ``rate · (K−1)/K`` of the labels change (36 % at "40 %" with 10 classes);
  ``include_true_class=False`` draws from the other ``K−1`` classes (every chosen label changes);
- **asymmetric**: within each source class ``a`` of ``mapping``, ``round(rate · n_a)`` examples
  become ``mapping[a]`` (class-dependent confusions, :data:`~xattr_nb.worlds.digits.ASYMMETRIC_MAP`
  by default: look-alike digits 7→1, 2→7, 5↔6, 3→8).

``rate`` lies in [0, 1): at 1 no clean example is left to learn from. (The older
:mod:`xattr_nb.worlds.digits` has image-shaped digits with the same two noise models but no
``chosen`` mask; this module is the one that reports everything and standardises features.)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np
import torch

from xattr_nb.checks import InputError, check_choice, check_float, check_int, check_tensor
from xattr_nb.worlds.base import WorldData, check_seed
from xattr_nb.worlds.digits import ASYMMETRIC_MAP

__all__ = [
    "NoiseReport",
    "NoisyLabelData",
    "asymmetric_noise",
    "make_noisy_digits",
    "noisy_split",
    "symmetric_noise",
]


@dataclasses.dataclass
class NoiseReport:
    """What a noise injector did: ``noisy`` labels ``[N]`` long, ``chosen`` ``[N]`` bool (drawn
    for corruption), ``flipped`` ``[N]`` bool (exactly ``noisy != clean``; a subset of ``chosen``)."""

    noisy: torch.Tensor
    chosen: torch.Tensor
    flipped: torch.Tensor

    @property
    def flip_rate(self) -> float:
        """The realised share of changed labels."""
        return float(self.flipped.float().mean()) if len(self.flipped) else 0.0


def _check_labels(labels: Any, n_classes: int) -> torch.Tensor:
    y = check_tensor(labels, "labels", ndim=1, dtype="int", layout="[N]").long().cpu()
    if y.numel() == 0:
        raise InputError("`labels` is empty")
    if int(y.min()) < 0 or int(y.max()) >= n_classes:
        raise InputError(f"`labels` must lie in [0, {n_classes}); got [{int(y.min())}, {int(y.max())}]")
    return y


def _check_rate(rate: Any) -> float:
    r = check_float(rate, "rate", low=0.0)
    if r >= 1.0:
        raise InputError(f"`rate` must lie in [0, 1) (at 1 no clean label is left); got {r}")
    return r


def symmetric_noise(
    labels: Any, rate: float, *, n_classes: int = 10, include_true_class: bool = True, seed: int = 0
) -> NoiseReport:
    """Draw ``round(rate · N)`` examples (a seeded permutation) and give each a uniform label.

    The draw is over all ``n_classes`` (``include_true_class=True``, the official ELR code) or
    over the other ``n_classes − 1`` (then every chosen label changes).
    """
    n_classes = check_int(n_classes, "n_classes", low=2)
    y = _check_labels(labels, n_classes)
    rate = _check_rate(rate)
    if not isinstance(include_true_class, bool):
        raise InputError(f"`include_true_class` must be a bool; got {type(include_true_class).__name__}")
    rng = np.random.default_rng(check_seed(seed))
    n = y.shape[0]
    idx = torch.as_tensor(rng.permutation(n)[: round(rate * n)], dtype=torch.long)
    if include_true_class:
        new = rng.integers(0, n_classes, len(idx))
    else:  # shift by 1..K-1: uniform over the other classes
        new = (y[idx].numpy() + rng.integers(1, n_classes, len(idx))) % n_classes
    noisy = y.clone()
    noisy[idx] = torch.as_tensor(new, dtype=torch.long)
    chosen = torch.zeros(n, dtype=torch.bool)
    chosen[idx] = True
    return NoiseReport(noisy, chosen, noisy != y)


def asymmetric_noise(
    labels: Any, rate: float, mapping: Mapping[int, int] | None = None, *, n_classes: int = 10, seed: int = 0
) -> NoiseReport:
    """Within each source class ``a`` of ``mapping``, relabel ``round(rate · n_a)`` examples as
    ``mapping[a]``; other classes are untouched. Every chosen label changes."""
    n_classes = check_int(n_classes, "n_classes", low=2)
    y = _check_labels(labels, n_classes)
    rate = _check_rate(rate)
    mapping = dict(ASYMMETRIC_MAP if mapping is None else mapping)
    if not mapping:
        raise InputError("`mapping` is empty: give at least one source → target class pair")
    for a, b in mapping.items():
        ok = all(
            isinstance(v, (int, np.integer)) and not isinstance(v, bool) and 0 <= int(v) < n_classes for v in (a, b)
        )
        if not ok:
            raise InputError(f"`mapping` must map classes in [0, {n_classes}) to classes; got {a!r} → {b!r}")
        if a == b:
            raise InputError(f"`mapping` maps class {a} to itself; a flip must change the class")
    rng = np.random.default_rng(check_seed(seed))
    noisy = y.clone()
    chosen = torch.zeros(len(y), dtype=torch.bool)
    for a in sorted(mapping):
        members = torch.nonzero(y == int(a)).flatten().numpy()
        pick = torch.as_tensor(rng.permutation(members)[: round(rate * len(members))], dtype=torch.long)
        noisy[pick] = int(mapping[a])
        chosen[pick] = True
    return NoiseReport(noisy, chosen, noisy != y)


@dataclasses.dataclass
class NoisyLabelData(WorldData):
    """Inputs with clean and noisy labels (digits here, CIFAR-style images at full scale).

    ``x`` ``[N, ...]`` float inputs (standardised digit features ``[N, 64]``, or images
    ``[N, 3, H, W]``); ``labels`` ``[N]`` the labels to train on (noisy on a training part);
    ``clean_labels`` ``[N]`` the true classes; ``chosen`` ``[N]`` drawn for corruption;
    ``flipped`` ``[N]`` exactly ``labels != clean_labels``; ``index`` ``[N]`` the row in the
    source dataset. ``n_classes`` is shared by all examples.
    """

    x: torch.Tensor
    labels: torch.Tensor
    clean_labels: torch.Tensor
    chosen: torch.Tensor
    flipped: torch.Tensor
    index: torch.Tensor
    n_classes: int = 10
    _items: ClassVar[tuple[str, ...]] = ("x", "labels", "clean_labels", "chosen", "flipped", "index")


def _inject(y: torch.Tensor, noise: str, rate: float, n_classes: int, include_true_class: bool,
            mapping: Mapping[int, int] | None, seed: int) -> NoiseReport:  # fmt: skip
    if noise == "symmetric":
        return symmetric_noise(y, rate, n_classes=n_classes, include_true_class=include_true_class, seed=seed)
    if noise == "asymmetric":
        return asymmetric_noise(y, rate, mapping, n_classes=n_classes, seed=seed)
    none = torch.zeros(len(y), dtype=torch.bool)
    return NoiseReport(y.clone(), none, none.clone())


def noisy_split(
    x: Any,
    y: Any,
    rate: float,
    *,
    noise: str = "symmetric",
    n_classes: int | None = None,
    test: tuple[Any, Any] | None = None,
    n_train: int | None = None,
    include_true_class: bool = True,
    mapping: Mapping[int, int] | None = None,
    seed: int = 0,
) -> tuple[NoisyLabelData, NoisyLabelData]:
    """Noise on a training set, a clean test set: ``(train, test)`` as :class:`NoisyLabelData`.

    ``x`` ``[N, ...]`` float and ``y`` ``[N]`` int are the training data, and ``test`` the
    ``(x, y)`` of a separate test set (CIFAR's official split); without ``test``, a stratified
    seeded split keeps ``n_train`` examples for training and the rest for testing. ``noise``,
    ``rate``, ``include_true_class`` and ``mapping`` as in :func:`symmetric_noise` /
    :func:`asymmetric_noise`; ``n_classes`` defaults to ``max(y) + 1``.
    """
    from sklearn.model_selection import train_test_split

    noise = check_choice(noise, ("none", "symmetric", "asymmetric"), "noise")
    rate = _check_rate(rate)
    if noise == "none" and rate != 0.0:
        raise InputError(f"`rate` is {rate} but `noise` is 'none': choose 'symmetric' or 'asymmetric'")
    seed = check_seed(seed)
    xs = check_tensor(x, "x", dtype="float", layout="[N, ...]")
    ys = check_tensor(torch.as_tensor(y), "y", shape=(xs.shape[0],), dtype="int", layout="[N]").long()
    k = int(ys.max()) + 1 if n_classes is None else check_int(n_classes, "n_classes", low=2)
    ys = _check_labels(ys, k)
    if test is None:
        if n_train is None:
            raise InputError("give `n_train` (a stratified split of x) or `test` (a separate test set)")
        n_train = check_int(n_train, "n_train", low=k, high=len(ys) - k)
        idx = np.arange(len(ys))
        tr, te = train_test_split(idx, train_size=n_train, stratify=ys.numpy(), random_state=seed)
        tr, te = torch.as_tensor(np.sort(tr)), torch.as_tensor(np.sort(te))
        x_tr, y_tr, x_te, y_te = xs[tr], ys[tr], xs[te], ys[te]
    else:
        if n_train is not None:
            raise InputError("`n_train` splits x; with a separate `test` set leave it None")
        if not isinstance(test, (tuple, list)) or len(test) != 2:
            raise InputError("`test` must be an (x, y) pair")
        x_te = check_tensor(test[0], "test[0]", dtype="float", layout="[M, ...]")
        if tuple(x_te.shape[1:]) != tuple(xs.shape[1:]):
            raise InputError(
                f"`test[0]` must have inputs shaped like x {tuple(xs.shape[1:])}; got {tuple(x_te.shape[1:])}"
            )
        y_te = _check_labels(check_tensor(torch.as_tensor(test[1]), "test[1]", shape=(x_te.shape[0],), dtype="int"), k)
        tr, te = torch.arange(len(ys)), torch.arange(len(y_te))
        x_tr, y_tr = xs, ys
    rep = _inject(y_tr, noise, rate, k, include_true_class, mapping, seed)
    none = torch.zeros(len(te), dtype=torch.bool)
    train = NoisyLabelData(x_tr, rep.noisy, y_tr.clone(), rep.chosen, rep.flipped, tr, k)
    test_d = NoisyLabelData(x_te, y_te.clone(), y_te.clone(), none, none.clone(), te, k)
    return train, test_d


def make_noisy_digits(
    rate: float = 0.4,
    *,
    noise: str = "symmetric",
    n_train: int = 1200,
    include_true_class: bool = True,
    mapping: Mapping[int, int] | None = None,
    standardize: bool = True,
    seed: int = 0,
) -> tuple[NoisyLabelData, NoisyLabelData]:
    """sklearn digits (1,797 × 64 pixel values 0..16) through :func:`noisy_split`: a stratified
    seeded split into ``n_train`` training and the rest (597) test examples, label noise on the
    training part only. Features are standardised with the *training* mean and std when
    ``standardize`` (constant pixels stay 0).
    """
    from sklearn.datasets import load_digits

    d = load_digits()
    if not isinstance(standardize, bool):
        raise InputError(f"`standardize` must be a bool; got {type(standardize).__name__}")
    x = torch.as_tensor(d.data, dtype=torch.float32)
    train, test = noisy_split(x, torch.as_tensor(d.target), rate, noise=noise, n_classes=10, n_train=n_train,
                              include_true_class=include_true_class, mapping=mapping, seed=seed)  # fmt: skip
    if standardize:
        mu, sd = train.x.mean(0), train.x.std(0)
        sd = torch.where(sd > 0, sd, torch.ones_like(sd))
        train.x, test.x = (train.x - mu) / sd, (test.x - mu) / sd
    return train, test
