"""Zoo recipes of notebook 05 (COMET): the frozen detector and the two selector–predictor systems.

All three are trained on the twin-glyph ShapesWorld of :func:`xattr_nb.methods.comet.twin_shapes`
with the notebook's small-scale setting :data:`xattr_nb.methods.comet.SMALL_SCALE`, at ``seed``
(data, initialisation and data order), exactly as the notebook trains them with ``retrain=True``:

- ``comet_detector``: a TinyCNN trained on full images with hole augmentation, then frozen
  (:func:`~xattr_nb.methods.comet.train_detector`): the black box and COMET's detector ``f_D``;
- ``comet_baseline``: the selector–predictor baseline (``a = 0``) against that detector, trained
  with the spec's sparse objective ``ℓ_P + b·R + β·mean(m)`` (b = 100, τ = 0.10, β = 1) measured on
  the binarised mask the predictor sees (``area_on="selected"``), with an instance-normalised selector
  logit map started at offset -0.5 and a selector learning rate of 2e-3 (without the normalised map
  its mask collapsed to nothing and its predictor fell to chance, in every variant tried);
- ``comet_model``: COMET (``a = 4``, hinge gap 2), paired with the baseline (same objective but
  for the detector term, same seed, same initial selector, same predictor start).

The two systems are :class:`~xattr_nb.methods.comet.CometModel` checkpoints (selector, predictor
and a copy of the frozen detector); their manifest metrics hold the held-out figures and the mask
area after each epoch (``area_per_epoch``), the curve the notebook draws.
"""

from __future__ import annotations

import functools
from typing import Any

from torch import nn

from xattr_nb.models import zoo
from xattr_nb.models.fit import accuracy

__all__ = ["COMET_CONFIG", "DETECTOR_CONFIG", "train_comet_baseline", "train_comet_detector", "train_comet_model"]

#: The architectures the checkpoints are rebuilt from (4 classes, RGB; ``q = 0.5``, masks binarised at 0.5).
DETECTOR_CONFIG: dict[str, Any] = {"arch": "TinyCNN", "kwargs": {"n_classes": 4, "in_ch": 3, "widths": [16, 32, 64]}}
COMET_CONFIG: dict[str, Any] = {
    "arch": "CometModel",
    "kwargs": {"n_classes": 4, "in_ch": 3, "width": 16, "baseline": 0.5, "threshold": 0.5, "normalise": True},
}


def _setting() -> tuple[Any, dict[str, float]]:
    # The method module is imported when a recipe runs (it registers the CometModel architecture).
    from xattr_nb.methods import comet

    return comet, dict(comet.SMALL_SCALE)


@functools.lru_cache(maxsize=2)
def _detector(seed: int) -> tuple[nn.Module, Any, Any]:
    # Cached: training the three checkpoints in one process trains the (deterministic, frozen) detector once.
    comet, k = _setting()
    train, test = comet.twin_shapes(int(k["n_train"]), int(k["n_test"]), seed=seed)
    det = comet.train_detector(
        train.images,
        train.labels,
        classes=train.classes,
        epochs=int(k["det_epochs"]),
        baseline=k["q"],
        seed=seed,
        show_progress=False,
    )
    return det, train, test


def train_comet_detector(seed: int) -> tuple[nn.Module, dict[str, Any]]:
    """The frozen detector: held-out accuracy on full images and on glyph-shaped holes (the leak control)."""
    comet, k = _setting()
    det, _, test = _detector(seed)
    _, holes = comet.compose_views(test.images, test.masks.float(), k["q"])
    return det, {
        "test_accuracy": round(accuracy(det, test.images, test.labels), 4),
        "leak_control": round(accuracy(det, holes, test.labels), 4),
        "n_train": int(k["n_train"]),
    }


def _train_system(seed: int, a: float) -> tuple[nn.Module, dict[str, Any]]:
    comet, k = _setting()
    det, train, test = _detector(seed)
    model, hist = comet.train_comet(
        train.images,
        train.labels,
        det,
        a=a,
        gap=k["gap"],
        b=k["b"],
        tau=k["tau"],
        beta=k["beta"],
        baseline=k["q"],
        epochs=int(k["epochs"]),
        selector_lr=k["selector_lr"],
        selector_init_bias=k["init_bias"],
        normalise_logits=True,
        area_on="selected",
        seed=seed,
        predictor=comet.predictor_from_detector(det),
        show_progress=False,
    )
    ev = comet.evaluate(model, test.images, test.labels, test.masks)
    return model, {
        **{f"test_{name}": round(float(v.mean()), 4) for name, v in ev.items()},
        "area_per_epoch": [round(v, 4) for v in hist.terms["area"]],
        "selected_area_per_epoch": [round(v, 4) for v in hist.terms["selected_area"]],
        "a": a,
        "n_train": int(k["n_train"]),
    }


def train_comet_baseline(seed: int) -> tuple[nn.Module, dict[str, Any]]:
    """The selector–predictor baseline (``a = 0``), paired with COMET."""
    return _train_system(seed, 0.0)


def train_comet_model(seed: int) -> tuple[nn.Module, dict[str, Any]]:
    """COMET (``a = SMALL_SCALE["a"]``), paired with the baseline."""
    return _train_system(seed, _setting()[1]["a"])


zoo.register(
    "comet_detector",
    config=DETECTOR_CONFIG,
    train=train_comet_detector,
    description="COMET's frozen detector / black box: TinyCNN on twin-glyph ShapesWorld (32x32) with hole augmentation",
)
zoo.register(
    "comet_baseline",
    config=COMET_CONFIG,
    train=train_comet_baseline,
    description="selector-predictor baseline (a=0, b=100, tau=0.1, beta=1, normalised selector) on twin-glyph ShapesWorld, against comet_detector",
)
zoo.register(
    "comet_model",
    config=COMET_CONFIG,
    train=train_comet_model,
    description="COMET (a=4, gap=2, b=100, tau=0.1, beta=1, normalised selector) on twin-glyph ShapesWorld, against comet_detector",
)
