"""Measures of learning under label noise: memorisation and noisy-label detection.

- :func:`memorization_stats`: on the training examples whose label was corrupted, the share the
  model predicts as their **true** class (``fit_clean``: early learning), as their **wrong**
  label (``memorized``), or as something else (``other``); the three add up to 1.
- :func:`detection_scores`: a flagging rule (``flags``, e.g. ELR's ``argmax t_i ≠ y_i``) against
  the truly corrupted examples: precision, recall, F1 (``sklearn.metrics``), the share flagged,
  and, when a continuous ``score`` is given (higher = more likely noisy), its AUROC and average
  precision (``roc_auc_score``, ``average_precision_score``).

Only examples whose label truly changed count as noisy (ELR's symmetric noise draws some labels
that keep their true class: those are clean).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from xattr_nb.checks import InputError, check_numeric, check_tensor

__all__ = ["detection_scores", "memorization_stats"]


def _ints(v: Any, name: str, n: int | None = None) -> np.ndarray:
    t = check_numeric(v, name, ndim=1, dtype="int", layout="[N]")
    if n is not None and t.shape[0] != n:
        raise InputError(f"`{name}` must have {n} entries like the first argument; got {t.shape[0]}")
    return t.detach().cpu().long().numpy()


def _bools(v: Any, name: str, n: int) -> np.ndarray:
    a = np.asarray(v.detach().cpu() if isinstance(v, torch.Tensor) else v)
    if a.ndim != 1 or a.shape[0] != n:
        raise InputError(f"`{name}` must be a 1-D mask of {n} entries; got shape {a.shape}")
    if a.dtype != bool:
        if not np.issubdtype(a.dtype, np.integer) or not np.isin(a, (0, 1)).all():
            raise InputError(f"`{name}` must be bool or 0/1 integers; got dtype {a.dtype}")
        a = a.astype(bool)
    return a


def memorization_stats(pred: Any, noisy_labels: Any, clean_labels: Any) -> dict[str, float]:
    """On the examples with ``noisy_labels != clean_labels``: the share predicted as the clean
    label (``fit_clean``), as the noisy label (``memorized``) or as another class (``other``);
    ``n_noisy`` their number. Also ``clean_acc``: accuracy against the clean labels on the others.
    With no noisy example the three shares are NaN.
    """
    p = _ints(pred, "pred")
    yn = _ints(noisy_labels, "noisy_labels", len(p))
    yc = _ints(clean_labels, "clean_labels", len(p))
    noisy = yn != yc
    k = int(noisy.sum())
    nan = float("nan")
    out = {
        "fit_clean": float((p[noisy] == yc[noisy]).mean()) if k else nan,
        "memorized": float((p[noisy] == yn[noisy]).mean()) if k else nan,
        "n_noisy": float(k),
        "clean_acc": float((p[~noisy] == yc[~noisy]).mean()) if k < len(p) else nan,
    }
    out["other"] = 1.0 - out["fit_clean"] - out["memorized"] if k else nan
    return out


def detection_scores(flags: Any, truly_noisy: Any, score: Any | None = None) -> dict[str, float]:
    """Precision, recall and F1 of ``flags`` (bool ``[N]``) against ``truly_noisy`` (bool ``[N]``),
    the share flagged and the base rate; with ``score`` (``[N]`` floats, higher = more likely
    noisy) also its ``auroc`` and ``average_precision``. Precision is 0 when nothing is flagged
    (sklearn's ``zero_division=0``); AUROC needs both kinds of example.
    """
    from sklearn.metrics import average_precision_score, f1_score, precision_score, recall_score, roc_auc_score

    f = np.asarray(flags.detach().cpu() if isinstance(flags, torch.Tensor) else flags)
    if f.ndim != 1 or f.size == 0:
        raise InputError(f"`flags` must be a non-empty 1-D mask; got shape {f.shape}")
    f = _bools(f, "flags", f.shape[0])
    y = _bools(truly_noisy, "truly_noisy", f.shape[0])
    if not y.any():
        raise InputError("`truly_noisy` has no noisy example: precision and recall are undefined")
    out = {
        "precision": float(precision_score(y, f, zero_division=0)),
        "recall": float(recall_score(y, f, zero_division=0)),
        "f1": float(f1_score(y, f, zero_division=0)),
        "flagged": float(f.mean()),
        "base_rate": float(y.mean()),
    }
    if score is not None:
        s = check_tensor(torch.as_tensor(np.asarray(score, dtype=float)) if not isinstance(score, torch.Tensor)
                         else score, "score", shape=(f.shape[0],), dtype="float", layout="[N]")  # fmt: skip
        s = s.detach().cpu().double().numpy()
        if not np.isfinite(s).all():
            raise InputError("`score` has non-finite values")
        if y.all():
            raise InputError("`truly_noisy` is all True: AUROC needs clean examples too")
        out["auroc"] = float(roc_auc_score(y, s))
        out["average_precision"] = float(average_precision_score(y, s))
    return out
