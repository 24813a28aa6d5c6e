"""Confidence calibration of predicted probabilities: ECE, reliability-diagram data, Brier score.

Named ``confidence`` and not ``calibration`` because "calibration" in this project already means
the claim ledger's margin rule (``xattr_nb.ledger.calibrate_bound``, ``xattr-nb calibrate``,
``notebooks/calibration/``); this module measures whether a model's probabilities match its
accuracy, which has nothing to do with that.

Two input forms, the same for every function:

- ``probs`` ``[N, C]`` (rows are probability vectors) and ``labels`` ``[N]`` class indices: the
  **top-label** form of Guo et al. (2017): the confidence is ``max_c p_c``, the outcome is whether
  ``argmax_c p_c`` is the label.
- ``probs`` ``[N]`` (the probability of the positive class) and ``labels`` ``[N]`` in {0, 1}: the
  binary form of ``sklearn.calibration.calibration_curve``: the confidence is ``p`` and the outcome
  is ``y = 1``.

Bins (``strategy``, named as in ``calibration_curve``): ``"uniform"``: ``n_bins`` equal-width bins
``(0, 1/n], (1/n, 2/n], …`` (a confidence of exactly 0 goes to the first bin), as in Guo et al.'s
code; ``"quantile"``: equal-mass bins, the sorted confidences cut into ``n_bins`` groups of
``⌊N/n⌋`` or ``⌈N/n⌉`` examples (the adaptive ECE of Nixon et al. 2019; equal confidences may fall
on either side of a cut). ECE is ``Σ_b (n_b / N) · |acc_b − conf_b|`` over the non-empty bins.

Written here: :func:`ece` and :func:`reliability_diagram` (scikit-learn has no ECE, and its
``calibration_curve`` is binary only and drops the bin counts that ECE weights by). :func:`brier_score`
is ``sklearn.metrics.brier_score_loss``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from xattr_nb.checks import InputError, check_choice, check_int

__all__ = ["brier_score", "ece", "reliability_diagram"]


def _numpy(v: Any, name: str) -> np.ndarray:
    if isinstance(v, torch.Tensor):
        v = v.detach().cpu().numpy()
    a = np.asarray(v)
    if a.dtype == object:
        raise InputError(f"`{name}` must be a numeric array or tensor; got a ragged or object array")
    return a


def _inputs(probs: Any, labels: Any) -> tuple[np.ndarray, np.ndarray]:
    """``probs`` as float64 ``[N]`` or ``[N, C]``, ``labels`` as int ``[N]``, checked."""
    p = _numpy(probs, "probs")
    if p.ndim not in (1, 2):
        raise InputError(f"`probs` must be [N] (positive-class probabilities) or [N, C]; got shape {p.shape}")
    if p.size == 0 or p.shape[0] == 0:
        raise InputError(f"`probs` is empty (shape {p.shape})")
    if not np.issubdtype(p.dtype, np.floating):
        raise InputError(f"`probs` must be floating-point probabilities; got dtype {p.dtype}")
    p = p.astype(np.float64)
    if not np.isfinite(p).all():
        raise InputError(f"`probs` contains {int((~np.isfinite(p)).sum())} NaN or infinite value(s)")
    if (p < 0).any() or (p > 1).any():
        raise InputError(
            f"`probs` must lie in [0, 1]; got values in [{p.min():.4g}, {p.max():.4g}] (pass softmax outputs, not logits)"
        )
    if p.ndim == 2:
        if p.shape[1] < 2:
            raise InputError(f"`probs` [N, C] needs at least 2 classes; got shape {p.shape}")
        dev = np.abs(p.sum(axis=1) - 1.0)
        if (dev > 1e-4).any():
            raise InputError(
                f"each row of `probs` must sum to 1; row {int(dev.argmax())} sums to {p[dev.argmax()].sum():.6g}"
            )
    y = _numpy(labels, "labels")
    if y.shape != (p.shape[0],):
        raise InputError(f"`labels` must have shape ({p.shape[0]},) like the first axis of `probs`; got {y.shape}")
    if y.dtype == bool:
        y = y.astype(np.int64)
    if not np.issubdtype(y.dtype, np.integer):
        if np.issubdtype(y.dtype, np.floating) and np.isfinite(y).all() and (y == np.round(y)).all():
            y = y.astype(np.int64)
        else:
            raise InputError(f"`labels` must be integer class indices; got dtype {y.dtype}")
    n_classes = 2 if p.ndim == 1 else p.shape[1]
    bad = (y < 0) | (y >= n_classes)
    if bad.any():
        want = "binary (0 or 1) with [N] probabilities" if p.ndim == 1 else f"in [0, {n_classes})"
        raise InputError(f"`labels` must be {want}; got values {np.unique(y[bad])[:5].tolist()}")
    return p, y.astype(np.int64)


def _confidence_outcome(p: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    if p.ndim == 1:
        return p, (y == 1).astype(np.float64)
    return p.max(axis=1), (p.argmax(axis=1) == y).astype(np.float64)


def _bin_index(conf: np.ndarray, n_bins: int, strategy: str) -> np.ndarray:
    if strategy == "uniform":
        # bin b is (edges[b], edges[b + 1]]: compare with the same linspace edges as Guo et al.'s code
        return np.searchsorted(np.linspace(0.0, 1.0, n_bins + 1)[1:-1], conf, side="left")
    order = np.argsort(conf, kind="stable")
    idx = np.empty(len(conf), dtype=np.int64)
    for b, chunk in enumerate(np.array_split(order, n_bins)):
        idx[chunk] = b
    return idx


def reliability_diagram(
    probs: Any, labels: Any, *, n_bins: int = 10, strategy: str = "uniform"
) -> dict[str, np.ndarray]:
    """Per-bin data for a reliability diagram, each an array ``[n_bins]``:

    ``lower``, ``upper`` (the bin's edges: fixed for ``"uniform"``, the smallest and largest confidence
    in the bin for ``"quantile"``), ``confidence`` (mean confidence), ``accuracy`` (mean outcome: top-label
    accuracy, or the frequency of ``y = 1`` in the binary form), ``count``, and ``gap``
    (``accuracy - confidence``: negative = over-confident). Empty bins have count 0 and NaN means.
    Written here (``calibration_curve`` returns no counts and is binary only).
    """
    n_bins = check_int(n_bins, "n_bins", low=1)
    check_choice(strategy, ("uniform", "quantile"), "strategy")
    p, y = _inputs(probs, labels)
    conf, hit = _confidence_outcome(p, y)
    if strategy == "quantile" and n_bins > len(conf):
        raise InputError(f"`n_bins` ({n_bins}) exceeds the {len(conf)} examples: equal-mass bins would be empty")
    idx = _bin_index(conf, n_bins, strategy)
    count = np.bincount(idx, minlength=n_bins).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_conf = np.bincount(idx, weights=conf, minlength=n_bins) / count
        acc = np.bincount(idx, weights=hit, minlength=n_bins) / count
    if strategy == "uniform":
        edges = np.linspace(0.0, 1.0, n_bins + 1)
        lower, upper = edges[:-1], edges[1:]
    else:
        lower = np.array([conf[idx == b].min() for b in range(n_bins)])
        upper = np.array([conf[idx == b].max() for b in range(n_bins)])
    return {
        "lower": lower,
        "upper": upper,
        "confidence": mean_conf,
        "accuracy": acc,
        "count": count,
        "gap": acc - mean_conf,
    }


def ece(probs: Any, labels: Any, *, n_bins: int = 10, strategy: str = "uniform") -> float:
    """Expected calibration error: ``Σ_b (n_b / N) · |accuracy_b − confidence_b|`` over non-empty bins.

    ``strategy="uniform"``: equal-width bins (Guo et al. 2017; ``n_bins=10`` as in the project's
    multimodal spec); ``"quantile"``: equal-mass bins (adaptive ECE). Top-label for ``[N, C]``
    probabilities, positive-class for ``[N]``. 0 for a perfectly calibrated model; it is biased
    upward on few examples per bin. Written here: scikit-learn has no ECE.
    """
    d = reliability_diagram(probs, labels, n_bins=n_bins, strategy=strategy)
    keep = d["count"] > 0
    return float((d["count"][keep] / d["count"].sum() * np.abs(d["gap"][keep])).sum())


def brier_score(probs: Any, labels: Any) -> float:
    """Brier score (``sklearn.metrics.brier_score_loss``).

    Binary form (``probs`` ``[N]``): ``mean((p - y)²)``, in [0, 1]. Multiclass form (``[N, C]``):
    Brier's original ``mean_i Σ_c (p_ic - 1[y_i = c])²``, in [0, 2] (``labels=range(C)``,
    ``scale_by_half=False``), also for C = 2, where it is twice the binary score of the positive column.
    """
    from sklearn.metrics import brier_score_loss

    p, y = _inputs(probs, labels)
    if p.ndim == 1:
        return float(brier_score_loss(y, p, pos_label=1))
    return float(brier_score_loss(y, p, labels=np.arange(p.shape[1]), scale_by_half=False))
